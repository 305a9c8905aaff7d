//! `[rate_limit]`: the limits and how they are checked at start-up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{InvalidConfig, in_range, within};

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
