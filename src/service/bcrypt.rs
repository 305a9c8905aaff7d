//! The bcrypt gate: bcrypt runs on the blocking pool, a bounded number at
//! a time, so cached requests keep their cores (docs/guide/reliability.md).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::TokenError;

/// Bounds bcrypt work: at most `slots` verifications run at once on the
/// blocking pool, at most `queue` more wait, and the rest are refused at
/// once. Without it, a flood of well-formed bad tokens would queue unbounded
/// work and memory behind the blocking pool.
#[derive(Debug)]
pub(super) struct BcryptGate {
    slots: tokio::sync::Semaphore,
    pub(super) waiting: AtomicUsize,
    queue: usize,
}

impl BcryptGate {
    pub(super) fn new(slots: usize, queue: usize) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    pub(super) async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, TokenError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(TokenError::Overloaded);
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        permit.map_err(|_| TokenError::Overloaded)
    }
}

/// The default bcrypt concurrency: one less than the CPUs (at least one),
/// so a flood of wrong secrets leaves a core to the cached requests
/// (docs/guide/reliability.md, "A flood of forged secrets").
pub fn default_bcrypt_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cpus| usize::from(cpus).saturating_sub(1).max(1))
}

/// Runs CPU-bound hashing on tokio's blocking pool, off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TokenError::Internal(format!("blocking task failed: {e}")))?
        .map_err(|e| TokenError::Internal(format!("bcrypt: {e}")))
}
