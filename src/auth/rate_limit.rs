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
use ipnet::Ipv6Net;

use serde::{Deserialize, Serialize};

use super::Rejection;
use crate::settings::{InvalidConfig, in_range, within};
use crate::token::TokenId;

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
    /// Most tokens and IPs tracked by each limiter; idle ones are dropped.
    pub max_keys: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_token_requests: 100,
            per_token_period: Duration::from_secs(1),
            per_token_burst: 200,
            failed_auth_per_ip: 10,
            failed_auth_period: Duration::from_secs(60),
            failed_auth_ipv6_prefix: 64,
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
    /// IPv6 clients are counted per network of this prefix length.
    ipv6_prefix: u8,
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
            ipv6_prefix: config.failed_auth_ipv6_prefix,
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
        let Some(state) = limits.states.get(&bucket(ip, self.ipv6_prefix)) else {
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
        let ip = bucket(ip, self.ipv6_prefix);
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
                tracing::info!(client = %ip, "client IP (or IPv6 network) over the failed-authentication limit");
                Err(limits.rejection(wait))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ipv6_prefix: u8) -> Limits {
        Limits::new(&RateLimitConfig {
            failed_auth_per_ip: 2,
            failed_auth_ipv6_prefix: ipv6_prefix,
            ..RateLimitConfig::default()
        })
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
