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

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Rejection;
use crate::auth::rate_limit::failures::{FailureState, Keyed, bucket};
use crate::auth::rate_limit::gcra::{Active, Gcra, Limiter, Nanos, OwnRefill, Policy};
use crate::store::LimitKey;
use crate::token::{TokenId, TokenRateLimit};

mod config;
mod failures;
mod fleet;
mod gcra;
#[cfg(test)]
mod gcra_tests;
#[cfg(test)]
mod tests;

pub use self::config::RateLimitConfig;
pub(crate) use self::fleet::reconcile;

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
