//! Join tokens: `SWMTKN-1-<cluster digest>-<secret>`, one per role. The digest names the
//! cluster, so a token for another cluster is told apart from a wrong secret.

use essaim_api::ControlError;
use sha2::{Digest, Sha256};

use crate::identity::{base36, new_secret};

const PREFIX: &str = "SWMTKN-1-";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

/// A token split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub digest: String,
    pub secret: String,
}

impl JoinToken {
    pub fn generate(digest: &str) -> String {
        format!("{PREFIX}{digest}-{}", new_secret(SECRET_LEN))
    }

    /// Reads a token, checking its shape only.
    ///
    /// # Errors
    /// A token that is truncated, mistyped or not an essaim token at all.
    pub fn parse(token: &str) -> Result<JoinToken, ControlError> {
        let malformed = |why: &str| {
            ControlError::InvalidArgument(format!(
                "malformed join token: {why}; copy the whole token printed by \
                 'essaim swarm join-token worker' (or manager) on a manager"
            ))
        };
        let rest = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| malformed("it must start with SWMTKN-1-"))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| malformed("it has no secret part"))?;
        let base36 = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        };
        if digest.len() != DIGEST_LEN || !base36(digest) {
            return Err(malformed("its cluster digest is not 50 base-36 characters"));
        }
        if secret.len() != SECRET_LEN || !base36(secret) {
            return Err(malformed("its secret is not 25 base-36 characters"));
        }
        Ok(JoinToken {
            digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// The digest that identifies a cluster in its tokens.
pub fn cluster_digest(cluster_id: &str) -> String {
    let hash = Sha256::digest(cluster_id.as_bytes());
    let mut high = [0u8; 16];
    let mut low = [0u8; 16];
    high.copy_from_slice(&hash[..16]);
    low.copy_from_slice(&hash[16..]);
    let text = format!(
        "{}{}",
        base36(u128::from_be_bytes(high), 25),
        base36(u128::from_be_bytes(low), 25)
    );
    text[..DIGEST_LEN].to_string()
}

/// Compares secrets in constant time, so timing does not leak how much of a guess was right.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back() {
        let digest = cluster_digest("abc");
        let token = JoinToken::generate(&digest);
        let parsed = JoinToken::parse(&token).expect("valid");
        assert_eq!(parsed.digest, digest);
    }

    #[test]
    fn truncated_or_foreign_tokens_are_refused_with_the_reason() {
        let token = JoinToken::generate(&cluster_digest("abc"));
        let truncated = &token[..token.len() - 3];
        let err = JoinToken::parse(truncated).expect_err("truncated");
        assert!(err.to_string().contains("secret"), "{err}");
        let err = JoinToken::parse("hello").expect_err("foreign");
        assert!(err.to_string().contains("SWMTKN-1-"), "{err}");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
