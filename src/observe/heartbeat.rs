//! The agent loop's heartbeat: the loop beats, `/healthz` and systemd's
//! watchdog read how long ago.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Test hook: while the file this names exists, the agent loop stops at its
/// next beat (a stand-in for a loop that hangs). Tests set it; operators never need to.
pub const STALL_FILE_ENV: &str = "FERRY_TEST_STALL_FILE";

/// When the agent loop last went round, shared by the loop and its readers.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Milliseconds after `start` of the last beat.
    last_ms: Arc<AtomicU64>,
    start: Instant,
    /// How often the loop beats.
    pub every: Duration,
    /// Readers call the loop stalled after this long without a beat.
    pub stall_after: Duration,
    /// [`STALL_FILE_ENV`], read once at start.
    stall_file: Option<PathBuf>,
    /// systemd's WatchdogSec, when the service manager asked for pings.
    watchdog: bool,
}

impl Heartbeat {
    /// A heartbeat that counts as alive now. `watchdog` is systemd's
    /// WatchdogSec when set: the loop then beats at least twice within it.
    pub fn new(stall_after: Duration, watchdog: Option<Duration>) -> Heartbeat {
        let mut every = (stall_after / 4).min(Duration::from_secs(1));
        if let Some(w) = watchdog {
            every = every.min(w / 2);
        }
        Heartbeat {
            last_ms: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
            every: every.max(Duration::from_millis(10)),
            stall_after,
            stall_file: std::env::var_os(STALL_FILE_ENV).map(PathBuf::from),
            watchdog: watchdog.is_some(),
        }
    }

    /// The loop went round: record it, and ping systemd's watchdog.
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if self.watchdog {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    /// How long ago the loop last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    pub fn alive(&self) -> bool {
        self.age() <= self.stall_after
    }

    /// The test hook of [`STALL_FILE_ENV`]: holds the caller (the loop) while the file exists.
    pub async fn stall_if_asked(&self) {
        let Some(f) = &self.stall_file else { return };
        if f.exists() {
            tracing::warn!(file = %f.display(), "test hook: the agent loop stalls while this file exists");
            while f.exists() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_alive_after_a_beat_and_stalled_once_it_stops() {
        let hb = Heartbeat::new(Duration::from_millis(50), None);
        hb.beat();
        assert!(hb.alive());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!hb.alive(), "no beat for longer than stall_after");
        hb.beat();
        assert!(hb.alive());
    }

    #[test]
    fn the_loop_beats_within_half_the_watchdog_interval() {
        let hb = Heartbeat::new(Duration::from_secs(10), Some(Duration::from_millis(600)));
        assert_eq!(hb.every, Duration::from_millis(300));
        let hb = Heartbeat::new(Duration::from_secs(10), None);
        assert_eq!(hb.every, Duration::from_secs(1));
    }
}
