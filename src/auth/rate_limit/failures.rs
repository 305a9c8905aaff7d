//! The failure limit: failed authentications per client network and per
//! token id, counted locally on every store (`governor`).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ipnet::Ipv6Net;

use super::Rejection;

/// One limiter per key, bounded.
pub(super) struct Keyed<K: Hash + Eq + Send + Sync + 'static, V: Send + Sync + 'static> {
    pub(super) policy: &'static str,
    quota: Quota,
    requests: u32,
    window: Duration,
    pub(super) states: moka::sync::Cache<K, Arc<V>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static, V: Send + Sync + 'static> Keyed<K, V> {
    pub(super) fn new(
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

    pub(super) fn rejection(&self, retry_after: Duration) -> Rejection {
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
pub(super) struct FailureState {
    limiter: DefaultDirectRateLimiter,
    blocked_until: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Keyed<K, FailureState> {
    /// 429 while `key` is over its failure limit.
    pub(super) fn check(&self, key: &K) -> Result<(), Rejection> {
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
    pub(super) fn fail(&self, key: K) -> Result<(), Rejection> {
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

/// The failure limit's key for `ip`: itself for IPv4, its network for IPv6.
/// One IPv6 client usually holds a whole /64 (SLAAC, privacy addresses), so
/// per-address buckets would hand it endless fresh ones.
pub(super) fn bucket(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix).map_or(ip, |net| IpAddr::V6(net.network())),
        v4 => v4,
    }
}
