//! Where token records live: the [`TokenStore`] trait and its two
//! implementations, [`RedisStore`] (production) and [`MemoryStore`] (the
//! embedded default for a single process).
//!
//! A store keeps records and their indexes consistent; it knows nothing of
//! plaintext tokens, bcrypt or input rules, which belong to
//! [`TokenService`](crate::TokenService). The Redis key layout is documented
//! in docs/design/redis-layout.md.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::token::{AllowedIps, Meta, Scopes, TokenId};

#[macro_use]
mod observed;
mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::observed::{Observed, StoreObserver};
pub use self::redis::{
    DEFAULT_KEY_PREFIX, MAX_KEY_PREFIX_LEN, RedisConfig, RedisStore, check_redis_url, redact_url,
};
use crate::audit::{AuditEntry, AuditPage, AuditQuery};
use crate::token::{Lease, Quota, TokenRateLimit};

/// Opens the store the configuration names: Redis when `[redis] url` is set
/// (connecting, and failing if Redis does not answer), else the embedded
/// in-memory store, which logs a warning.
pub async fn open(config: &RedisConfig) -> Result<Arc<dyn TokenStore>, StoreError> {
    match &config.url {
        Some(url) => {
            let store = RedisStore::open(config).await?;
            tracing::info!(url = %redact_url(url), prefix = %config.key_prefix, "using the Redis token store");
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(MemoryStore::new())),
    }
}

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

/// What [`TokenStore::revoke`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The token was active (or expired) and is now revoked.
    Revoked,
    /// The token had been revoked before; its `revoked_at` is unchanged.
    AlreadyRevoked,
    /// No such token for this account.
    NotFound,
}

/// One page of an account's tokens ([`TokenStore::list_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records, in id order.
    pub records: Vec<TokenRecord>,
    /// Where the next page starts (its records' ids come after this one);
    /// `None`: no more.
    pub next: Option<TokenId>,
}

/// Changes to a token's record ([`TokenStore::update`]); `None` leaves a
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

/// What [`TokenStore::update`] found.
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

/// The store could not answer. Whose fault: the store's (or the network's),
/// never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis refused, timed out or could not be reached.
    #[error("redis: {}", one_line(.0))]
    Redis(#[from] ::redis::RedisError),
    /// A record in the store cannot be read back (edited by hand, or written by
    /// an incompatible version).
    #[error("corrupt record for token {id}: field `{field}`")]
    Corrupt {
        /// The token whose record is bad.
        id: String,
        /// The field that is missing or malformed.
        field: &'static str,
    },
    /// A TLS file named by `[redis]` cannot be read.
    #[error("{0}")]
    Tls(String),
    /// The Redis URL cannot be used (caught by config validation first;
    /// this is for the Rust API's `connect`).
    #[error("{0}")]
    Config(String),
    /// The token id is already taken (a UUID collision, or a replayed insert).
    #[error("token {0} already exists")]
    Duplicate(TokenId),
}

/// A Redis error as one line: a reply that is not RESP (the URL points at
/// a web server, an SSH daemon, …) is named as such instead of the
/// parser's multi-line dump.
fn one_line(error: &::redis::RedisError) -> String {
    let text = error.to_string();
    if error.kind() == ::redis::ErrorKind::Parse {
        let first = text.lines().next().unwrap_or_default();
        return format!(
            "unexpected reply, not the Redis protocol (is the URL's port Redis's?): {first}"
        );
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if error.code() == Some("NOAUTH") {
        return format!(
            "{text} (Redis wants a password the URL does not give: \
             redis://:password@host:port, or redis://user:password@host:port)"
        );
    }
    text
}

token_store! {
/// Storage for token records and their indexes.
///
/// Implementations keep the record, the per-account index and the expiry
/// index consistent: every method changes all of them or none.
    pub trait TokenStore {
        /// Stores a new record with its account and expiry index entries, at once.
        async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> => "insert";

        /// Reads one record by id: a single round trip on Redis.
        async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> => "get";

        /// All records of one account, oldest first.
        async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> => "list";

        /// Up to `limit` records of one account whose ids come after `after`,
        /// in id order, and the cursor of the next page (`None`: this was the
        /// last). Every token present throughout a walk is returned exactly
        /// once. This default reads the whole account; the Redis store reads
        /// only the page's records.
        async fn list_page(
            &self,
            account_id: &str,
            after: Option<TokenId>,
            limit: usize,
        ) -> Result<Page, StoreError> => "list" {
            let mut records = self.list_by_account(account_id).await?;
            records.retain(|r| after.is_none_or(|after| r.id > after));
            records.sort_by_key(|r| r.id);
            let next = (records.len() > limit).then(|| records[limit - 1].id);
            records.truncate(limit);
            Ok(Page { records, next })
        }

        /// Revokes `id` at `at` if it belongs to `account_id`, and announces the
        /// revocation to other replicas.
        async fn revoke(
            &self,
            id: TokenId,
            account_id: &str,
            at: i64,
        ) -> Result<RevokeOutcome, StoreError> => "revoke";

        /// Hands out up to `want` credits of the token's quota, refilling it
        /// first if a refill came due at `now`. `None`: no such token, or it
        /// has no quota. Never hands out more than the quota holds, whoever
        /// asks: this is what keeps a fleet from over-spending.
        async fn lease_credits(
            &self,
            id: TokenId,
            want: u64,
            now: i64,
        ) -> Result<Option<Lease>, StoreError> => "lease_credits";

        /// Gives back unused credits of a lease, unless the quota's period has
        /// changed since (a refill or a new quota voids older leases).
        async fn return_credits(
            &self,
            id: TokenId,
            credits: u64,
            period: u64,
        ) -> Result<(), StoreError> => "return_credits";

        /// Sets (or, with `None`, removes) the quota of a token of the account,
        /// starting a new period, and announces the change to other replicas
        /// like a revocation. Returns whether the token was found.
        async fn set_quota(
            &self,
            id: TokenId,
            account_id: &str,
            quota: Option<Quota>,
            at: i64,
        ) -> Result<bool, StoreError> => "set_quota";

        /// Changes the record of a token of the account unless it is revoked,
        /// keeps the expiry index in step, and announces the change to other
        /// replicas like a revocation (their caches look the token up again).
        async fn update(
            &self,
            id: TokenId,
            account_id: &str,
            update: &RecordUpdate,
            at: i64,
        ) -> Result<UpdateOutcome, StoreError> => "update";

        /// Replaces the token's hash with `new` if it is still `old` and the
        /// token is not revoked (a compare-and-set, for rehash on successful
        /// use). Returns whether it was replaced. Nothing else changes, not
        /// even `updated_at`: the token is the same.
        async fn replace_hash(&self, id: TokenId, old: &str, new: &str) -> Result<bool, StoreError> => "replace_hash";

        /// Records last-accessed times, in one round trip for the whole batch.
        /// A time never moves backwards, and a deleted token is not recreated.
        async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError> => "touch";

        /// Deletes every token whose end of life (expiry or revocation, whichever
        /// came first) is at or before `cutoff`, from every index. Returns how
        /// many were deleted.
        async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError> => "remove_dead";

        /// Checks that the store answers.
        async fn ping(&self) -> Result<(), StoreError> => "ping";

        /// Appends `entry` to the audit trail, giving it the next id (its own
        /// `id` is ignored). The trail keeps the latest entries only
        /// ([`AUDIT_MAX_LEN`](crate::audit::AUDIT_MAX_LEN) in Redis).
        async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> => "append_audit";

        /// Entries of the audit trail, oldest first, as `query` says.
        async fn read_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> => "read_audit";

        /// Adds each report's admissions to its fleet-wide limiter and returns
        /// the limiters' states, in order, in one round trip. Only called when
        /// [`TokenStore::shares_limits`].
        async fn reconcile_limits(
            &self,
            reports: &[LimitReport],
        ) -> Result<Vec<LimitState>, StoreError> => "reconcile_limits";
    }
    plain {
        /// A short name for logs: `"redis"` or `"memory"`.
        fn kind(&self) -> &'static str;

        /// Whether other processes share this store, so that rate limits are
        /// counted fleet-wide through [`TokenStore::reconcile_limits`]. (No
        /// default, here and below: a wrapping store must forward them.)
        fn shares_limits(&self) -> bool;

        /// Starts a task that tells `sink` of revocations made by other
        /// processes, including those made while it was disconnected. `None`
        /// for a store that other
        /// processes cannot share (the in-memory store: the service's own
        /// revocation hook already covers it). The task ends when `sink` is gone.
        fn watch_revocations(
            &self,
            sink: std::sync::Weak<dyn RevocationSink>,
        ) -> Option<tokio::task::JoinHandle<()>> {
            let _ = sink;
            None
        }
    }
    observed {
        fn kind(&self) -> &'static str {
            self.inner.kind()
        }

        fn shares_limits(&self) -> bool {
            self.inner.shares_limits()
        }

        fn watch_revocations(
            &self,
            sink: std::sync::Weak<dyn RevocationSink>,
        ) -> Option<tokio::task::JoinHandle<()>> {
            self.inner.watch_revocations(sink)
        }
    }
}

/// What a rate limiter counts: one token's requests, or all of an account's
/// tokens' together (docs/reference/rate-limits.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The per-token limit.
    Token(TokenId),
    /// A token's own limit: counted apart from the configured one, and
    /// afresh when it changes (docs/reference/rate-limits.md, "A token's own limit").
    OwnLimit(TokenId, TokenRateLimit),
    /// The per-account limit.
    Account(String),
}

/// One replica's report on one limiter: what it admitted since its last
/// report, and the limit's shape (so the store needs no configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReport {
    /// Which limiter.
    pub key: LimitKey,
    /// Requests this replica admitted since its previous report.
    pub admitted: u64,
    /// The limit's emission interval (period / requests), in microseconds.
    pub interval_us: f64,
    /// How far ahead of now the limiter may run (burst × interval), in
    /// microseconds.
    pub tolerance_us: f64,
    /// The time over which the admissions were made (since this replica's
    /// previous report), in microseconds.
    pub window_us: f64,
}

/// A limiter's fleet-wide state, once a report is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// How far the fleet's theoretical arrival time is ahead of now, in
    /// microseconds (0: the limiter has room for its whole burst).
    pub ahead_us: u64,
    /// Requests counted on this limiter by the whole fleet since its key was
    /// created (it expires once the limiter is full again).
    pub counted: u64,
}

/// Told when a token is revoked, so it can drop what it cached about it.
/// The store produces remote revocations ([`TokenStore::watch_revocations`]);
/// the service (its own revocations) and the Authenticator's cache consume
/// them.
pub trait RevocationSink: Send + Sync + 'static {
    /// `id` was revoked (here, or by another process).
    fn revoked(&self, id: TokenId);
    /// `id` changed otherwise (its quota was set): what is cached about it
    /// must be read again.
    fn changed(&self, id: TokenId) {
        let _ = id;
    }
    /// The feed of other processes' revocations is down (lost, or not
    /// answering) until the next [`RevocationSink::caught_up`]: trust what
    /// is cached for less long.
    fn unsubscribed(&self) {}
    /// The feed is up again, and every revocation made meanwhile has been
    /// delivered: trust the cache as before.
    fn caught_up(&self) {}
    /// Revocations may have been lost (the feed's history no longer reaches
    /// back to where this reader was): the ids of the tokens cached now,
    /// which the store then checks one by one, calling
    /// [`RevocationSink::revoked`] for each that is revoked or gone. A
    /// lookup already in flight must not be trusted after this call.
    fn recheck(&self) -> Vec<TokenId> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host"),
            "redis://user:***@host"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact_url("rediss://user:s3cret@host:6380"),
            "rediss://user:***@host:6380"
        );
        // A password with an unencoded `@` or `:` is still hidden whole.
        assert_eq!(redact_url("redis://:s3@c:ret@host"), "redis://:***@host");
        assert_eq!(
            redact_url("redis+sentinel://user:s3cret@h1:26379,h2:26379/mymaster/2"),
            "redis+sentinel://user:***@h1:26379,h2:26379/mymaster/2"
        );
        assert_eq!(
            redact_url("redis+sentinel://:s3cret@h1/mymaster"),
            "redis+sentinel://:***@h1/mymaster"
        );
        assert_eq!(
            redact_url("redis+sentinel://h1:26379,h2:26379/mymaster"),
            "redis+sentinel://h1:26379,h2:26379/mymaster"
        );
        assert_eq!(
            redact_url("redis+cluster://app:s3cret@h1:7000,h2:7001"),
            "redis+cluster://app:***@h1:7000,h2:7001"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret&user=u"),
            "redis+unix:///run/redis.sock?db=1&pass=***&user=u"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock?pass=s3cret"),
            "unix:///run/redis.sock?pass=***"
        );
    }

    #[test]
    fn sentinel_urls_are_checked_without_connecting() {
        let config = |url: &str| RedisConfig {
            url: Some(url.to_owned()),
            ..RedisConfig::default()
        };
        for url in [
            "redis+sentinel://127.0.0.1:1/m",
            "redis+sentinel://user:s3cret@h1:26379,h2/mymaster/2",
        ] {
            config(url).validate().unwrap();
        }
        let err = config("redis+sentinel://:s3cret@h1:26379")
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key redis.url: not a usable Sentinel URL (redis+sentinel://:***@h1:26379): \
             no master name: redis+sentinel://host:26379[,host:port…]/mastername[/db]"
        );
        let err = config("rediss+sentinel://h1/m")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not supported"), "{err}");
    }

    #[test]
    fn cluster_urls_and_prefixes_are_checked_without_connecting() {
        let config = |url: &str, prefix: &str| RedisConfig {
            url: Some(url.to_owned()),
            key_prefix: prefix.to_owned(),
            ..RedisConfig::default()
        };
        config("redis+cluster://u:s3cret@h1:7000,h2:7001", "tokengate:")
            .validate()
            .unwrap();
        let err = config("redis+cluster://:s3cret@h1:7000/2", "tokengate:")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key redis.url: not a usable Redis Cluster URL (redis+cluster://:***@h1:7000/2)"), "{err}");
        let err = config("redis+cluster://h1:7000", "{tg}:")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.key_prefix") && err.contains("hash tag"),
            "{err}"
        );
        // Braces are fine on one Redis.
        config("redis://h1:6379", "{tg}:").validate().unwrap();
    }
}
