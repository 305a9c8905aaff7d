//! A stored token (never its plaintext), what a change sets in it, and what
//! a revocation or a change found.

use std::fmt;

use crate::token::{AllowedIps, Meta, Quota, Scopes, TokenId, TokenRateLimit};

/// A stored token: everything but the plaintext, which is never stored.
///
/// Times are unix seconds. `Debug` redacts the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's id (embedded in the token itself).
    pub id: TokenId,
    /// The account the token acts for.
    pub account_id: String,
    /// A human label ("ci", "billing export").
    pub name: String,
    /// The token's hash: `bcrypt(token)` (`$2b$…`) or
    /// `hmac-sha256$<key id>$<hex>` (docs/reference/token-format.md).
    pub hash: String,
    /// When the token was created.
    pub created_at: i64,
    /// When the record last changed (creation or revocation).
    pub updated_at: i64,
    /// When the token stops being valid; `None` never expires.
    pub expires_at: Option<i64>,
    /// Last successful use, as written by the batched last-accessed updates.
    pub last_accessed: Option<i64>,
    /// When the token was revoked (a soft delete).
    pub revoked_at: Option<i64>,
    /// The usage quota, if the token has one (docs/reference/quotas.md).
    pub quota: Option<Quota>,
    /// What the token may do (docs/reference/token-format.md, "Scopes"); none:
    /// only routes that need no scope.
    pub scopes: Scopes,
    /// When the token was disabled (reversibly, unlike a revocation);
    /// `None`: enabled.
    pub disabled_at: Option<i64>,
    /// The networks the token may be used from; empty: any.
    pub allowed_ips: AllowedIps,
    /// Metadata for the token's owner (a JSON object); empty: none.
    pub meta: Meta,
    /// The token this one replaced by a rotation.
    pub rotated_from: Option<TokenId>,
    /// The token that replaced this one by a rotation (this one then
    /// expires at the end of the grace period).
    pub rotated_to: Option<TokenId>,
    /// The token's own rate limit; `None`: `[rate_limit] per_token_*`.
    pub rate_limit: Option<TokenRateLimit>,
}

impl TokenRecord {
    /// When the token stopped (or will stop) being usable: the earlier of
    /// expiry and revocation. Cleanup counts its retention from here.
    pub fn end_of_life(&self) -> Option<i64> {
        match (self.expires_at, self.revoked_at) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        }
    }

    /// Whether the token has expired at `now`. A token is valid up to, not
    /// including, its `expires_at` second.
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("expires_at", &self.expires_at)
            .field("last_accessed", &self.last_accessed)
            .field("revoked_at", &self.revoked_at)
            .field("quota", &self.quota)
            .field("scopes", &self.scopes)
            .field("disabled_at", &self.disabled_at)
            .field("allowed_ips", &self.allowed_ips)
            .field("meta", &self.meta)
            .field("rotated_from", &self.rotated_from)
            .field("rotated_to", &self.rotated_to)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// What [`TokenStore::revoke`](super::TokenStore::revoke) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The token was active (or expired) and is now revoked.
    Revoked,
    /// The token had been revoked before; its `revoked_at` is unchanged.
    AlreadyRevoked,
    /// No such token for this account.
    NotFound,
}

/// One page of an account's tokens ([`TokenStore::list_page`](super::TokenStore::list_page)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records, in id order.
    pub records: Vec<TokenRecord>,
    /// Where the next page starts (its records' ids come after this one);
    /// `None`: no more.
    pub next: Option<TokenId>,
}

/// Changes to a token's record ([`TokenStore::update`](super::TokenStore::update)); `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordUpdate {
    /// A new label.
    pub name: Option<String>,
    /// New scopes (empty: none).
    pub scopes: Option<Scopes>,
    /// A new expiry; `Some(None)`: never.
    pub expires_at: Option<Option<i64>>,
    /// Disabled since (`Some(Some(at))`), or enabled again (`Some(None)`).
    pub disabled_at: Option<Option<i64>>,
    /// A new IP allowlist (empty: any address).
    pub allowed_ips: Option<AllowedIps>,
    /// New metadata (empty: none).
    pub meta: Option<Meta>,
    /// Expire no later than this (a rotation's grace): an earlier expiry
    /// stays, so a lifetime is never extended.
    pub expires_by: Option<i64>,
    /// A new rate limit of its own; `Some(None)`: the configured one.
    pub rate_limit: Option<Option<TokenRateLimit>>,
    /// The token that replaces this one; refused
    /// ([`UpdateOutcome::AlreadyRotated`]) if one already has.
    pub rotated_to: Option<TokenId>,
}

impl RecordUpdate {
    /// Applies the changes to `record` (the in-memory store, and what the
    /// Redis script does to the HASH).
    pub fn apply(&self, record: &mut TokenRecord, at: i64) {
        if let Some(name) = &self.name {
            record.name.clone_from(name);
        }
        if let Some(scopes) = &self.scopes {
            record.scopes = scopes.clone();
        }
        if let Some(expires_at) = self.expires_at {
            record.expires_at = expires_at;
        }
        if let Some(disabled_at) = self.disabled_at {
            record.disabled_at = disabled_at;
        }
        if let Some(allowed_ips) = &self.allowed_ips {
            record.allowed_ips = allowed_ips.clone();
        }
        if let Some(meta) = &self.meta {
            record.meta = meta.clone();
        }
        if let Some(by) = self.expires_by {
            record.expires_at = Some(record.expires_at.map_or(by, |e| e.min(by)));
        }
        if let Some(to) = self.rotated_to {
            record.rotated_to = Some(to);
        }
        if let Some(rate_limit) = self.rate_limit {
            record.rate_limit = rate_limit;
        }
        record.updated_at = at;
    }
}

/// What [`TokenStore::update`](super::TokenStore::update) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Changed; the record as it is now.
    Updated(Box<TokenRecord>),
    /// Revoked: a revoked token is never changed.
    Revoked,
    /// The change names a successor and the token already has one
    /// (nothing was changed).
    AlreadyRotated,
    /// No such token for this account.
    NotFound,
}
