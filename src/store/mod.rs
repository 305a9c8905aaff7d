//! Where token records live: the [`TokenStore`] trait and its two
//! implementations, [`RedisStore`] (production) and [`MemoryStore`] (the
//! embedded default for a single process).
//!
//! A store keeps records and their indexes consistent; it knows nothing of
//! plaintext tokens, bcrypt or input rules, which belong to
//! [`TokenService`](crate::TokenService). The Redis key layout is documented
//! in docs/design/redis-layout.md.

use std::sync::Arc;

use async_trait::async_trait;

use crate::token::TokenId;

#[macro_use]
mod observed;
mod events;
mod memory;
mod record;
mod redis;

pub use self::events::{LimitKey, LimitReport, LimitState, RevocationSink};
pub use self::memory::MemoryStore;
pub use self::observed::{Observed, StoreObserver};
pub use self::record::{Page, RecordUpdate, RevokeOutcome, TokenRecord, UpdateOutcome};
pub use self::redis::{
    DEFAULT_KEY_PREFIX, MAX_KEY_PREFIX_LEN, RedisConfig, RedisStore, check_redis_url, redact_url,
};
use crate::audit::{AuditEntry, AuditPage, AuditQuery};
use crate::token::{Lease, Quota};

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
