//! Where token records live: the [`TokenStore`] trait and its two
//! implementations, [`RedisStore`] (production) and [`MemoryStore`] (the
//! embedded default for a single process).
//!
//! A store keeps records and their indexes consistent; it knows nothing of
//! plaintext tokens, bcrypt or input rules, which belong to
//! [`TokenService`](crate::TokenService). The Redis key layout is documented
//! in docs/redis-layout.md.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::RedisConfig;
use crate::token::TokenId;

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// Opens the store the configuration names: Redis when `[redis] url` is set
/// (connecting, and failing if Redis does not answer), else the embedded
/// in-memory store, which logs a warning.
pub async fn open(config: &RedisConfig) -> Result<Arc<dyn TokenStore>, StoreError> {
    match &config.url {
        Some(url) => {
            let store = RedisStore::connect(url, &config.key_prefix).await?;
            tracing::info!(url = %crate::config::redact_url(url), prefix = %config.key_prefix, "using the Redis token store");
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
    /// `bcrypt(token)`.
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

/// The store could not answer. Whose fault: the store's (or the network's),
/// never the client's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis refused, timed out or could not be reached.
    #[error("redis: {0}")]
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
    /// The token id is already taken (a UUID collision, or a replayed insert).
    #[error("token {0} already exists")]
    Duplicate(TokenId),
}

/// Storage for token records and their indexes.
///
/// Implementations keep the record, the per-account index and the expiry
/// index consistent: every method changes all of them or none.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a new record with its account and expiry index entries, at once.
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError>;

    /// Reads one record by id: a single round trip on Redis.
    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;

    /// All records of one account, oldest first.
    async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes `id` at `at` if it belongs to `account_id`, and announces the
    /// revocation to other replicas.
    async fn revoke(
        &self,
        id: TokenId,
        account_id: &str,
        at: i64,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Records last-accessed times, in one round trip for the whole batch.
    /// A time never moves backwards, and a deleted token is not recreated.
    async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError>;

    /// Deletes every token whose end of life (expiry or revocation, whichever
    /// came first) is at or before `cutoff`, from every index. Returns how
    /// many were deleted.
    async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for logs: `"redis"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// Starts a task that tells `sink` of revocations made by other
    /// processes, and tells it to resync whenever it (re)subscribes, since
    /// messages sent in between are lost. `None` for a store that other
    /// processes cannot share (the in-memory store: the service's own
    /// revocation hook already covers it). The task ends when `sink` is gone.
    fn watch_revocations(
        &self,
        sink: std::sync::Weak<dyn crate::service::RevocationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let _ = sink;
        None
    }
}
