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
//!
//! A survivor whose log is behind stands back once the other has asked for its vote. Without
//! that, the two went on in lockstep for up to 22 s (the failover benchmark's logs, 2026-12-07):
//! the stale one campaigned at term T and was refused for its log; the other does not take a
//! term from a vote it refuses, so it campaigned at T as well and was refused, the stale one
//! having voted for itself in T; and again at T+1.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Leader, Replica};

/// How often the watch looks at the leader's silence.
const POLL: Duration = Duration::from_millis(10);

/// How much longer than the lease a follower waits before it campaigns.
const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// How many maximum election timeouts a survivor with a shorter log leaves to a better one.
const STAND_BACK: u32 = 4;

pub async fn watch(replica: Arc<Replica>) {
    let mut next_attempt: Option<Instant> = None;
    let mut last_campaign: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let contact = replica.leader_contact();
        let Some(last_contact) = contact.leader.last() else {
            continue;
        };
        if replica.leader() == Leader::Me || !replica.is_voter() {
            next_attempt = None;
            continue;
        }
        let now = Instant::now();
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        // Every other follower refuses to vote until the lease has run out since its own last
        // heartbeat. The leader's heartbeats reach every follower at about the same moment
        // (one tick sends them all); the margin covers the time to take one.
        let timings = replica.timings();
        let silence = now.saturating_duration_since(last_contact);
        if silence < timings.election_max + LEASE_MARGIN {
            next_attempt = None;
            last_campaign = None;
            continue;
        }
        let better_candidate = contact
            .better_candidate
            .last()
            .filter(|seen| *seen > last_contact);
        if since(better_candidate).is_some_and(|d| d < STAND_BACK * timings.election_max) {
            // Since the leader went quiet, a manager with a longer log campaigns: only it can
            // win, and a campaign of ours would take the term it needs (we vote for ourselves
            // in it, and refuse it).
            next_attempt = None;
            continue;
        }
        let mut due =
            *next_attempt.get_or_insert_with(|| now + random_delay(timings.election_min / 3));
        let worse_candidate = contact
            .worse_candidate
            .last()
            .is_some_and(|seen| seen > last_contact);
        if let (Some(campaigned), true) = (last_campaign, worse_candidate) {
            // A survivor with a shorter log campaigns too (it stands back once it has seen our
            // request), and our campaign may have lost only because it had voted for itself
            // in that term. Only we can win: try again once that campaign has had its answers.
            due = due.min(campaigned + timings.heartbeat);
        }
        if now < due {
            continue;
        }
        if since(contact.vote_granted.last()).is_some_and(|d| d < timings.election_min) {
            // We just voted for another survivor: its first heartbeat is on its way, and a
            // campaign now would raise the term over the new leader's head and depose it.
            next_attempt = Some(now + timings.election_min + random_delay(timings.election_min));
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
        last_campaign = Some(now);
    }
}

fn random_delay(spread: Duration) -> Duration {
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(0..millis))
}
