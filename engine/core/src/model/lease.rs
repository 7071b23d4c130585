//! Cluster-wide locks: a named lease one holder keeps by renewing it before it expires.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The longest lock name accepted, in characters.
pub const MAX_LOCK_NAME: usize = 128;
/// The longest holder accepted, in characters: room for a hostname, a process ID and a nonce.
pub const MAX_LOCK_HOLDER: usize = 256;
/// The shortest lease: shorter ones would expire while their own write commits.
pub const MIN_LEASE_MS: u64 = 1_000;
/// The longest lease: a holder that dies keeps the lock at most this long.
pub const MAX_LEASE_MS: u64 = 3_600_000;
/// How long an expired lease nobody took is kept before the next acquisition of any lock
/// forgets it, so that one-off lock names do not pile up in the state.
pub const FORGET_EXPIRED_AFTER_MS: u64 = 24 * 3_600_000;

/// A lock as the state holds it. Times are the leader's clock, as stamped on the entries that
/// took and last renewed the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Whoever took the lock, as the caller names itself: renewing and releasing need the
    /// same name.
    pub holder: String,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Lease {
    /// True while the lease holds at `now`; at `expires_at` it is already free.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Checks a lock request as a caller wrote it; `ttl_ms` is `None` for a release.
///
/// # Errors
/// A message that names the field at fault: `name`, `holder` or `ttl_ms`.
pub fn validate_lock_request(name: &str, holder: &str, ttl_ms: Option<u64>) -> Result<(), String> {
    if name.is_empty() {
        return Err("name: a lock name must not be empty".to_string());
    }
    let length = name.chars().count();
    if length > MAX_LOCK_NAME {
        return Err(format!(
            "name: a lock name has at most {MAX_LOCK_NAME} characters, this one has {length}"
        ));
    }
    if holder.is_empty() {
        return Err(format!(
            "holder: the holder of lock {name:?} must not be empty"
        ));
    }
    let length = holder.chars().count();
    if length > MAX_LOCK_HOLDER {
        return Err(format!(
            "holder: a lock holder has at most {MAX_LOCK_HOLDER} characters, this one has \
             {length}"
        ));
    }
    if let Some(ttl_ms) = ttl_ms {
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&ttl_ms) {
            return Err(format!(
                "ttl_ms: a lease lasts from {} to {}, not {}",
                crate::time::format_duration_ms(MIN_LEASE_MS),
                crate::time::format_duration_ms(MAX_LEASE_MS),
                crate::time::format_duration_ms(ttl_ms),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_from_its_expiry_on() {
        let lease = Lease {
            holder: "a".to_string(),
            acquired_at: Timestamp(0),
            expires_at: Timestamp(1000),
        };
        assert!(lease.is_live(Timestamp(999)));
        assert!(!lease.is_live(Timestamp(1000)));
    }

    #[test]
    fn lock_requests_name_the_field_at_fault() {
        assert_eq!(validate_lock_request("nightly", "a", Some(1000)), Ok(()));
        assert_eq!(validate_lock_request("nightly", "a", None), Ok(()));
        let long = "x".repeat(MAX_LOCK_NAME + 1);
        for (name, holder, ttl, field) in [
            ("", "a", Some(1000), "name:"),
            (long.as_str(), "a", Some(1000), "name:"),
            ("nightly", "", Some(1000), "holder:"),
            ("nightly", "a", Some(999), "ttl_ms:"),
            ("nightly", "a", Some(MAX_LEASE_MS + 1), "ttl_ms:"),
        ] {
            let error = validate_lock_request(name, holder, ttl).expect_err("refused");
            assert!(error.starts_with(field), "{error}");
        }
        assert_eq!(
            validate_lock_request("nightly", "a", Some(500)),
            Err("ttl_ms: a lease lasts from 1s to 1h, not 500ms".to_string())
        );
        // Characters, not bytes: a name of 128 accented letters is fine.
        assert_eq!(
            validate_lock_request(&"é".repeat(MAX_LOCK_NAME), "a", None),
            Ok(())
        );
    }
}
