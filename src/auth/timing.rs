//! Refusals that take as long as a verification, so that response
//! times do not tell whether a token id is live (docs/reference/http-contract.md,
//! "Timing").
//!
//! A wrong secret for a live id costs a store read and a hash verify
//! (bcrypt: tens of milliseconds; HMAC-SHA256: microseconds, so the hold
//! is about a store read); an unknown, revoked or expired id only the
//! store read. Anyone holding a
//! leaked id could tell the two apart. Making the cheap refusals hash too
//! would hand a flood of made-up ids the CPU it must not get, so they wait
//! instead, on a timer: no thread, no CPU, until the typical verification
//! time (a moving average of the real ones) has passed since they started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::hashing::HashKind;

/// The longest a refusal is held, whatever the average says (a queue of
/// verifications under load can stretch it).
const MAX_HOLD: Duration = Duration::from_secs(1);

/// The typical time of a lookup that ran bcrypt, store read included.
#[derive(Debug, Default)]
pub(crate) struct VerifyTime {
    nanos: AtomicU64,
}

impl VerifyTime {
    /// Starts from one bcrypt hash at `cost` timed on the blocking pool (it
    /// costs what a verify does), so the first refusals are held too. With
    /// HMAC-SHA256 it starts from zero: a verify is microseconds, and the
    /// first real lookup sets the average.
    pub(crate) fn calibrated(kind: HashKind, cost: u32) -> Arc<Self> {
        let time = Arc::new(Self::default());
        if kind == HashKind::HmacSha256 {
            return time;
        }
        let calibrating = time.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            if bcrypt::hash("tokengate calibration", cost).is_ok() {
                calibrating.record(started.elapsed());
            }
        });
        time
    }

    /// One lookup that ran bcrypt took `took`: an average over about the
    /// last eight.
    pub(crate) fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        // A lost update between two racing writers is harmless.
        self.nanos.store(new, Ordering::Relaxed);
    }

    /// The current typical time.
    pub(crate) fn typical(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed)).min(MAX_HOLD)
    }

    /// Waits until the typical time has passed since `started`.
    pub(crate) async fn hold(&self, started: Instant) {
        tokio::time::sleep_until(started + self.typical()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_the_samples() {
        let time = VerifyTime::default();
        assert_eq!(time.typical(), Duration::ZERO);
        time.record(Duration::from_millis(80));
        assert_eq!(time.typical(), Duration::from_millis(80));
        for _ in 0..50 {
            time.record(Duration::from_millis(40));
        }
        let typical = time.typical().as_millis();
        assert!((39..=41).contains(&typical), "{typical}");
        time.record(Duration::from_secs(3600));
        assert_eq!(time.typical(), MAX_HOLD);
    }
}
