//! The manager's one clock. Every reading of time in the manager goes through it, so that its
//! timing logic (heartbeat windows, restart delays, lock leases, certificate ages) can run on
//! tokio's paused time in tests.

use std::time::{SystemTime, UNIX_EPOCH};

use essaim_core::liveness::Millis;
use essaim_core::Timestamp;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Monotonic time is counted from here.
    origin: Instant,
    /// Wall time: the system's, or for tests the wall time at `origin` plus tokio's elapsed
    /// time, so that it moves with paused time.
    wall: Wall,
}

#[derive(Clone, Copy, Debug)]
enum Wall {
    System,
    FollowsTokio { at_origin: Timestamp },
}

impl Clock {
    /// The system's wall clock, and tokio's monotonic one (the system's, unless paused).
    pub fn system() -> Clock {
        Clock {
            origin: Instant::now(),
            wall: Wall::System,
        }
    }

    /// A clock whose wall time starts at `at_origin` and moves only as tokio's time does: with
    /// `tokio::time::pause`, tests advance it at will.
    pub fn following_tokio(at_origin: Timestamp) -> Clock {
        Clock {
            origin: Instant::now(),
            wall: Wall::FollowsTokio { at_origin },
        }
    }

    /// Wall time, as it goes into proposals and the model.
    pub fn now(&self) -> Timestamp {
        match self.wall {
            Wall::System => {
                let millis = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
            }
            Wall::FollowsTokio { at_origin } => {
                Timestamp(at_origin.0.saturating_add(self.millis()))
            }
        }
    }

    /// Wall time in seconds, as certificates count it.
    pub fn unix_secs(&self) -> i64 {
        i64::try_from(self.now().0 / 1000).unwrap_or(i64::MAX)
    }

    /// Monotonic milliseconds since this clock was made: what liveness is measured in.
    pub fn millis(&self) -> Millis {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A pass slower than this is logged.
const SLOW_PASS: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `work`, and says so in the log when it took long enough to matter to Raft's timing.
/// (A measurement for the log, so the system's monotonic clock.)
pub fn timed<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = work();
    let elapsed = started.elapsed();
    if elapsed > SLOW_PASS {
        tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "slow {what}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_test_clock_moves_with_paused_time_only() {
        let clock = Clock::following_tokio(Timestamp(1_000_000));
        assert_eq!(clock.now(), Timestamp(1_000_000));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Timestamp(1_090_000));
        assert_eq!(clock.millis(), 90_000);
        assert_eq!(clock.unix_secs(), 1_090);
    }
}
