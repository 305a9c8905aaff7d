//! What the service answers: a token as people and scripts see it, the
//! identity a valid token carries, created and rotated tokens.

use std::time::Duration;

use serde::Serialize;

use super::MAX_EXPIRES_IN_DAYS;
use crate::store::TokenRecord;
use crate::token::{AllowedIps, Meta, Quota, Refill, Scopes, Token, TokenId, TokenRateLimit};

/// The identity a valid token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthContext {
    /// The account the token acts for.
    pub account_id: String,
    /// The token's id (never the token itself).
    pub token_id: TokenId,
    /// The token's scopes.
    pub scopes: Scopes,
    /// The token's metadata (`{}` for none).
    pub meta: Meta,
}

/// A valid token, with what caches need to know about it.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub(crate) auth: AuthContext,
    /// The cache must not outlive it.
    pub(crate) expires_at: Option<i64>,
    /// Each request must spend one of its credits.
    pub(crate) has_quota: bool,
    /// Where its requests may come from.
    pub(crate) allowed_ips: AllowedIps,
    /// Its own rate limit, if it has one.
    pub(crate) rate_limit: Option<TokenRateLimit>,
}

/// A token's quota as shown to people and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuotaInfo {
    /// Credits left in the store (replicas may hold a few more in leases
    /// not yet spent).
    pub remaining: u64,
    /// How the quota refills, `null` for never.
    pub refill: Option<Refill>,
    /// When the current period started (creation, last refill or change).
    pub refilled_at: i64,
    /// When the next refill comes, `null` for never.
    pub next_refill_at: Option<i64>,
}

impl QuotaInfo {
    fn at(quota: &Quota, now: i64) -> Self {
        let quota = quota.at(now);
        Self {
            remaining: quota.remaining,
            refill: quota.refill,
            refilled_at: quota.refilled_at,
            next_refill_at: quota.next_refill(),
        }
    }
}

/// Where a token stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Usable.
    Active,
    /// Past its `expires_at`.
    Expired,
    /// Revoked (whether or not it has also expired).
    Revoked,
    /// Disabled: refused until enabled again (and not expired).
    Disabled,
}

impl TokenStatus {
    /// Every status, in the order of the docs.
    pub const ALL: [TokenStatus; 4] = [Self::Active, Self::Expired, Self::Revoked, Self::Disabled];

    /// Every status's name, as [`TokenStatus::as_str`] gives it.
    pub const NAMES: [&'static str; 4] = ["active", "expired", "revoked", "disabled"];

    /// `"active"`, `"expired"`, `"revoked"` or `"disabled"`, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
        }
    }
}

/// A name that is not a [`TokenStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be active, expired, revoked or disabled")]
pub struct UnknownStatus;

impl std::str::FromStr for TokenStatus {
    type Err = UnknownStatus;

    /// A status by its name (as in JSON: `"active"`, …).
    fn from_str(name: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or(UnknownStatus)
    }
}

/// A token's record as shown to people and scripts: no hash, no plaintext.
/// Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The token id (hyphenated UUID).
    pub id: TokenId,
    /// The owning account.
    pub account_id: String,
    /// The token's label.
    pub name: String,
    /// Active, expired or revoked, as of the call.
    pub status: TokenStatus,
    /// Creation time.
    pub created_at: i64,
    /// Last change to the record.
    pub updated_at: i64,
    /// Expiry time, `null` for never.
    pub expires_at: Option<i64>,
    /// Last successful use, `null` if never used (or not yet flushed).
    pub last_accessed: Option<i64>,
    /// Revocation time, `null` if not revoked.
    pub revoked_at: Option<i64>,
    /// The usage quota, `null` for unlimited.
    pub quota: Option<QuotaInfo>,
    /// The token's scopes, sorted (`[]` for none).
    pub scopes: Scopes,
    /// Whether the token is enabled (`false`: refused until enabled again).
    pub enabled: bool,
    /// When it was disabled, `null` while enabled.
    pub disabled_at: Option<i64>,
    /// The networks it may be used from (`[]`: any).
    pub allowed_ips: AllowedIps,
    /// Its metadata (`{}`: none).
    pub meta: Meta,
    /// The token it replaced by a rotation, `null` if none.
    pub rotated_from: Option<TokenId>,
    /// The token that replaced it by a rotation, `null` if none.
    pub rotated_to: Option<TokenId>,
    /// Its own rate limit, `null` for the configured one.
    pub rate_limit: Option<TokenRateLimit>,
}

impl TokenInfo {
    pub(super) fn from_record(record: TokenRecord, now: i64) -> Self {
        let status = if record.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if record.is_expired_at(now) {
            TokenStatus::Expired
        } else if record.disabled_at.is_some() {
            TokenStatus::Disabled
        } else {
            TokenStatus::Active
        };
        Self {
            id: record.id,
            account_id: record.account_id,
            name: record.name,
            status,
            created_at: record.created_at,
            updated_at: record.updated_at,
            expires_at: record.expires_at,
            last_accessed: record.last_accessed,
            revoked_at: record.revoked_at,
            quota: record.quota.as_ref().map(|q| QuotaInfo::at(q, now)),
            scopes: record.scopes,
            enabled: record.disabled_at.is_none(),
            disabled_at: record.disabled_at,
            allowed_ips: record.allowed_ips,
            meta: record.meta,
            rotated_from: record.rotated_from,
            rotated_to: record.rotated_to,
            rate_limit: record.rate_limit,
        }
    }
}

/// What [`TokenService::rotate_token`](super::TokenService::rotate_token) made: the new token (its plaintext
/// shown once) and the old one as it is now.
#[derive(Debug, Clone)]
pub struct RotatedToken {
    /// The new token, linked to the old by `rotated_from`.
    pub new: CreatedToken,
    /// The old token: `rotated_to` the new one, expiring at the end of the
    /// grace period (or revoked, for a grace of 0).
    pub old: TokenInfo,
}

/// Longest grace period of a rotation (a rotation never extends a lifetime
/// anyway): the longest lifetime a token can be given.
pub const MAX_GRACE: Duration = Duration::from_secs(MAX_EXPIRES_IN_DAYS as u64 * 86_400);

/// A freshly created token: the only time its plaintext exists.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The plaintext token. Show it once; it cannot be recovered.
    pub token: Token,
    /// The stored record.
    pub info: TokenInfo,
}
/// The rotated-token JSON of the admin API and `tokengate token rotate
/// --json`: the new token as at creation (its plaintext this once) and the
/// old one's record under `old`.
#[cfg(feature = "server")]
pub(crate) fn rotated_json(rotated: &RotatedToken) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(CreatedTokenBody::new(&rotated.new))?;
    value["old"] = serde_json::to_value(&rotated.old)?;
    Ok(value)
}

/// The created-token JSON of the admin API and `tokengate token create
/// --json`: the token's record and, this once, the token itself.
/// No `Debug`: it holds the plaintext token, which must never reach a log.
#[cfg(feature = "server")]
#[derive(Serialize)]
pub(crate) struct CreatedTokenBody<'a> {
    #[serde(flatten)]
    info: &'a TokenInfo,
    token: &'a str,
}

#[cfg(feature = "server")]
impl<'a> CreatedTokenBody<'a> {
    pub(crate) fn new(created: &'a CreatedToken) -> Self {
        Self {
            info: &created.info,
            token: created.token.expose_secret(),
        }
    }
}
