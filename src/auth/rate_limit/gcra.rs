//! GCRA, the limiter of the token and account limits: decided from local
//! state alone, and told what the rest of the fleet admitted.

use std::hash::Hash;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Rejection;
use crate::store::{LimitKey, LimitReport, LimitState};
use crate::token::{TokenId, TokenRateLimit};

/// Nanoseconds on the limiters' clock.
pub(super) type Nanos = u64;

/// The largest share of a limit the rest of the fleet is assumed to use
/// (a cold start's bursts can make it well over 1 for a round).
const MAX_OTHERS_SHARE: f64 = 1_000.0;

/// A token or account limit's shape, in GCRA terms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    name: &'static str,
    requests: u32,
    window: Duration,
    /// The emission interval: `window / requests`.
    interval: Nanos,
    /// `burst × interval`: how far ahead of now the limiter may run.
    tolerance: Nanos,
    /// How far past the last round the rest of the fleet's pace is
    /// extrapolated: two rounds.
    horizon: Nanos,
}

impl Policy {
    pub(super) fn new(
        name: &'static str,
        requests: u32,
        window: Duration,
        burst: u32,
        sync_interval: Duration,
    ) -> Option<Self> {
        if requests == 0 {
            return None;
        }
        let interval =
            u64::try_from(window.as_nanos() / u128::from(requests)).map_or(u64::MAX, |i| i.max(1));
        Some(Self {
            name,
            requests,
            window,
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
            horizon: u64::try_from(sync_interval.as_nanos() * 2).unwrap_or(u64::MAX),
        })
    }

    pub(super) fn rejection(&self, retry_after: Nanos) -> Rejection {
        Rejection::RateLimited {
            policy: self.name,
            quota: self.requests,
            window: self.window,
            retry_after: Duration::from_nanos(retry_after),
        }
    }

    pub(super) fn report(&self, key: LimitKey, admitted: u64, window: Nanos) -> LimitReport {
        LimitReport {
            key,
            admitted,
            interval_us: self.interval as f64 / 1_000.0,
            tolerance_us: self.tolerance as f64 / 1_000.0,
            window_us: window as f64 / 1_000.0,
        }
    }
}

/// One limiter of a policy per key, bounded.
pub(super) struct Limiter<K: Hash + Eq + Send + Sync + 'static> {
    pub(super) policy: Policy,
    pub(super) states: moka::sync::Cache<K, Arc<Gcra>>,
}

impl<K: Hash + Eq + Send + Sync + 'static> Limiter<K> {
    pub(super) fn new(policy: Option<Policy>, max_keys: u64) -> Option<Self> {
        let policy = policy?;
        // Idle this long, a limiter is full again: nothing is lost by
        // dropping it (a fleet limiter's unreported admissions are held by
        // the report list until reported).
        let refill = Duration::from_nanos(policy.tolerance);
        Some(Self {
            policy,
            states: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(refill.max(Duration::from_secs(1)))
                .build(),
        })
    }
}

/// How long a token's own limiter lives idle: until its burst has refilled
/// (then it is full again, and nothing is lost by dropping it), as the
/// configured limiters' `time_to_idle`.
pub(super) struct OwnRefill;

impl OwnRefill {
    pub(super) fn refill(limit: &TokenRateLimit) -> Duration {
        let interval = limit.period / limit.requests.max(1);
        interval
            .saturating_mul(limit.burst.max(1))
            .max(Duration::from_secs(1))
    }
}

impl moka::Expiry<(TokenId, TokenRateLimit), Arc<Gcra>> for OwnRefill {
    fn expire_after_create(
        &self,
        key: &(TokenId, TokenRateLimit),
        _value: &Arc<Gcra>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Self::refill(&key.1))
    }

    fn expire_after_read(
        &self,
        key: &(TokenId, TokenRateLimit),
        _value: &Arc<Gcra>,
        _read_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
        _last_modified_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Self::refill(&key.1))
    }
}

/// A GCRA limiter (the generic cell rate algorithm, as `governor` and
/// Redis's redis-cell use), with what this replica knows of the fleet.
#[derive(Default)]
pub(super) struct Gcra {
    // A std mutex: held for a few arithmetic operations, never across an
    // await.
    state: Mutex<GcraState>,
    /// Whether the limiter is in the report list (set by a request, cleared
    /// when reported), so a busy limiter is listed once per round.
    pub(super) listed: AtomicBool,
}

impl Gcra {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, GcraState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(super) struct GcraState {
    /// The theoretical arrival time: a request is admitted while admitting
    /// it keeps this within `tolerance` of now.
    pub(super) tat: Nanos,
    /// When `tat` last took in the rest of the fleet's estimated share.
    pub(super) updated: Nanos,
    /// The share of the limit the rest of the fleet used over the last
    /// report interval (0.5: half of it), assumed to go on until the next.
    pub(super) others: f64,
    /// Admitted here since the last report.
    pub(super) unreported: u64,
    /// The fleet's count at the last report, and when that came.
    pub(super) counted: Option<(u64, Nanos)>,
}

impl GcraState {
    /// Admits one request at `now`, or says how long until there is room.
    pub(super) fn admit(&mut self, policy: &Policy, now: Nanos) -> Result<(), Nanos> {
        if self.others > 0.0 {
            // The others' pace is known for a round or two at most: after a
            // pause, extrapolating it would refuse for far longer than the
            // fleet needs (the next round says where the fleet really is).
            let elapsed = now.saturating_sub(self.updated).min(policy.horizon) as f64;
            self.tat = self.tat.max(self.updated) + (elapsed * self.others) as Nanos;
        }
        self.updated = self.updated.max(now);
        let next = self.tat.max(now).saturating_add(policy.interval);
        if next - now > policy.tolerance {
            return Err(next - policy.tolerance - now);
        }
        self.tat = next;
        self.unreported += 1;
        Ok(())
    }

    /// Takes back an admission a later limit refused.
    pub(super) fn undo(&mut self, policy: &Policy) {
        self.tat = self.tat.saturating_sub(policy.interval);
        self.unreported = self.unreported.saturating_sub(1);
    }

    /// Takes in the fleet's state after a report of `reported` admissions,
    /// taken at `taken`.
    pub(super) fn learn(
        &mut self,
        policy: &Policy,
        reported: u64,
        fleet: LimitState,
        taken: Nanos,
        now: Nanos,
    ) {
        // The fleet's TAT: ahead of now, or somewhere behind it (then it
        // holds nothing back). Admissions made here since the report was
        // taken are not in it; they were made since `taken`, so, like the
        // store's, they extend a TAT of at least that moment, not of now.
        let fleet_tat = match fleet.ahead_us {
            0 => 0,
            ahead => now.saturating_add(ahead.saturating_mul(1_000)),
        };
        self.tat = fleet_tat
            .max(taken)
            .saturating_add(self.unreported.saturating_mul(policy.interval));
        self.others = match self.counted {
            // A count lower than before: the key expired and started over.
            Some((before, at)) if fleet.counted >= before + reported => {
                let others = (fleet.counted - before - reported) as f64;
                let elapsed = now.saturating_sub(at).max(1) as f64;
                (others * policy.interval as f64 / elapsed).min(MAX_OTHERS_SHARE)
            }
            _ => 0.0,
        };
        self.counted = Some((fleet.counted, now));
        self.updated = now;
    }

    /// The store did not answer: decide alone, as a single process would.
    pub(super) fn alone(&mut self) {
        self.others = 0.0;
        self.counted = None;
    }
}

/// A limiter in the report list.
pub(super) struct Active {
    pub(super) key: LimitKey,
    pub(super) policy: Policy,
    pub(super) gcra: Arc<Gcra>,
}
