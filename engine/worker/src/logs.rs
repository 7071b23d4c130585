//! What a task printed: the last lines kept in memory, and new lines for whoever follows.

use parking_lot::Mutex;
use std::collections::VecDeque;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use crate::executor::LogStream;

/// Lines kept per task: enough for `service logs --tail`, bounded so a chatty task cannot eat
/// the node's memory.
pub const KEPT_LINES: usize = 1_000;

pub struct LogBuffer {
    inner: Mutex<Lines>,
}

struct Lines {
    kept: VecDeque<String>,
    /// `None` once the task has ended: followers then stop at the end of what was kept.
    live: Option<broadcast::Sender<String>>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer {
            inner: Mutex::new(Lines {
                kept: VecDeque::new(),
                live: Some(broadcast::channel(256).0),
            }),
        }
    }
}

impl LogBuffer {
    fn lines(&self) -> parking_lot::MutexGuard<'_, Lines> {
        self.inner.lock()
    }

    pub fn push(&self, line: String) {
        let mut lines = self.lines();
        if lines.kept.len() == KEPT_LINES {
            lines.kept.pop_front();
        }
        if let Some(live) = &lines.live {
            // Nobody following is fine.
            let _ = live.send(line.clone());
        }
        lines.kept.push_back(line);
    }

    /// The task ended: followers get what is left and stop.
    pub fn close(&self) {
        self.lines().live = None;
    }

    /// The last `tail` lines (all for 0), then, with `follow`, new ones until [`close`].
    ///
    /// [`close`]: LogBuffer::close
    pub fn stream(&self, tail: usize, follow: bool) -> LogStream {
        let lines = self.lines();
        let skip = if tail == 0 {
            0
        } else {
            lines.kept.len().saturating_sub(tail)
        };
        let past: Vec<String> = lines.kept.iter().skip(skip).cloned().collect();
        // Subscribed under the same lock as the copy, so no line is missed or doubled.
        let live = lines
            .live
            .as_ref()
            .filter(|_| follow)
            .map(|l| l.subscribe());
        drop(lines);
        let past = futures::stream::iter(past);
        match live {
            // A follower too slow to keep up loses lines rather than holding the task back.
            Some(live) => past
                .chain(BroadcastStream::new(live).filter_map(|l| async move { l.ok() }))
                .boxed(),
            None => past.boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_gives_the_last_lines_and_follow_stops_when_closed() {
        let buffer = LogBuffer::default();
        for i in 0..5 {
            buffer.push(format!("line {i}"));
        }
        let tail: Vec<String> = buffer.stream(2, false).collect().await;
        assert_eq!(tail, ["line 3", "line 4"]);

        let follower = buffer.stream(1, true);
        buffer.push("line 5".to_string());
        buffer.close();
        let followed: Vec<String> = follower.collect().await;
        assert_eq!(followed, ["line 4", "line 5"]);
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let buffer = LogBuffer::default();
        for i in 0..KEPT_LINES + 10 {
            buffer.push(format!("{i}"));
        }
        let lines = buffer.lines();
        assert_eq!(lines.kept.len(), KEPT_LINES);
        assert_eq!(lines.kept.front().map(String::as_str), Some("10"));
    }
}
