//! Join tokens: `SWMTKN-1-<CA digest>-<secret>`, one per role. The digest pins the cluster's
//! CA: a joining node checks the manager's certificate against it before sending anything, and
//! a token for another cluster is told apart from a wrong secret. See `ca` for how tokens are
//! made.

use essaim_api::ControlError;

const PREFIX: &str = "SWMTKN-1-";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

/// A token split into its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub digest: String,
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret must never reach a log.
        f.debug_struct("JoinToken")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
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

    const DIGEST: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd";

    #[test]
    fn well_formed_tokens_parse() {
        let token = format!("SWMTKN-1-{DIGEST}-0123456789abcdefghijklmno");
        let parsed = JoinToken::parse(&token).expect("valid");
        assert_eq!(parsed.digest, DIGEST);
    }

    #[test]
    fn truncated_or_foreign_tokens_are_refused_with_the_reason() {
        let token = format!("SWMTKN-1-{DIGEST}-0123456789abcdefghijklmno");
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
