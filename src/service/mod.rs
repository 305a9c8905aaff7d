//! [`TokenService`]: every use case of a token, from its creation to its
//! validation (`manage.rs`, `rotate.rs`, `validate.rs`).
//!
//! The one implementation behind the Rust API, the CLI and the admin
//! HTTP API. It owns the input rules and the validation order; the store only
//! keeps records.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tokengate::TokenError> {
//! use std::sync::Arc;
//! use tokengate::{CreateTokenParams, MemoryStore, TokenService};
//!
//! let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
//! let created = service
//!     .create_token(CreateTokenParams {
//!         account_id: "acme".into(),
//!         name: "ci".into(),
//!         expires_in_days: Some(90),
//!         scopes: Default::default(),
//!         allowed_ips: Default::default(),
//!         meta: Default::default(),
//!         quota: None,
//!         rate_limit: None,
//!     })
//!     .await?;
//! let auth = service.validate_token(created.token.expose_secret()).await?;
//! assert_eq!(auth.account_id, "acme");
//! assert_eq!(auth.token_id, created.info.id);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use self::bcrypt::BcryptGate;
use self::input::check_text;
use crate::audit::{
    Actor, AuditAction, AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE, parse_entry_id,
};
use crate::hashing::{HashKey, HashKind};
use crate::store::{RevocationSink, TokenStore};
use crate::token::TokenId;

mod bcrypt;
mod clock;
mod config;
mod error;
mod input;
mod manage;
mod output;
mod rotate;
#[cfg(test)]
mod tests;
mod validate;

pub use self::bcrypt::default_bcrypt_concurrency;
pub use self::clock::{Clock, SystemClock};
pub use self::config::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST, SecurityConfig};
pub use self::error::TokenError;
pub use self::input::{
    ACCOUNT_ID_SYMBOLS, CreateTokenParams, MAX_ACCOUNT_ID_CHARS, MAX_EXPIRES_IN_DAYS,
    MAX_NAME_CHARS, MAX_PAGE, MAX_TOKEN_BURST, MAX_TOKEN_RATE, QuotaParams, TokenUpdate,
    allowed_ips_input, grace_input, meta_input, rate_limit_input, scopes_input,
};
pub(crate) use self::output::Validated;
pub use self::output::{
    AuthContext, CreatedToken, MAX_GRACE, QuotaInfo, RotatedToken, TokenInfo, TokenStatus,
    UnknownStatus,
};
#[cfg(feature = "server")]
pub(crate) use self::output::{CreatedTokenBody, rotated_json};

/// Token management and validation over a [`TokenStore`]. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    bcrypt_cost: u32,
    hash_kind: HashKind,
    hash_key: Option<Arc<HashKey>>,
    bcrypt_verifications: Arc<AtomicU64>,
    hmac_verifications: Arc<AtomicU64>,
    bcrypt_gate: Arc<BcryptGate>,
    revocation_sinks: Arc<Mutex<Vec<Weak<dyn RevocationSink>>>>,
    /// Who the audit trail says made the changes.
    actor: Actor,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("store", &self.store.kind())
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("hash", &self.hash_kind)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service over `store`, with bcrypt cost 10 and the system clock.
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            hash_kind: HashKind::Bcrypt,
            hash_key: None,
            bcrypt_verifications: Arc::default(),
            hmac_verifications: Arc::default(),
            bcrypt_gate: Arc::new(BcryptGate::new(default_bcrypt_concurrency(), 1_000)),
            revocation_sinks: Arc::default(),
            actor: Actor::library(),
        }
    }

    /// This service, its changes recorded in the audit trail as made by
    /// `actor` (the admin API makes one per request, with the caller's
    /// address).
    #[must_use]
    pub fn acting_as(&self, actor: Actor) -> Self {
        Self {
            actor,
            ..self.clone()
        }
    }

    /// Appends a change to the audit trail. A change has been made when
    /// this runs: a store that fails here loses the entry (logged), not the
    /// change.
    async fn audit(
        &self,
        action: AuditAction,
        token: Option<(&str, TokenId)>,
        changes: serde_json::Map<String, serde_json::Value>,
    ) {
        let entry = AuditEntry {
            id: String::new(),
            at: self.clock.now(),
            actor: self.actor.clone(),
            account_id: token.map(|(account, _)| account.to_owned()),
            token_id: token.map(|(_, id)| id),
            action,
            changes,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(token_id = ?entry.token_id, action = action.as_str(), error = %e, "audit entry lost: the store did not take it");
        }
    }

    /// The audit trail, oldest first (docs/reference/http-contract.md, "Audit log").
    pub async fn read_audit(&self, query: &AuditQuery) -> Result<AuditPage, TokenError> {
        if !(1..=MAX_AUDIT_PAGE).contains(&query.limit) {
            return Err(TokenError::input(
                "limit",
                format!("must be between 1 and {MAX_AUDIT_PAGE}"),
            ));
        }
        if let Some(account) = &query.account {
            check_text("account", account, MAX_ACCOUNT_ID_CHARS)?;
        }
        if let Some(after) = &query.after
            && parse_entry_id(after).is_none()
        {
            return Err(TokenError::input(
                "after",
                "must be the id of an entry (<milliseconds>-<sequence>)",
            ));
        }
        Ok(self.store.read_audit(query).await?)
    }

    /// The bcrypt cost of new tokens.
    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    /// How new tokens are hashed.
    pub fn hash_kind(&self) -> HashKind {
        self.hash_kind
    }

    /// Reads HMAC-SHA256 records made under `key`; new tokens are still
    /// hashed with bcrypt (see [`TokenService::with_hmac`]).
    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(Arc::new(key));
        self
    }

    /// Hashes new tokens with HMAC-SHA256 under `key` (and reads both
    /// kinds): a cache miss costs microseconds instead of a bcrypt verify.
    /// bcrypt records are rehashed the first time they validate.
    pub fn with_hmac(self, key: HashKey) -> Self {
        let mut service = self.with_hash_key(key);
        service.hash_kind = HashKind::HmacSha256;
        service
    }

    /// Bounds bcrypt verification: `concurrency` at once (0: the number of
    /// CPUs), `queue` more waiting; past that, validation fails with
    /// [`TokenError::Overloaded`].
    pub fn with_bcrypt_limits(mut self, concurrency: usize, queue: usize) -> Self {
        let concurrency = if concurrency == 0 {
            default_bcrypt_concurrency()
        } else {
            concurrency
        };
        self.bcrypt_gate = Arc::new(BcryptGate::new(concurrency, queue));
        self
    }

    /// Verifications waiting for a bcrypt slot right now.
    pub fn bcrypt_queue_depth(&self) -> usize {
        self.bcrypt_gate.waiting.load(Ordering::Relaxed)
    }

    /// Registers `sink` to hear of every revocation made through this service
    /// (and its clones), at once. Held weakly: dropping the sink unregisters it.
    pub fn add_revocation_sink(&self, sink: Weak<dyn RevocationSink>) {
        let mut sinks = self
            .revocation_sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(sink);
    }

    /// Sets the bcrypt cost for new tokens (existing hashes keep theirs).
    ///
    /// # Panics
    /// Outside 4–15; configuration checks this before it gets here.
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Self {
        assert!(
            (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost),
            "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST}"
        );
        self.bcrypt_cost = cost;
        self
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, by this service's clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The service for `[security]`: bcrypt cost and limits (checked by
    /// [`SecurityConfig::validate`]; an out-of-range cost panics).
    ///
    /// `hash = "hmac-sha256"` without a key (which validation refuses)
    /// leaves new tokens on bcrypt.
    pub fn from_config(store: Arc<dyn TokenStore>, config: &SecurityConfig) -> Self {
        let service = Self::new(store)
            .with_bcrypt_cost(config.bcrypt_cost)
            .with_bcrypt_limits(config.bcrypt_concurrency, config.bcrypt_queue);
        match (&config.hash_key, config.hash) {
            (Some(key), HashKind::HmacSha256) => service.with_hmac(key.clone()),
            (Some(key), HashKind::Bcrypt) => service.with_hash_key(key.clone()),
            (None, _) => service,
        }
    }

    /// The store behind this service.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// How many bcrypt verifications this service (and its clones) has run.
    pub fn bcrypt_verifications(&self) -> u64 {
        self.bcrypt_verifications.load(Ordering::Relaxed)
    }

    /// How many HMAC-SHA256 verifications this service (and its clones)
    /// has run.
    pub fn hmac_verifications(&self) -> u64 {
        self.hmac_verifications.load(Ordering::Relaxed)
    }

    /// Tells this process's caches that a token was revoked or changed;
    /// other processes hear of it through the store (the Redis events
    /// stream).
    fn tell_sinks(&self, token_id: TokenId, tell: impl Fn(&dyn RevocationSink, TokenId)) {
        let sinks: Vec<_> = self
            .revocation_sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for sink in sinks {
            tell(&*sink, token_id);
        }
    }
}

/// What a creation's audit entry records of the new token.
const CREATED_FIELDS: &[&str] = &[
    "name",
    "scopes",
    "expires_at",
    "enabled",
    "allowed_ips",
    "meta",
    "quota",
    "rate_limit",
];

/// The named fields of a token's JSON (never its hash: [`TokenInfo`] has
/// none), for an audit entry.
fn fields_of(info: &TokenInfo, names: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(mut all) = serde_json::json!(info) else {
        return serde_json::Map::new();
    };
    all.retain(|name, _| names.contains(&name.as_str()));
    all
}
