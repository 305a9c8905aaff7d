//! Rate limits (GCRA, via `governor`): per token, and per client IP on
//! failed authentications.
//!
//! Each key gets its own limiter, kept in a bounded moka cache: a key idle
//! for as long as its limiter takes to refill completely is dropped (it
//! would be full anyway), and past `max_keys` the least useful keys go, so
//! memory stays bounded whatever clients send.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::Rejection;
use crate::config::RateLimitConfig;
use crate::token::TokenId;

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

/// Per-IP failure state: a limiter that each failure draws from, and the
/// time until which the IP is refused outright.
struct FailureState {
    limiter: DefaultDirectRateLimiter,
    blocked_until: Mutex<Option<Instant>>,
}

/// Both limits. A limit configured to 0 is off.
pub(crate) struct Limits {
    per_token: Option<Keyed<TokenId, DefaultDirectRateLimiter>>,
    failures: Option<Keyed<IpAddr, FailureState>>,
}

impl Limits {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_token: Keyed::new(
                "token",
                config.per_token_requests,
                config.per_token_period,
                config.per_token_burst,
                config.max_keys,
            ),
            failures: Keyed::new(
                "failed-auth",
                config.failed_auth_per_ip,
                config.failed_auth_period,
                config.failed_auth_per_ip,
                config.max_keys,
            ),
        }
    }

    /// One request by `token`: allowed, or 429.
    pub(crate) fn check_token(&self, token: TokenId) -> Result<(), Rejection> {
        let Some(limits) = &self.per_token else {
            return Ok(());
        };
        let quota = limits.quota;
        let limiter = limits
            .states
            .get_with(token, || Arc::new(RateLimiter::direct(quota)));
        limiter.check().map_err(|not_until| {
            limits.rejection(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Refuses a client IP that has failed too often, before any work.
    pub(crate) fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Rejection> {
        let (Some(limits), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        let Some(state) = limits.states.get(&ip) else {
            return Ok(());
        };
        let blocked = *state
            .blocked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match blocked {
            Some(until) if until > Instant::now() => Err(limits.rejection(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication from `ip`. Once over the limit, this
    /// and further attempts get 429 until the limiter has room again.
    pub(crate) fn record_failure(&self, ip: Option<IpAddr>) -> Result<(), Rejection> {
        let (Some(limits), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        let quota = limits.quota;
        let state = limits.states.get_with(ip, || {
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
                tracing::info!(%ip, "client IP over the failed-authentication limit");
                Err(limits.rejection(wait))
            }
        }
    }
}
