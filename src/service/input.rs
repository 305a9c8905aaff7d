//! What clients give the service (admin API, CLI, Rust API), and the rules
//! it is checked by: a bad value is [`TokenError::InvalidInput`] naming the
//! field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TokenError;
use crate::service::MAX_GRACE;
use crate::token::{
    AllowError, AllowedIps, MAX_ALLOWED_NETWORKS, MAX_QUOTA, MAX_SCOPES, Meta, Refill, ScopeError,
    Scopes, TokenRateLimit,
};

/// Longest account id, in characters.
pub const MAX_ACCOUNT_ID_CHARS: usize = 128;
/// What an account id may hold besides ASCII letters and digits. The id
/// travels in a header (`X-Account-Id`), a Redis key and a URL path, so
/// nothing in it may be trimmed, folded or split by any of them: no spaces,
/// no commas or quotes, nothing outside ASCII (docs/reference/http-contract.md,
/// "Account ids").
pub const ACCOUNT_ID_SYMBOLS: &str = "-_.:@+=";
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest lifetime a token can be given, in days (about ten years).
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

pub(super) const SECONDS_PER_DAY: i64 = 86_400;

/// A token's own rate limit as a client gave it, checked like
/// `[rate_limit] per_token_*` (a bad one is [`TokenError::InvalidInput`]
/// naming `rate_limit.…`); a `burst` of 0 becomes `requests`.
pub fn rate_limit_input(limit: TokenRateLimit) -> Result<TokenRateLimit, TokenError> {
    if !(1..=MAX_TOKEN_RATE).contains(&limit.requests) {
        return Err(TokenError::input(
            "rate_limit.requests",
            format!("must be between 1 and {MAX_TOKEN_RATE}"),
        ));
    }
    if !(Duration::from_millis(1)..=Duration::from_secs(86_400)).contains(&limit.period) {
        return Err(TokenError::input(
            "rate_limit.period",
            "must be between 1ms and 1day",
        ));
    }
    let burst = if limit.burst == 0 {
        limit.requests
    } else {
        limit.burst
    };
    if burst > MAX_TOKEN_BURST {
        return Err(TokenError::input(
            "rate_limit.burst",
            format!("must be at most {MAX_TOKEN_BURST}"),
        ));
    }
    Ok(TokenRateLimit { burst, ..limit })
}

/// Most requests per period a token's own limit may allow (as
/// `[rate_limit] per_token_requests`).
pub const MAX_TOKEN_RATE: u32 = 1_000_000;
/// Largest burst a token's own limit may allow.
pub const MAX_TOKEN_BURST: u32 = 10_000_000;

/// Scopes a client gave (admin API, CLI), checked: a bad one is
/// [`TokenError::InvalidInput`] naming `scopes` (422 on the admin API).
pub fn scopes_input<I, S>(scopes: I) -> Result<Scopes, TokenError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Scopes::new(scopes).map_err(|e| match e {
        ScopeError::TooMany(n) => {
            TokenError::input("scopes", format!("must be at most {MAX_SCOPES} (got {n})"))
        }
        ScopeError::Syntax(scope) => TokenError::input(
            "scopes",
            format!(
                "must each be 1–64 characters from a-z 0-9 : . _ - with a * only at the end (got {scope:?})"
            ),
        ),
    })
}

/// An IP allowlist a client gave (admin API, CLI), checked: a bad one is
/// [`TokenError::InvalidInput`] naming `allowed_ips` (422 on the admin API).
pub fn allowed_ips_input<I, S>(entries: I) -> Result<AllowedIps, TokenError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    AllowedIps::new(entries).map_err(|e| match e {
        AllowError::TooMany(n) => TokenError::input(
            "allowed_ips",
            format!("must be at most {MAX_ALLOWED_NETWORKS} networks (got {n})"),
        ),
        AllowError::Syntax(entry) => TokenError::input(
            "allowed_ips",
            format!(
                "must each be a CIDR block (203.0.113.0/24, 2001:db8::/32) or an address (got {entry:?})"
            ),
        ),
    })
}

/// Metadata a client gave (admin API, CLI), checked: anything but a JSON
/// object of at most 4 KiB is [`TokenError::InvalidInput`] naming `meta`.
pub fn meta_input(value: serde_json::Value) -> Result<Meta, TokenError> {
    Meta::new(value).map_err(|e| TokenError::input("meta", e.to_string()))
}

/// Most tokens one page of a listing holds.
pub const MAX_PAGE: usize = 1_000;

/// What [`TokenService::update_token`](super::TokenService::update_token) changes; `None` leaves a field as it
/// is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    /// A new label (1–256 characters, no control characters).
    pub name: Option<String>,
    /// New scopes, replacing the old ones (empty: none).
    pub scopes: Option<Scopes>,
    /// A new expiry (unix seconds, in the future, at most 3650 days away);
    /// `Some(None)`: never.
    pub expires_at: Option<Option<i64>>,
    /// Disable (`false`) or enable (`true`) the token.
    pub enabled: Option<bool>,
    /// A new IP allowlist, replacing the old one (empty: any address).
    pub allowed_ips: Option<AllowedIps>,
    /// New metadata, replacing the old (empty: none).
    pub meta: Option<Meta>,
    /// A rate limit of its own (checked by [`rate_limit_input`]);
    /// `Some(None)`: back to the configured one.
    pub rate_limit: Option<Option<TokenRateLimit>>,
    /// A new usage quota, starting a new period now (as
    /// [`TokenService::set_quota`](super::TokenService::set_quota)); `Some(None)`: unlimited.
    pub quota: Option<Option<QuotaParams>>,
}

impl TokenUpdate {
    /// The fields given, by name, as the audit trail records them.
    pub(super) fn given(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("scopes", self.scopes.is_some()),
            ("expires_at", self.expires_at.is_some()),
            ("enabled", self.enabled.is_some()),
            ("allowed_ips", self.allowed_ips.is_some()),
            ("meta", self.meta.is_some()),
            ("rate_limit", self.rate_limit.is_some()),
            ("quota", self.quota.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// A new expiry (unix seconds) is in the future and at most
/// [`MAX_EXPIRES_IN_DAYS`] away.
pub(super) fn check_expires_at(at: i64, now: i64) -> Result<(), TokenError> {
    let latest = now + i64::from(MAX_EXPIRES_IN_DAYS) * SECONDS_PER_DAY;
    if at <= now || at > latest {
        return Err(TokenError::input(
            "expires_at",
            format!(
                "must be in the future and at most {MAX_EXPIRES_IN_DAYS} days away, or null for never (got {at})"
            ),
        ));
    }
    Ok(())
}

/// What [`TokenService::create_token`](super::TokenService::create_token) needs.
#[derive(Debug, Clone, Default)]
pub struct CreateTokenParams {
    /// 1–128 characters, no control characters.
    pub account_id: String,
    /// 1–256 characters, no control characters.
    pub name: String,
    /// 1–3650, or `None` for a token that never expires.
    pub expires_in_days: Option<u32>,
    /// A usage quota, or `None` for unlimited use (docs/reference/quotas.md).
    pub quota: Option<QuotaParams>,
    /// The token's scopes (docs/reference/token-format.md, "Scopes"); none by default.
    pub scopes: Scopes,
    /// The networks the token may be used from; empty (the default): any.
    pub allowed_ips: AllowedIps,
    /// Metadata: a JSON object of at most 4 KiB; empty (the default): none.
    pub meta: Meta,
    /// The token's own rate limit (checked by [`rate_limit_input`]);
    /// `None` (the default): `[rate_limit] per_token_*`.
    pub rate_limit: Option<TokenRateLimit>,
}

/// A usage quota to give a token: `remaining` requests, optionally set back
/// to `refill.amount` every `refill.interval` (docs/reference/quotas.md). In JSON:
/// `{"remaining": 1000, "refill": {"amount": 1000, "interval": "1d"}}`,
/// the interval a duration or `"month"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaParams {
    /// Requests the token may make (until the next refill), up to 10¹².
    pub remaining: u64,
    /// How the quota refills; absent: never.
    #[serde(default)]
    pub refill: Option<Refill>,
}

impl QuotaParams {
    pub(super) fn check(&self) -> Result<(), TokenError> {
        if self.remaining > MAX_QUOTA {
            return Err(TokenError::input(
                "quota.remaining",
                format!("must be at most {MAX_QUOTA}"),
            ));
        }
        if let Some(refill) = self.refill
            && !(1..=MAX_QUOTA).contains(&refill.amount)
        {
            return Err(TokenError::input(
                "quota.refill.amount",
                format!("must be between 1 and {MAX_QUOTA}"),
            ));
        }
        Ok(())
    }
}

/// The rule for account ids and names: 1..=max characters, not blank, no
/// control characters (they break logs, terminals and headers).
pub(super) fn check_text(
    field: &'static str,
    value: &str,
    max_chars: usize,
) -> Result<(), TokenError> {
    if value.trim().is_empty() {
        return Err(TokenError::input(field, "must not be empty"));
    }
    // Counting stops past the limit, so a huge input costs no more than a
    // valid one.
    if value.chars().take(max_chars + 1).count() > max_chars {
        return Err(TokenError::input(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(TokenError::input(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The rule for a new token's account id: 1–128 ASCII letters, digits and
/// [`ACCOUNT_ID_SYMBOLS`]. Lookups by account (list, get, revoke) keep the
/// looser [`check_text`] rule, so records made before it stay reachable.
pub(super) fn check_account_id(value: &str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::input("account_id", "must not be empty"));
    }
    if value.len() > MAX_ACCOUNT_ID_CHARS {
        return Err(TokenError::input(
            "account_id",
            format!("must be at most {MAX_ACCOUNT_ID_CHARS} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || ACCOUNT_ID_SYMBOLS.as_bytes().contains(&b))
    {
        return Err(TokenError::input(
            "account_id",
            format!(
                "may hold only A-Z a-z 0-9 and {ACCOUNT_ID_SYMBOLS} (no spaces or other characters)"
            ),
        ));
    }
    Ok(())
}
/// A rotation's grace period: a duration such as `"24h"`, `"30m"` or
/// `"0"` (revoke the old token at once).
pub fn grace_input(text: &str) -> Result<Duration, TokenError> {
    let grace = if text.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| TokenError::InvalidInput {
            field: "grace",
            reason: format!("must be a duration such as \"24h\", \"30m\" or \"0\" ({e})"),
        })?
    };
    if grace > MAX_GRACE {
        return Err(TokenError::InvalidInput {
            field: "grace",
            reason: format!("must be at most {MAX_EXPIRES_IN_DAYS} days"),
        });
    }
    Ok(grace)
}
