//! Our own leader failure detector, in front of openraft's election timer.
//!
//! openraft 0.9 waits `lease + timeout` after the last heartbeat before a follower campaigns,
//! with the random part drawn once per process, plus a penalty of twice the maximum timeout
//! for a follower that once saw a longer log. Two survivors with close draws then split votes
//! again and again, and failover takes a second or more. This watch campaigns as soon as the
//! leader lease has run out on every follower, after a delay drawn afresh for every attempt.
//!
//! Only a node that has heard from a leader since it started campaigns this way: a manager that
//! just restarted leaves it to openraft's timer, so that its stale log and term do not disrupt
//! a healthy leader that has not reached it yet.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Leader, Replica};

/// How often the watch looks at the leader's silence.
const POLL: Duration = Duration::from_millis(10);

pub async fn watch(replica: Arc<Replica>) {
    let mut next_attempt: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(last_contact) = replica.leader_contact().last() else {
            continue;
        };
        if replica.leader() == Leader::Me || !replica.is_voter() {
            next_attempt = None;
            continue;
        }
        let now = Instant::now();
        // Every other follower refuses to vote until the lease has run out since its own last
        // heartbeat, which may be one heartbeat later than ours.
        let timings = replica.timings();
        let quiet_enough = timings.election_max + timings.heartbeat;
        let silence = now.saturating_duration_since(last_contact);
        if silence < quiet_enough {
            next_attempt = None;
            continue;
        }
        let due = *next_attempt.get_or_insert_with(|| now + random_delay(timings.election_min));
        if now < due {
            continue;
        }
        tracing::info!(
            silence_ms = silence.as_millis() as u64,
            "no word from the leader: calling an election"
        );
        if let Err(e) = replica.raft().trigger().elect().await {
            tracing::warn!("cannot call an election: {e}");
        }
        // Give the election a fair chance before the next try, again with a fresh draw.
        next_attempt = Some(now + timings.election_min + random_delay(timings.election_min));
    }
}

fn random_delay(spread: Duration) -> Duration {
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(0..millis))
}
