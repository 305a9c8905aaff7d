//! The fleet round: every `sync_interval` each replica reports what it
//! admitted to the store and learns what the others did
//! (docs/reference/rate-limits.md, "A fleet (the Redis store)").

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use super::Limits;
use crate::store::{LimitReport, StoreError, TokenStore};

/// Reconciles `limits` with the store every `interval` for as long as they
/// live (docs/reference/rate-limits.md). A failing store is logged once per outage.
pub(crate) async fn reconcile(
    limits: Weak<Limits>,
    store: Arc<dyn TokenStore>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let Some(limits) = limits.upgrade() else {
            return;
        };
        match limits.reconcile(&*store).await {
            // An empty round asked nothing of the store.
            Ok(reported) if failing && reported > 0 => {
                failing = false;
                tracing::info!("rate limits are counted fleet-wide again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot reconcile rate limits with the store; each replica applies them alone until it can");
            }
            Err(_) => {}
        }
    }
}

impl Limits {
    /// One round of reconciliation: reports what was admitted on each
    /// limiter used since the last round, in one round trip, and takes in
    /// the fleet's state. When the store fails, every limiter decides alone
    /// until the next round that succeeds (the failed round's admissions are
    /// not reported: they would only refuse later requests).
    pub(crate) async fn reconcile(&self, store: &dyn TokenStore) -> Result<usize, StoreError> {
        let Some(active) = &self.active else {
            return Ok(0);
        };
        let batch = std::mem::take(&mut *active.lock().unwrap_or_else(PoisonError::into_inner));
        // Every admission in this round was made since the last one began.
        let taken = self.now();
        let window = taken.saturating_sub(self.last_round.swap(taken, Ordering::Relaxed));
        if batch.is_empty() {
            return Ok(0);
        }
        let reports: Vec<LimitReport> = batch
            .iter()
            .map(|a| {
                // Cleared first: a request from now on lists it again.
                a.gcra.listed.store(false, Ordering::Relaxed);
                let admitted = std::mem::take(&mut a.gcra.lock().unreported);
                a.policy.report(a.key.clone(), admitted, window)
            })
            .collect();
        match store.reconcile_limits(&reports).await {
            Ok(states) => {
                let answered = self.now();
                for ((a, report), state) in batch.iter().zip(&reports).zip(states) {
                    a.gcra
                        .lock()
                        .learn(&a.policy, report.admitted, state, taken, answered);
                }
                Ok(batch.len())
            }
            Err(e) => {
                for a in &batch {
                    a.gcra.lock().alone();
                }
                Err(e)
            }
        }
    }
}
