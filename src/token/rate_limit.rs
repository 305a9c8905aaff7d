//! A token's own rate limit (docs/reference/rate-limits.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A token's own rate limit, replacing `[rate_limit] per_token_*` for it
/// (docs/reference/rate-limits.md, "A token's own limit"). In JSON:
/// `{"requests": 10, "period": "1s", "burst": 20}`; a `burst` of 0 (or
/// none) is `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRateLimit {
    /// Requests per `period`, 1 to 1,000,000.
    pub requests: u32,
    /// 1 ms to 1 day.
    #[serde(with = "crate::settings::duration")]
    pub period: Duration,
    /// Requests at once after being idle, 1 to 10,000,000.
    #[serde(default)]
    pub burst: u32,
}

impl TokenRateLimit {
    /// As stored (docs/design/redis-layout.md): `"<requests> <period ns> <burst>"`.
    pub(crate) fn to_field(self) -> String {
        format!(
            "{} {} {}",
            self.requests,
            self.period.as_nanos(),
            self.burst
        )
    }

    pub(crate) fn from_field(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let limit = Self {
            requests: parts.next()?.parse().ok()?,
            period: Duration::from_nanos(parts.next()?.parse().ok()?),
            burst: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(limit)
    }
}
