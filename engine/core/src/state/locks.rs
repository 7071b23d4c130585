//! The lock rules: who may take, renew and release a lease, judged at the entry's time (the
//! leader's clock), never at a clock read while applying.

use crate::error::StateError;
use crate::event::Change;
use crate::model::{Lease, FORGET_EXPIRED_AFTER_MS};
use crate::time::Timestamp;

use super::ClusterState;

impl ClusterState {
    /// Every lease, by lock name; expired ones included until taken again or forgotten.
    pub fn locks(&self) -> impl Iterator<Item = (&str, &Lease)> {
        self.locks
            .iter()
            .map(|(name, lease)| (name.as_str(), lease))
    }

    pub fn lock(&self, name: &str) -> Option<&Lease> {
        self.locks.get(name)
    }

    pub(super) fn acquire_lock(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        now: Timestamp,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let expires_at = Timestamp(now.0.saturating_add(ttl_ms));
        let lease = match self.locks.get(name) {
            Some(lease) if lease.is_live(now) && lease.holder == holder => Lease {
                expires_at,
                ..lease.clone()
            },
            Some(lease) if lease.is_live(now) => return Err(held(name, lease)),
            _ => Lease {
                holder: holder.to_string(),
                acquired_at: now,
                expires_at,
            },
        };
        self.forget_expired(name, now, emit);
        emit(Change::Lock {
            name: name.to_string(),
            lease: lease.clone(),
        });
        self.locks.insert(name.to_string(), lease);
        Ok(())
    }

    pub(super) fn renew_lock(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        now: Timestamp,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let lease = self.locks.get_mut(name).ok_or_else(|| not_held(name))?;
        if lease.holder != holder {
            return Err(held(name, lease));
        }
        // An expired lease nobody else took is still its holder's: nothing ran under the
        // lock meanwhile that the holder could overlap with.
        lease.expires_at = Timestamp(now.0.saturating_add(ttl_ms));
        emit(Change::Lock {
            name: name.to_string(),
            lease: lease.clone(),
        });
        Ok(())
    }

    pub(super) fn release_lock(
        &mut self,
        name: &str,
        holder: &str,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let lease = self.locks.get(name).ok_or_else(|| not_held(name))?;
        if lease.holder != holder {
            return Err(held(name, lease));
        }
        self.locks.remove(name);
        emit(Change::LockRemoved {
            name: name.to_string(),
        });
        Ok(())
    }

    /// Forgets the leases, other than `keep`, that expired long ago, so that lock names used
    /// once do not pile up. Done when a lock is taken, which is when the state grows.
    fn forget_expired(&mut self, keep: &str, now: Timestamp, emit: &mut impl FnMut(Change)) {
        let stale: Vec<String> = self
            .locks
            .iter()
            .filter(|(name, lease)| {
                name.as_str() != keep
                    && now.millis_since(lease.expires_at) >= FORGET_EXPIRED_AFTER_MS
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.locks.remove(&name);
            emit(Change::LockRemoved { name });
        }
    }
}

fn held(name: &str, lease: &Lease) -> StateError {
    StateError::LockHeld {
        name: name.to_string(),
        holder: lease.holder.clone(),
        expires_at: lease.expires_at,
    }
}

fn not_held(name: &str) -> StateError {
    StateError::LockNotHeld {
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::event::Event;

    const TTL: u64 = 5_000;

    /// Applies one command at time `at` (the leader's clock) and returns its result and events.
    fn at(
        state: &mut ClusterState,
        at: u64,
        command: Command,
    ) -> (Result<u64, StateError>, Vec<Event>) {
        let mut events = Vec::new();
        let result = state
            .apply(at, &Request::one(Timestamp(at), command), &mut events)
            .single();
        (result, events)
    }

    fn acquire(holder: &str, ttl_ms: u64) -> Command {
        Command::AcquireLock {
            name: "nightly".to_string(),
            holder: holder.to_string(),
            ttl_ms,
        }
    }

    fn renew(holder: &str) -> Command {
        Command::RenewLock {
            name: "nightly".to_string(),
            holder: holder.to_string(),
            ttl_ms: TTL,
        }
    }

    fn release(holder: &str) -> Command {
        Command::ReleaseLock {
            name: "nightly".to_string(),
            holder: holder.to_string(),
        }
    }

    fn lease(holder: &str, acquired_at: u64, expires_at: u64) -> Lease {
        Lease {
            holder: holder.to_string(),
            acquired_at: Timestamp(acquired_at),
            expires_at: Timestamp(expires_at),
        }
    }

    /// A state where "a" took "nightly" at 1000 for [`TTL`].
    fn held_by_a() -> ClusterState {
        let mut state = ClusterState::default();
        let (result, events) = at(&mut state, 1000, acquire("a", TTL));
        assert_eq!(result, Ok(1000));
        assert_eq!(
            events,
            [Event {
                index: 1000,
                change: Change::Lock {
                    name: "nightly".to_string(),
                    lease: lease("a", 1000, 6000),
                },
            }]
        );
        state
    }

    #[test]
    fn a_free_lock_is_taken_until_the_entry_time_plus_the_ttl() {
        let state = held_by_a();
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 6000)));
        assert_eq!(state.locks().count(), 1);
    }

    #[test]
    fn a_live_lease_refuses_another_holder_and_names_its_own() {
        let mut state = held_by_a();
        let (result, events) = at(&mut state, 5999, acquire("b", TTL));
        assert_eq!(
            result,
            Err(StateError::LockHeld {
                name: "nightly".to_string(),
                holder: "a".to_string(),
                expires_at: Timestamp(6000),
            })
        );
        assert_eq!(
            result.expect_err("held").to_string(),
            "lock \"nightly\" is held by \"a\""
        );
        assert!(events.is_empty());
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 6000)));
    }

    #[test]
    fn an_expired_lease_goes_to_the_next_holder() {
        let mut state = held_by_a();
        // At its expiry time the lease is already free.
        let (result, _) = at(&mut state, 6000, acquire("b", TTL));
        assert_eq!(result, Ok(6000));
        assert_eq!(state.lock("nightly"), Some(&lease("b", 6000, 11_000)));
    }

    #[test]
    fn acquiring_again_extends_the_holders_own_lease() {
        let mut state = held_by_a();
        let (result, _) = at(&mut state, 3000, acquire("a", TTL));
        assert_eq!(result, Ok(3000));
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 8000)));
        // Once expired, taking it again is a new lease.
        let (result, _) = at(&mut state, 9000, acquire("a", TTL));
        assert_eq!(result, Ok(9000));
        assert_eq!(state.lock("nightly"), Some(&lease("a", 9000, 14_000)));
    }

    #[test]
    fn the_holder_renews_even_an_expired_lease_nobody_took() {
        let mut state = held_by_a();
        let (result, events) = at(&mut state, 4000, renew("a"));
        assert_eq!(result, Ok(4000));
        assert_eq!(events.len(), 1);
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 9000)));
        let (result, _) = at(&mut state, 20_000, renew("a"));
        assert_eq!(result, Ok(20_000));
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 25_000)));
    }

    #[test]
    fn only_the_holder_renews() {
        let mut state = held_by_a();
        let (result, events) = at(&mut state, 2000, renew("b"));
        assert!(
            matches!(&result, Err(StateError::LockHeld { holder, .. }) if holder == "a"),
            "{result:?}"
        );
        assert!(events.is_empty());
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 6000)));

        // "a" let its lease expire and "b" took the lock: too late for "a" to renew.
        at(&mut state, 7000, acquire("b", TTL))
            .0
            .expect("b takes it");
        let (result, _) = at(&mut state, 7500, renew("a"));
        assert!(
            matches!(&result, Err(StateError::LockHeld { holder, .. }) if holder == "b"),
            "{result:?}"
        );
        assert_eq!(state.lock("nightly"), Some(&lease("b", 7000, 12_000)));

        let (result, _) = at(
            &mut state,
            8000,
            Command::RenewLock {
                name: "weekly".to_string(),
                holder: "a".to_string(),
                ttl_ms: TTL,
            },
        );
        assert_eq!(
            result,
            Err(StateError::LockNotHeld {
                name: "weekly".to_string()
            })
        );
    }

    #[test]
    fn the_holder_releases_and_the_lock_is_free_at_once() {
        let mut state = held_by_a();
        let (result, events) = at(&mut state, 2000, release("a"));
        assert_eq!(result, Ok(2000));
        assert_eq!(
            events[0].change,
            Change::LockRemoved {
                name: "nightly".to_string()
            }
        );
        assert_eq!(state.lock("nightly"), None);
        let (result, _) = at(&mut state, 2001, acquire("b", TTL));
        assert_eq!(result, Ok(2001));
        at(&mut state, 2002, release("b")).0.expect("released by b");
        // Released twice: nothing to release.
        let (result, _) = at(&mut state, 2003, release("b"));
        assert!(matches!(result, Err(StateError::LockNotHeld { .. })));
    }

    #[test]
    fn releasing_a_lock_of_another_holder_is_refused_and_names_the_holder() {
        let mut state = held_by_a();
        // Even an expired lease is only its holder's to release.
        for time in [2000, 7000] {
            let (result, events) = at(&mut state, time, release("b"));
            assert_eq!(
                result.expect_err("not the holder").to_string(),
                "lock \"nightly\" is held by \"a\""
            );
            assert!(events.is_empty());
        }
        assert_eq!(state.lock("nightly"), Some(&lease("a", 1000, 6000)));
    }

    #[test]
    fn long_expired_leases_are_forgotten_when_a_lock_is_taken() {
        let mut state = held_by_a();
        let later = 6000 + FORGET_EXPIRED_AFTER_MS;
        at(
            &mut state,
            later - 1,
            Command::AcquireLock {
                name: "other".to_string(),
                holder: "b".to_string(),
                ttl_ms: FORGET_EXPIRED_AFTER_MS * 2,
            },
        )
        .0
        .expect("taken");
        assert!(state.lock("nightly").is_some(), "not expired long enough");

        // A refused acquisition changes nothing, forgetting included.
        let (result, _) = at(
            &mut state,
            later,
            Command::AcquireLock {
                name: "other".to_string(),
                holder: "c".to_string(),
                ttl_ms: TTL,
            },
        );
        assert!(result.is_err());
        assert!(state.lock("nightly").is_some());

        let (result, events) = at(
            &mut state,
            later,
            Command::AcquireLock {
                name: "third".to_string(),
                holder: "c".to_string(),
                ttl_ms: TTL,
            },
        );
        assert_eq!(result, Ok(later));
        let changes: Vec<Change> = events.into_iter().map(|e| e.change).collect();
        assert_eq!(
            changes,
            [
                Change::LockRemoved {
                    name: "nightly".to_string()
                },
                Change::Lock {
                    name: "third".to_string(),
                    lease: lease("c", later, later + TTL),
                },
            ]
        );
        assert_eq!(state.lock("nightly"), None);
        assert!(state.lock("other").is_some(), "a live lease stays");
    }

    #[test]
    fn leases_survive_a_snapshot() {
        let state = held_by_a();
        let bytes = serde_json::to_vec(&state).expect("serialize");
        let restored: ClusterState = serde_json::from_slice(&bytes).expect("deserialize");
        assert_eq!(restored, state);
        assert_eq!(restored.lock("nightly"), Some(&lease("a", 1000, 6000)));
    }
}
