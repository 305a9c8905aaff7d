//! Last-accessed times, recorded in memory on every successful request and
//! written to the store in batches.
//!
//! Writing on every request would put a store write on the hot path; instead
//! each token's latest time waits in a map and a background task writes the
//! whole map in one round trip every `flush_interval`, or sooner once
//! `max_pending` ids wait. N requests on K tokens within an interval cost K
//! writes. The store never moves a time backwards, so batches may race.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::settings::{InvalidConfig, in_range, within};
use crate::store::{StoreError, TokenStore};
use crate::token::TokenId;

/// `[last_accessed]`: batching of last-accessed writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LastAccessedConfig {
    /// How often pending last-accessed times are written, in one round trip.
    #[serde(with = "crate::settings::duration")]
    pub flush_interval: Duration,
    /// Flush early once this many token ids wait; past twice this, new ids
    /// are dropped until a flush succeeds (memory stays bounded while the
    /// store is down).
    pub max_pending: usize,
}

impl Default for LastAccessedConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            max_pending: 10_000,
        }
    }
}

impl LastAccessedConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        within(
            "last_accessed.flush_interval",
            self.flush_interval,
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        )?;
        in_range("last_accessed.max_pending", self.max_pending, 1, 10_000_000)
    }
}

/// Handle to the pending map and its flusher task. Cheap to clone.
#[derive(Clone)]
pub struct LastAccessed {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LastAccessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastAccessed")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: Arc<dyn TokenStore>,
    // A std mutex: held for a map insert or a swap, never across an await.
    pending: Mutex<HashMap<TokenId, i64>>,
    max_pending: usize,
    wake: Notify,
    stop: Notify,
    flushes: AtomicU64,
    dropped: AtomicU64,
    /// Serializes flushes, so a shutdown flush waits for one in flight (and
    /// then writes whatever that one put back on failure).
    flushing: tokio::sync::Mutex<()>,
}

impl LastAccessed {
    /// Starts the flusher task (call within a Tokio runtime). The task ends
    /// after [`LastAccessed::shutdown`], or when every handle is dropped.
    pub fn start(
        store: Arc<dyn TokenStore>,
        config: &LastAccessedConfig,
    ) -> (Self, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            store,
            pending: Mutex::new(HashMap::new()),
            max_pending: config.max_pending,
            wake: Notify::new(),
            stop: Notify::new(),
            flushes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(run(Arc::downgrade(&shared), config.flush_interval));
        (Self { shared }, task)
    }

    /// Notes that `id` was used at `at` (unix seconds). Never blocks on I/O.
    pub fn record(&self, id: TokenId, at: i64) {
        let mut pending = self.shared.lock();
        let len = pending.len();
        match pending.get_mut(&id) {
            Some(time) => *time = (*time).max(at),
            // Past twice the flush threshold the store is not keeping up
            // (or is down): drop new ids rather than grow without bound.
            None if len >= self.shared.max_pending.saturating_mul(2) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                pending.insert(id, at);
                if len + 1 >= self.shared.max_pending {
                    self.shared.wake.notify_one();
                }
            }
        }
    }

    /// Writes everything pending now, in one round trip. On failure the
    /// batch goes back to the map, to be retried with the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.shared.flush().await
    }

    /// Stops the flusher and writes what is pending, once more.
    pub async fn shutdown(&self) -> Result<usize, StoreError> {
        self.shared.stop.notify_one();
        self.shared.flush().await
    }

    /// Ids waiting to be written.
    pub fn pending(&self) -> usize {
        self.shared.lock().len()
    }

    /// Batches written so far.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Updates dropped because too many ids were waiting.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenId, i64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn flush(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = self.flushing.lock().await;
        let batch: Vec<(TokenId, i64)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.touch(&batch).await {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tokens = batch.len(), "last-accessed times written");
                Ok(batch.len())
            }
            Err(e) => {
                let mut pending = self.lock();
                for (id, at) in batch {
                    let time = pending.entry(id).or_insert(at);
                    *time = (*time).max(at);
                }
                tracing::warn!(error = %e, pending = pending.len(), "last-accessed flush failed; will retry");
                Err(e)
            }
        }
    }
}

async fn run(shared: std::sync::Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        tokio::select! {
            _ = ticker.tick() => {}
            () = strong.wake.notified() => {}
            () = strong.stop.notified() => return,
        }
        // Errors are logged inside and the batch kept for the next round.
        let _ = strong.flush().await;
    }
}
