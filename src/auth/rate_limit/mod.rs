//! Rate limits: per token, per account, and per client IP on failed
//! authentications (docs/reference/rate-limits.md).
//!
//! Token and account limits are GCRA limiters of our own, so that a store
//! shared by several replicas can count them fleet-wide: each request is
//! decided from local state alone, and a background task reports what this
//! replica admitted to the store every `sync_interval` and learns what the
//! rest of the fleet did (see [`reconcile`]). On a store of one process
//! (the in-memory store) they are plain local limiters. The failure limit is
//! local on every store (`governor`).
//!
//! Each key gets its own limiter, kept in a bounded moka cache: a key idle
//! for as long as its limiter takes to refill completely is dropped (it
//! would be full anyway), and past `max_keys` the least useful keys go, so
//! memory stays bounded whatever clients send.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ipnet::Ipv6Net;

use serde::{Deserialize, Serialize};

use super::Rejection;
use crate::settings::{InvalidConfig, in_range, within};
use crate::store::{LimitKey, LimitReport, LimitState, StoreError, TokenStore};
use crate::token::TokenId;
use crate::token::TokenRateLimit;

/// `[rate_limit]`: per-token and per-client-IP limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests each token may make per `per_token_period` (0: no limit).
    pub per_token_requests: u32,
    /// The period of `per_token_requests`.
    #[serde(with = "crate::settings::duration")]
    pub per_token_period: Duration,
    /// Requests a token may make at once after being idle.
    pub per_token_burst: u32,
    /// Requests all of an account's tokens together may make per
    /// `per_account_period` (0: no limit).
    pub per_account_requests: u32,
    /// The period of `per_account_requests`.
    #[serde(with = "crate::settings::duration")]
    pub per_account_period: Duration,
    /// Requests an account may make at once after being idle.
    pub per_account_burst: u32,
    /// With a shared store (Redis): how often each replica reports what it
    /// admitted and learns what the fleet did. Shorter: less overshoot,
    /// more Redis calls (one pipelined round trip per interval).
    #[serde(with = "crate::settings::duration")]
    pub sync_interval: Duration,
    /// Failed authentications a client IP may make per `failed_auth_period`
    /// before its requests get 429 (0: no limit).
    pub failed_auth_per_ip: u32,
    /// The period of `failed_auth_per_ip`.
    #[serde(with = "crate::settings::duration")]
    pub failed_auth_period: Duration,
    /// IPv6 clients share one failure bucket per network of this prefix
    /// length (64: one per /64, what one host usually holds; 128: per
    /// address). IPv4 clients are counted per address.
    pub failed_auth_ipv6_prefix: u8,
    /// Refused presentations (wrong secret, unknown, revoked or expired) a
    /// token id may have per `failed_auth_period`, from any number of IPs,
    /// before further presentations of that id that miss the cache get 429
    /// without a store read or a bcrypt verification (0: no limit). The
    /// real token, once cached, is not affected.
    pub failed_auth_per_token: u32,
    /// Most tokens and IPs tracked by each limiter; idle ones are dropped.
    pub max_keys: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_token_requests: 100,
            per_token_period: Duration::from_secs(1),
            per_token_burst: 200,
            per_account_requests: 0,
            per_account_period: Duration::from_secs(1),
            per_account_burst: 1_000,
            sync_interval: Duration::from_millis(100),
            failed_auth_per_ip: 10,
            failed_auth_period: Duration::from_secs(60),
            failed_auth_ipv6_prefix: 64,
            failed_auth_per_token: 10,
            max_keys: 100_000,
        }
    }
}

impl RateLimitConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let day = Duration::from_secs(86_400);
        in_range(
            "rate_limit.per_token_requests",
            self.per_token_requests,
            0,
            1_000_000,
        )?;
        within(
            "rate_limit.per_token_period",
            self.per_token_period,
            Duration::from_millis(1),
            day,
        )?;
        in_range(
            "rate_limit.per_token_burst",
            self.per_token_burst,
            1,
            10_000_000,
        )?;
        in_range(
            "rate_limit.per_account_requests",
            self.per_account_requests,
            0,
            10_000_000,
        )?;
        within(
            "rate_limit.per_account_period",
            self.per_account_period,
            Duration::from_millis(1),
            day,
        )?;
        in_range(
            "rate_limit.per_account_burst",
            self.per_account_burst,
            1,
            100_000_000,
        )?;
        within(
            "rate_limit.sync_interval",
            self.sync_interval,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )?;
        in_range(
            "rate_limit.failed_auth_per_ip",
            self.failed_auth_per_ip,
            0,
            1_000_000,
        )?;
        within(
            "rate_limit.failed_auth_period",
            self.failed_auth_period,
            Duration::from_millis(1),
            day,
        )?;
        in_range(
            "rate_limit.failed_auth_ipv6_prefix",
            self.failed_auth_ipv6_prefix,
            32,
            128,
        )?;
        in_range(
            "rate_limit.failed_auth_per_token",
            self.failed_auth_per_token,
            0,
            1_000_000,
        )?;
        in_range("rate_limit.max_keys", self.max_keys, 1, 100_000_000)
    }
}

/// One limiter per key, bounded.
struct Keyed<K: Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static> {
    policy: &'static str,
    quota: Quota,
    requests: u32,
    window: Duration,
    states: moka::sync::Cache<K, Arc<V>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static, V: Send + Sync + 'static> Keyed<K, V> {
    fn new(
        policy: &'static str,
        requests: u32,
        window: Duration,
        burst: u32,
        max_keys: u64,
    ) -> Option<Self> {
        let requests_nz = NonZeroU32::new(requests)?;
        let burst = NonZeroU32::new(burst)?;
        let quota = Quota::with_period(window / requests_nz.get())?.allow_burst(burst);
        // A limiter idle this long has refilled its whole burst.
        let refill = quota.replenish_interval() * burst.get();
        Some(Self {
            policy,
            quota,
            requests,
            window,
            states: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(refill.max(Duration::from_secs(1)))
                .build(),
        })
    }

    fn rejection(&self, retry_after: Duration) -> Rejection {
        Rejection::RateLimited {
            policy: self.policy,
            quota: self.requests,
            window: self.window,
            retry_after,
        }
    }
}

/// Per-IP (or per-token-id) failure state: a limiter that each failure
/// draws from, and the time until which the key is refused outright.
struct FailureState {
    limiter: DefaultDirectRateLimiter,
    blocked_until: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Keyed<K, FailureState> {
    /// 429 while `key` is over its failure limit.
    fn check(&self, key: &K) -> Result<(), Rejection> {
        let Some(state) = self.states.get(key) else {
            return Ok(());
        };
        let blocked = *state
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match blocked {
            Some(until) if until > Instant::now() => Err(self.rejection(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Records a failure of `key`: `Err` (429) once over the limit, and
    /// until the limiter has room again.
    fn fail(&self, key: K) -> Result<(), Rejection> {
        let quota = self.quota;
        let state = self.states.get_with(key, || {
            Arc::new(FailureState {
                limiter: RateLimiter::direct(quota),
                blocked_until: Mutex::new(None),
            })
        });
        match state.limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                *state
                    .blocked_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + wait);
                Err(self.rejection(wait))
            }
        }
    }
}

/// The three limits. A limit configured to 0 is off.
pub(crate) struct Limits {
    /// The limiters' clock: nanoseconds are counted from here.
    clock: Instant,
    per_token: Option<Limiter<TokenId>>,
    /// The limiters of tokens with a limit of their own (the record's
    /// `rate_limit`), whatever `per_token` says.
    own: moka::sync::Cache<(TokenId, TokenRateLimit), Arc<Gcra>>,
    /// For the policies of tokens' own limits.
    sync_interval: Duration,
    per_account: Option<Limiter<String>>,
    failures: Option<Keyed<IpAddr, FailureState>>,
    /// Refusals per token id, from anywhere (a flood from many IPs
    /// behind a trusted proxy).
    token_failures: Option<Keyed<TokenId, FailureState>>,
    /// IPv6 clients are counted per network of this prefix length.
    ipv6_prefix: u8,
    /// With a shared store: the limiters used since the last report (each
    /// once), which the next [`Limits::reconcile`] round reports.
    active: Option<Mutex<Vec<Active>>>,
    /// When the last round began (its admissions were made since).
    last_round: std::sync::atomic::AtomicU64,
}

/// The failure limit's key for `ip`: itself for IPv4, its network for IPv6.
/// One IPv6 client usually holds a whole /64 (SLAAC, privacy addresses), so
/// per-address buckets would hand it endless fresh ones.
fn bucket(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix).map_or(ip, |net| IpAddr::V6(net.network())),
        v4 => v4,
    }
}

/// Nanoseconds on the limiters' clock.
type Nanos = u64;

/// The largest share of a limit the rest of the fleet is assumed to use
/// (a cold start's bursts can make it well over 1 for a round).
const MAX_OTHERS_SHARE: f64 = 1_000.0;

/// A token or account limit's shape, in GCRA terms.
#[derive(Debug, Clone, Copy)]
struct Policy {
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
    fn new(
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

    fn rejection(&self, retry_after: Nanos) -> Rejection {
        Rejection::RateLimited {
            policy: self.name,
            quota: self.requests,
            window: self.window,
            retry_after: Duration::from_nanos(retry_after),
        }
    }

    fn report(&self, key: LimitKey, admitted: u64, window: Nanos) -> LimitReport {
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
struct Limiter<K: Hash + Eq + Send + Sync + 'static> {
    policy: Policy,
    states: moka::sync::Cache<K, Arc<Gcra>>,
}

impl<K: Hash + Eq + Send + Sync + 'static> Limiter<K> {
    fn new(policy: Option<Policy>, max_keys: u64) -> Option<Self> {
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
struct OwnRefill;

impl OwnRefill {
    fn refill(limit: &TokenRateLimit) -> Duration {
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
struct Gcra {
    // A std mutex: held for a few arithmetic operations, never across an
    // await.
    state: Mutex<GcraState>,
    /// Whether the limiter is in the report list (set by a request, cleared
    /// when reported), so a busy limiter is listed once per round.
    listed: AtomicBool,
}

impl Gcra {
    fn lock(&self) -> std::sync::MutexGuard<'_, GcraState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct GcraState {
    /// The theoretical arrival time: a request is admitted while admitting
    /// it keeps this within `tolerance` of now.
    tat: Nanos,
    /// When `tat` last took in the rest of the fleet's estimated share.
    updated: Nanos,
    /// The share of the limit the rest of the fleet used over the last
    /// report interval (0.5: half of it), assumed to go on until the next.
    others: f64,
    /// Admitted here since the last report.
    unreported: u64,
    /// The fleet's count at the last report, and when that came.
    counted: Option<(u64, Nanos)>,
}

impl GcraState {
    /// Admits one request at `now`, or says how long until there is room.
    fn admit(&mut self, policy: &Policy, now: Nanos) -> Result<(), Nanos> {
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
    fn undo(&mut self, policy: &Policy) {
        self.tat = self.tat.saturating_sub(policy.interval);
        self.unreported = self.unreported.saturating_sub(1);
    }

    /// Takes in the fleet's state after a report of `reported` admissions,
    /// taken at `taken`.
    fn learn(
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
    fn alone(&mut self) {
        self.others = 0.0;
        self.counted = None;
    }
}

/// A limiter in the report list.
struct Active {
    key: LimitKey,
    policy: Policy,
    gcra: Arc<Gcra>,
}

impl Limits {
    /// The limits `config` sets; `shared`: counted fleet-wide through the
    /// store (see [`reconcile`]).
    pub(crate) fn new(config: &RateLimitConfig, shared: bool) -> Self {
        Self {
            clock: Instant::now(),
            per_token: Limiter::new(
                Policy::new(
                    "token",
                    config.per_token_requests,
                    config.per_token_period,
                    config.per_token_burst,
                    config.sync_interval,
                ),
                config.max_keys,
            ),
            own: moka::sync::Cache::builder()
                .max_capacity(config.max_keys)
                .expire_after(OwnRefill)
                .build(),
            sync_interval: config.sync_interval,
            per_account: Limiter::new(
                Policy::new(
                    "account",
                    config.per_account_requests,
                    config.per_account_period,
                    config.per_account_burst,
                    config.sync_interval,
                ),
                config.max_keys,
            ),
            failures: Keyed::new(
                "failed-auth",
                config.failed_auth_per_ip,
                config.failed_auth_period,
                config.failed_auth_per_ip,
                config.max_keys,
            ),
            token_failures: Keyed::new(
                "failed-auth-token",
                config.failed_auth_per_token,
                config.failed_auth_period,
                config.failed_auth_per_token,
                config.max_keys,
            ),
            ipv6_prefix: config.failed_auth_ipv6_prefix,
            active: shared.then(|| Mutex::new(Vec::new())),
            last_round: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> Nanos {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// One request by `token` of `account`: admitted by both limits (the
    /// token's `own` one instead of the configured one, if it has one), or
    /// 429 (and then counted by neither).
    pub(crate) fn check(
        &self,
        token: TokenId,
        account: &str,
        own: Option<&TokenRateLimit>,
    ) -> Result<(), Rejection> {
        let mut admitted = None;
        if let Some(own) = own {
            let policy = Policy::new(
                "token",
                own.requests,
                own.period,
                own.burst,
                self.sync_interval,
            );
            if let Some(policy) = policy {
                // Keyed by the limit too: a changed limit starts afresh,
                // here and in the fleet's count.
                let gcra = self
                    .own
                    .get_with((token, *own), || Arc::new(Gcra::default()));
                self.admit(&policy, &gcra, || LimitKey::OwnLimit(token, *own))?;
                admitted = Some((policy, gcra));
            }
        } else if let Some(limiter) = &self.per_token {
            let gcra = limiter.states.get_with(token, || Arc::new(Gcra::default()));
            self.admit(&limiter.policy, &gcra, || LimitKey::Token(token))?;
            admitted = Some((limiter.policy, gcra));
        }
        if let Some(limiter) = &self.per_account {
            // Looked up by &str: no allocation once the account is known.
            let gcra = match limiter.states.get(account) {
                Some(gcra) => gcra,
                None => limiter
                    .states
                    .get_with(account.to_owned(), || Arc::new(Gcra::default())),
            };
            let key = || LimitKey::Account(account.to_owned());
            if let Err(refused) = self.admit(&limiter.policy, &gcra, key) {
                if let Some((policy, gcra)) = admitted {
                    gcra.lock().undo(&policy);
                }
                return Err(refused);
            }
        }
        Ok(())
    }

    fn admit(
        &self,
        policy: &Policy,
        gcra: &Arc<Gcra>,
        key: impl FnOnce() -> LimitKey,
    ) -> Result<(), Rejection> {
        // The clock is read under the lock: a time read before it could be
        // older than what a reconciliation round just wrote, and a request
        // delayed between the two would be refused for nothing.
        let result = {
            let mut state = gcra.lock();
            state.admit(policy, self.now())
        };
        // Listed on a refusal too: a replica that refuses keeps learning
        // when the fleet has room again.
        if let Some(active) = &self.active
            && !gcra.listed.load(Ordering::Relaxed)
            && !gcra.listed.swap(true, Ordering::Relaxed)
        {
            active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Active {
                    key: key(),
                    policy: *policy,
                    gcra: gcra.clone(),
                });
        }
        result.map_err(|wait| policy.rejection(wait))
    }

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

    /// Refuses a client IP that has failed too often, before any work.
    pub(crate) fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Rejection> {
        let (Some(limits), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        limits.check(&bucket(ip, self.ipv6_prefix))
    }

    /// Records a failed authentication from `ip`. Once over the limit, this
    /// and further attempts get 429 until the limiter has room again.
    pub(crate) fn record_failure(&self, ip: Option<IpAddr>) -> Result<(), Rejection> {
        let (Some(limits), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        let ip = bucket(ip, self.ipv6_prefix);
        limits.fail(ip).inspect_err(|_| {
            tracing::info!(client = %ip, "client IP (or IPv6 network) over the failed-authentication limit");
        })
    }

    /// Refuses a token id presented with too many wrong secrets, before
    /// its bcrypt verification (called on cache misses only).
    pub(crate) fn check_token(&self, id: TokenId) -> Result<(), Rejection> {
        match &self.token_failures {
            Some(limits) => limits.check(&id),
            None => Ok(()),
        }
    }

    /// Records a refused presentation of token id `id`, from any client.
    pub(crate) fn record_wrong_secret(&self, id: TokenId) -> Result<(), Rejection> {
        let Some(limits) = &self.token_failures else {
            return Ok(());
        };
        limits.fail(id).inspect_err(|_| {
            tracing::info!(token_id = %id, "token id over the wrong-secret limit: misses get 429 without bcrypt");
        })
    }

    /// Forgets the refusals of token id `id`: it was changed by its owner
    /// (enabled again, a new expiry), so what it was refused for before
    /// may no longer hold.
    pub(crate) fn forget_refusals(&self, id: TokenId) {
        if let Some(limits) = &self.token_failures {
            limits.states.invalidate(&id);
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ipv6_prefix: u8) -> Limits {
        Limits::new(
            &RateLimitConfig {
                failed_auth_per_ip: 2,
                failed_auth_ipv6_prefix: ipv6_prefix,
                ..RateLimitConfig::default()
            },
            false,
        )
    }

    #[test]
    fn ipv6_failures_count_per_network() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let limits = limits(64);
        assert!(limits.record_failure(ip("2001:db8:1:2::1")).is_ok());
        assert!(limits.record_failure(ip("2001:db8:1:2::2")).is_ok());
        // A third address of the same /64 is the same client.
        assert!(limits.record_failure(ip("2001:db8:1:2:ffff::3")).is_err());
        assert!(limits.check_ip(ip("2001:db8:1:2::99")).is_err());
        // Another /64, and IPv4 neighbours, are not.
        assert!(limits.check_ip(ip("2001:db8:1:3::1")).is_ok());
        assert!(limits.record_failure(ip("192.0.2.1")).is_ok());
        assert!(limits.record_failure(ip("192.0.2.2")).is_ok());
        assert!(limits.check_ip(ip("192.0.2.3")).is_ok());
        // Per address, when configured so.
        let limits = self::limits(128);
        assert!(limits.record_failure(ip("2001:db8::1")).is_ok());
        assert!(limits.record_failure(ip("2001:db8::1")).is_ok());
        assert!(limits.check_ip(ip("2001:db8::1")).is_ok());
        assert!(limits.record_failure(ip("2001:db8::1")).is_err());
        assert!(limits.check_ip(ip("2001:db8::2")).is_ok());
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    /// 10 per second (one per 100 ms), burst 3.
    fn policy() -> Policy {
        Policy::new(
            "token",
            10,
            Duration::from_secs(1),
            3,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn a_limiter_admits_its_burst_then_one_per_interval() {
        let (policy, mut gcra) = (policy(), GcraState::default());
        let start = 1_000 * MS;
        for _ in 0..3 {
            assert_eq!(gcra.admit(&policy, start), Ok(()));
        }
        assert_eq!(gcra.admit(&policy, start), Err(100 * MS));
        assert_eq!(gcra.admit(&policy, start + 60 * MS), Err(40 * MS));
        assert_eq!(gcra.admit(&policy, start + 100 * MS), Ok(()));
        assert!(gcra.admit(&policy, start + 100 * MS).is_err());
        // Idle for its whole burst: full again, and no more than full.
        let later = start + 10_000 * MS;
        for _ in 0..3 {
            assert_eq!(gcra.admit(&policy, later), Ok(()));
        }
        assert!(gcra.admit(&policy, later).is_err());
        assert_eq!(gcra.unreported, 7);
    }

    #[test]
    fn the_fleet_state_and_the_others_share_hold_a_replica_back() {
        let (policy, mut gcra) = (policy(), GcraState::default());
        let start = 1_000 * MS;
        assert_eq!(gcra.admit(&policy, start), Ok(()));
        // The fleet has run 150 ms ahead (this replica's one included): one
        // more request fits in the 300 ms tolerance, not two.
        let first = LimitState {
            ahead_us: 150_000,
            counted: 10,
        };
        let reported = std::mem::take(&mut gcra.unreported);
        gcra.learn(&policy, reported, first, start, start);
        assert_eq!(gcra.others, 0.0, "no share is known before a second report");
        assert_eq!(gcra.admit(&policy, start), Ok(()));
        assert!(gcra.admit(&policy, start).is_err());
        // A second later the others had admitted 5 requests, half of the
        // limit: this replica now assumes they go on at that pace, so it
        // gets one request per 200 ms instead of one per 100 ms.
        let now = start + 1_000 * MS;
        let second = LimitState {
            ahead_us: 300_000,
            counted: 10 + 1 + 5,
        };
        let reported = std::mem::take(&mut gcra.unreported);
        assert_eq!(reported, 1);
        gcra.learn(&policy, reported, second, now, now);
        assert!((gcra.others - 0.5).abs() < 1e-9, "{}", gcra.others);
        assert!(gcra.admit(&policy, now).is_err());
        assert!(gcra.admit(&policy, now + 100 * MS).is_err());
        assert_eq!(gcra.admit(&policy, now + 200 * MS), Ok(()));
        assert!(gcra.admit(&policy, now + 300 * MS).is_err());
        assert_eq!(gcra.admit(&policy, now + 400 * MS), Ok(()));
        // After a long pause the others' pace is not extrapolated over all
        // of it (two rounds at most): admitted at once, not refused for the
        // 50 s that half of a 100 s pause would add.
        let mut paused = GcraState { ..gcra };
        assert_eq!(paused.admit(&policy, now + 100_000 * MS), Ok(()));
        // Without the store, it decides alone again: the full rate.
        gcra.alone();
        assert_eq!(gcra.admit(&policy, now + 500 * MS), Ok(()));
        assert_eq!(gcra.admit(&policy, now + 600 * MS), Ok(()));
    }

    #[test]
    fn the_account_limit_spans_tokens_and_a_refusal_costs_the_token_nothing() {
        let limits = Limits::new(
            &RateLimitConfig {
                per_token_requests: 1,
                per_token_period: Duration::from_secs(60),
                per_token_burst: 2,
                per_account_requests: 1,
                per_account_period: Duration::from_secs(60),
                per_account_burst: 3,
                ..RateLimitConfig::default()
            },
            false,
        );
        let (a, b) = (
            TokenId::from_uuid(uuid::Uuid::from_u128(1)),
            TokenId::from_uuid(uuid::Uuid::from_u128(2)),
        );
        assert!(limits.check(a, "acme", None).is_ok());
        assert!(limits.check(a, "acme", None).is_ok());
        assert!(limits.check(b, "acme", None).is_ok());
        let Err(Rejection::RateLimited { policy, .. }) = limits.check(b, "acme", None) else {
            panic!("the account's fourth request must be refused");
        };
        assert_eq!(policy, "account");
        // Another account is not held back; b's own refusal by the account
        // limit did not spend b's token allowance.
        assert!(limits.check(b, "other", None).is_ok());
        let Err(Rejection::RateLimited { policy, .. }) = limits.check(a, "other", None) else {
            panic!("token a has spent its burst");
        };
        assert_eq!(policy, "token");
    }

    #[test]
    fn a_token_limiter_lives_until_its_burst_refilled() {
        let limit = |requests, period, burst| TokenRateLimit {
            requests,
            period: Duration::from_secs(period),
            burst,
        };
        assert_eq!(
            OwnRefill::refill(&limit(1, 86_400, 1)),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            OwnRefill::refill(&limit(10, 60, 20)),
            Duration::from_secs(120)
        );
        assert_eq!(
            OwnRefill::refill(&limit(1000, 1, 10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_token_with_its_own_limit_is_held_to_it_alone() {
        // No configured token limit: only the token's own applies.
        let limits = Limits::new(
            &RateLimitConfig {
                per_token_requests: 0,
                ..RateLimitConfig::default()
            },
            false,
        );
        let (a, b) = (
            TokenId::from_uuid(uuid::Uuid::from_u128(1)),
            TokenId::from_uuid(uuid::Uuid::from_u128(2)),
        );
        let own = TokenRateLimit {
            requests: 1,
            period: Duration::from_secs(60),
            burst: 2,
        };
        assert!(limits.check(a, "acme", Some(&own)).is_ok());
        assert!(limits.check(a, "acme", Some(&own)).is_ok());
        let Err(Rejection::RateLimited { policy, quota, .. }) = limits.check(a, "acme", Some(&own))
        else {
            panic!("a's own burst of 2 is spent");
        };
        assert_eq!((policy, quota), ("token", 1));
        for _ in 0..1_000 {
            assert!(limits.check(b, "acme", None).is_ok(), "b has no limit");
        }
        // A configured limit is replaced, not added to.
        let limits = Limits::new(
            &RateLimitConfig {
                per_token_requests: 1,
                per_token_period: Duration::from_secs(60),
                per_token_burst: 1,
                ..RateLimitConfig::default()
            },
            false,
        );
        let generous = TokenRateLimit {
            requests: 100,
            period: Duration::from_secs(1),
            burst: 100,
        };
        for _ in 0..50 {
            assert!(limits.check(a, "acme", Some(&generous)).is_ok());
        }
        assert!(limits.check(b, "acme", None).is_ok());
        assert!(limits.check(b, "acme", None).is_err());
    }
}
