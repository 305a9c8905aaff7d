//! Usage quotas on the request path (docs/reference/quotas.md).
//!
//! Each admitted request of a token that has a quota spends one credit.
//! Credits come from the store in leases: a replica takes a block at once
//! with an atomic script, spends it locally, and gives back what it did not
//! spend when the lease ends (`LEASE_TTL`, or the next refill) or on
//! shutdown. The store never hands out more than the quota holds, so a
//! fleet never over-spends; what a replica holds unspent is at worst
//! refused to others for a lease's lifetime, or lost if it crashes.
//!
//! Blocks grow (doubling up to `MAX_LEASE`) while a token is busy and
//! shrink when a lease ends unspent, and never ask for more than half of
//! what the store last said was left, so the last credits are spread
//! thin. On the in-memory store (one process) every lease is one credit.
//!
//! A token whose quota is used up is refused without asking the store
//! again for `EXHAUSTED_RECHECK` (or until its refill, if sooner).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Rejection;
use crate::service::TokenService;
use crate::token::TokenId;

/// How long leased credits may be spent before what is left goes back.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// The largest block leased at once.
const MAX_LEASE: u64 = 100;
/// How long a used-up quota is refused before the store is asked again (a
/// top-up or removal reaches the replica sooner, as a change event).
const EXHAUSTED_RECHECK: Duration = Duration::from_secs(1);
/// When to retry after the store could not lease credits.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Leases held by this replica, per token.
pub(crate) struct Quotas {
    service: TokenService,
    credits: moka::sync::Cache<TokenId, Arc<Credits>>,
    /// Whether other processes share the store (then leases come in blocks).
    shared: bool,
    exceeded: AtomicU64,
}

#[derive(Default)]
struct Credits {
    // A std mutex for the fast path (a few field updates, never across an
    // await); the tokio one makes concurrent requests share one lease call.
    held: Mutex<Held>,
    leasing: tokio::sync::Mutex<()>,
}

impl Credits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Held {
    /// Credits leased and not yet spent.
    left: u64,
    /// The quota period they belong to.
    period: u64,
    /// When the lease ends.
    until: Option<Instant>,
    /// Used up: refused until then, and retry after this long from then on.
    exhausted: Option<(Instant, Option<Instant>)>,
    /// The next block to ask for.
    block: u64,
    /// What the store said was left after the last lease.
    store_left: Option<u64>,
}

enum Spend {
    Spent,
    Exhausted(Option<Duration>),
    NeedLease,
}

impl Held {
    /// Credits left as this replica knows them: its lease's, and what the
    /// store held after its last lease (other replicas' leases since are
    /// not seen: an estimate, high by at most what they hold).
    fn remaining(&self) -> u64 {
        self.left + self.store_left.unwrap_or(0)
    }

    fn try_spend(&mut self, now: Instant) -> Spend {
        if let Some((until, refill)) = self.exhausted {
            if now < until {
                return Spend::Exhausted(refill.map(|r| r.saturating_duration_since(now)));
            }
            self.exhausted = None;
        }
        if self.left > 0 && self.until.is_some_and(|until| now < until) {
            self.left -= 1;
            return Spend::Spent;
        }
        Spend::NeedLease
    }
}

impl Quotas {
    pub(crate) fn new(service: TokenService, max_keys: u64) -> Self {
        let shared = service.store().shares_limits();
        Self {
            service,
            credits: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                // Longer than a lease, so the sweep gives leftovers back
                // before an idle token's state goes.
                .time_to_idle(LEASE_TTL * 3)
                .build(),
            shared,
            exceeded: AtomicU64::new(0),
        }
    }

    /// Requests refused because a quota was used up.
    pub(crate) fn exceeded(&self) -> u64 {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Spends one credit of `id`'s quota: from the lease held here, or from
    /// a new lease (one store call per block, shared by concurrent
    /// requests), and tells about how many are left (`None`: the token has
    /// no quota any more). Fails closed when the store cannot be asked.
    pub(crate) async fn spend(&self, id: TokenId) -> Result<Option<u64>, Rejection> {
        let credits = self.credits.get_with(id, Arc::default);
        {
            let mut held = credits.lock();
            match held.try_spend(Instant::now()) {
                Spend::Spent => return Ok(Some(held.remaining())),
                Spend::Exhausted(retry) => return Err(self.refuse(retry)),
                Spend::NeedLease => {}
            }
        }
        let _one_lease_at_a_time = credits.leasing.lock().await;
        let (stale, period, want) = {
            let mut held = credits.lock();
            match held.try_spend(Instant::now()) {
                Spend::Spent => return Ok(Some(held.remaining())),
                Spend::Exhausted(retry) => return Err(self.refuse(retry)),
                Spend::NeedLease => {}
            }
            let stale = std::mem::take(&mut held.left);
            held.block = match (self.shared, stale) {
                (false, _) => 1,
                (true, 0) => (held.block * 2).clamp(1, MAX_LEASE),
                (true, _) => (held.block / 2).max(1),
            };
            let cap = held.store_left.map_or(u64::MAX, |left| (left / 2).max(1));
            (stale, held.period, held.block.min(cap))
        };
        let store = self.service.store();
        if stale > 0 {
            // Best effort: credits not given back are only unspent.
            let _ = store.return_credits(id, stale, period).await;
        }
        let now = self.service.now();
        let lease = match store.lease_credits(id, want, now).await {
            Ok(Some(lease)) => lease,
            // No quota (any more): the cached validation predates the change.
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(token_id = %id, error = %e, "cannot lease quota credits");
                return Err(Rejection::Unavailable {
                    retry_after: STORE_RETRY_AFTER,
                });
            }
        };
        let started = Instant::now();
        // `now` is whole seconds: the refill may come up to a second sooner
        // than `at − now` says, so the lease ends a second early (a lease
        // spent past its refill would be spent on top of the new period).
        let refill = lease.next_refill.map(|at| {
            let seconds = at.saturating_sub(now).saturating_sub(1);
            started + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
        });
        let mut held = credits.lock();
        held.period = lease.period;
        held.store_left = Some(lease.remaining);
        if lease.granted == 0 {
            let until = refill.map_or(started + EXHAUSTED_RECHECK, |r| {
                r.min(started + EXHAUSTED_RECHECK)
            });
            held.exhausted = Some((until, refill));
            drop(held);
            return Err(self.refuse(refill.map(|r| r.saturating_duration_since(started))));
        }
        held.left = lease.granted - 1;
        held.until = Some(refill.map_or(started + LEASE_TTL, |r| r.min(started + LEASE_TTL)));
        Ok(Some(held.remaining()))
    }

    fn refuse(&self, retry_after: Option<Duration>) -> Rejection {
        self.exceeded.fetch_add(1, Ordering::Relaxed);
        Rejection::UsageExceeded { retry_after }
    }

    /// Forgets what is held for `id`: its quota changed (a new period, so
    /// the credits could not be given back anyway) or it was revoked.
    pub(crate) fn forget(&self, id: TokenId) {
        self.credits.invalidate(&id);
    }

    /// Gives back the unspent credits of leases that ended (`all`: of every
    /// lease, on shutdown). Returns how many credits went back.
    pub(crate) async fn give_back(&self, all: bool) -> u64 {
        let now = Instant::now();
        let mut returned = 0;
        for (id, credits) in self.credits.iter() {
            let (left, period) = {
                let mut held = credits.lock();
                if held.left == 0 || !(all || held.until.is_none_or(|until| until <= now)) {
                    continue;
                }
                // Ended unspent: the next lease of this token is smaller.
                held.block = (held.block / 2).max(1);
                (std::mem::take(&mut held.left), held.period)
            };
            match self.service.store().return_credits(*id, left, period).await {
                Ok(()) => returned += left,
                Err(e) => {
                    tracing::warn!(token_id = %id, error = %e, "cannot give back unused quota credits")
                }
            }
        }
        returned
    }
}

/// Gives back the leftovers of ended leases every second, for as long as
/// `quotas` live.
pub(crate) async fn sweep(quotas: std::sync::Weak<Quotas>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(quotas) = quotas.upgrade() else {
            return;
        };
        quotas.give_back(false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{CreateTokenParams, QuotaParams};
    use crate::store::MemoryStore;

    /// A lease whose time is up gives its unspent credits back (within its
    /// period); one still running keeps them.
    #[tokio::test]
    async fn ended_leases_give_their_credits_back() {
        let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
        let created = service
            .create_token(CreateTokenParams {
                account_id: "acme".into(),
                name: "metered".into(),
                expires_in_days: None,
                scopes: Default::default(),
                allowed_ips: Default::default(),
                meta: Default::default(),
                quota: Some(QuotaParams {
                    remaining: 100,
                    refill: None,
                }),
                rate_limit: None,
            })
            .await
            .unwrap();
        let id = created.info.id;
        let quotas = Quotas::new(service.clone(), 10);
        let lease = service
            .store()
            .lease_credits(id, 10, service.now())
            .await
            .unwrap()
            .unwrap();
        let credits = Arc::new(Credits::default());
        *credits.lock() = Held {
            left: 7,
            period: lease.period,
            until: Some(Instant::now() + Duration::from_secs(60)),
            ..Held::default()
        };
        quotas.credits.insert(id, credits.clone());
        assert_eq!(quotas.give_back(false).await, 0, "still running");
        credits.lock().until = Some(Instant::now());
        assert_eq!(quotas.give_back(false).await, 7);
        let info = service.get_token(id, "acme").await.unwrap();
        assert_eq!(
            info.quota.unwrap().remaining,
            97,
            "100 - 10 leased + 7 back"
        );
        assert_eq!(credits.lock().left, 0);
    }
}
