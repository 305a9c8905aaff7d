//! [`TokenService`]: create, list, get, revoke, validate and clean up tokens.
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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::audit::{
    Actor, AuditAction, AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE, parse_entry_id,
};
use crate::hashing::{
    HASH_KEY_ENV, HashKey, HashKind, KeyError, MIN_HASH_KEY_LEN, StoredHash, verify_hmac,
};
use crate::settings::{InvalidConfig, in_range, invalid};
use crate::store::{
    RecordUpdate, RevocationSink, RevokeOutcome, StoreError, TokenRecord, TokenStore, UpdateOutcome,
};
use crate::token::{
    self, AllowError, AllowedIps, FormatError, MAX_ALLOWED_NETWORKS, MAX_SCOPES, Meta, RandomError,
    ScopeError, Scopes, Token, TokenId,
};
use crate::token::{MAX_QUOTA, Quota, Refill, TokenRateLimit};

/// bcrypt cost used unless configured otherwise.
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// Lowest bcrypt cost accepted (bcrypt's own minimum).
pub const MIN_BCRYPT_COST: u32 = 4;
/// Highest bcrypt cost accepted: 15 already takes seconds per hash, and every
/// cache miss pays it.
pub const MAX_BCRYPT_COST: u32 = 15;
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

const SECONDS_PER_DAY: i64 = 86_400;

/// `[security]`: hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// How new tokens are hashed: `bcrypt` (the default) or `hmac-sha256`
    /// (needs `TOKENGATE_HASH_KEY`). Records of either kind are read, and a
    /// record of the other kind is rehashed the first time its token is
    /// used successfully (docs/reference/token-format.md, "What is stored").
    pub hash: HashKind,
    /// bcrypt cost for new tokens, 4–15. Each step doubles the time of every
    /// hash and of every cache-miss verification.
    pub bcrypt_cost: u32,
    /// bcrypt verifications run at once (0: one less than the CPUs, at
    /// least one). More cannot go faster, only starve the rest of the
    /// process.
    pub bcrypt_concurrency: usize,
    /// Cache misses that may wait for a bcrypt slot; past this they get 503
    /// at once instead of queueing without bound.
    pub bcrypt_queue: usize,
    /// The HMAC key: from `TOKENGATE_HASH_KEY` only (the loader fills it
    /// in), never from the file, and never serialized. With it, HMAC
    /// records are read whatever `hash` says.
    #[serde(skip)]
    pub hash_key: Option<HashKey>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            hash: HashKind::Bcrypt,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            bcrypt_concurrency: 0,
            bcrypt_queue: 1_000,
            hash_key: None,
        }
    }
}

impl SecurityConfig {
    /// Range checks: the bcrypt cost within 4–15, bounded concurrency and
    /// queue; a hash key of at least 32 bytes, and one at all for
    /// `hash = "hmac-sha256"`.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        match &self.hash_key {
            Some(key) if key.len() < MIN_HASH_KEY_LEN => {
                return Err(InvalidConfig::Environment(format!(
                    "{HASH_KEY_ENV} must be at least {MIN_HASH_KEY_LEN} bytes (it has {})",
                    key.len()
                )));
            }
            None if self.hash == HashKind::HmacSha256 => {
                return Err(InvalidConfig::Environment(format!(
                    "[security] hash = \"hmac-sha256\" needs {HASH_KEY_ENV} \
                     (at least {MIN_HASH_KEY_LEN} bytes, in the environment only)"
                )));
            }
            _ => {}
        }
        let cost = self.bcrypt_cost;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(invalid(
                "security.bcrypt_cost",
                format!("{cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST}"),
            ));
        }
        in_range(
            "security.bcrypt_concurrency",
            self.bcrypt_concurrency,
            0,
            1_024,
        )?;
        in_range("security.bcrypt_queue", self.bcrypt_queue, 0, 1_000_000)
    }
}

/// Everything that can go wrong in [`TokenService`], with whose fault it is.
///
/// The variants tell a bad token apart (format, not found, revoked, expired,
/// wrong secret) for logs and metrics; clients are told only that the token is
/// invalid (see [`TokenError::is_invalid_token`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Client: the string is not a well-formed `mk_` token.
    #[error("invalid token format: {0}")]
    InvalidFormat(#[from] FormatError),
    /// Client: no such token (or it belongs to another account).
    #[error("token not found")]
    NotFound,
    /// Client: the token was revoked.
    #[error("token revoked")]
    Revoked,
    /// Client: the token is disabled (it can be enabled again).
    #[error("token disabled")]
    Disabled,
    /// Client: the token has expired.
    #[error("token expired")]
    Expired,
    /// Client: the token was rotated already (to the token named); rotate
    /// that one instead.
    #[error("token already rotated to {0}")]
    AlreadyRotated(TokenId),
    /// Client: the id exists but the secret does not match its hash.
    #[error("token secret does not match")]
    WrongSecret,
    /// Client: a management input breaks a rule; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The parameter at fault (`account_id`, `name`, `expires_in_days`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Store: Redis could not answer. Fail closed: the token is not valid.
    #[error("token store unavailable: {0}")]
    Store(#[from] StoreError),
    /// Server: every bcrypt slot is busy and the wait queue is full; try
    /// again shortly.
    #[error("too many token verifications in progress")]
    Overloaded,
    /// Server: the record's hash is HMAC-SHA256 under a key this process
    /// does not have (`TOKENGATE_HASH_KEY` unset, or another key). Fail
    /// closed: the token is not valid here.
    #[error("cannot check the token's hash: {0}")]
    HashKey(#[from] KeyError),
    /// Server: hashing or randomness failed (bcrypt error, blocking pool gone,
    /// OS RNG failure).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TokenError {
    /// Whether this error means "the presented token is not valid": the cases
    /// a client sees as one generic 401.
    pub fn is_invalid_token(&self) -> bool {
        matches!(
            self,
            Self::InvalidFormat(_)
                | Self::NotFound
                | Self::Revoked
                | Self::Disabled
                | Self::Expired
                | Self::WrongSecret
        )
    }

    fn input(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<RandomError> for TokenError {
    fn from(e: RandomError) -> Self {
        Self::Internal(e.to_string())
    }
}

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

/// What [`TokenService::update_token`] changes; `None` leaves a field as it
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
    /// [`TokenService::set_quota`]); `Some(None)`: unlimited.
    pub quota: Option<Option<QuotaParams>>,
}

/// What [`TokenService::create_token`] needs.
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
    fn check(&self) -> Result<(), TokenError> {
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
    fn from_record(record: TokenRecord, now: i64) -> Self {
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

/// What [`TokenService::rotate_token`] made: the new token (its plaintext
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

/// Bounds bcrypt work: at most `slots` verifications run at once on the
/// blocking pool, at most `queue` more wait, and the rest are refused at
/// once. Without it, a flood of well-formed bad tokens would queue unbounded
/// work and memory behind the blocking pool.
#[derive(Debug)]
struct BcryptGate {
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    queue: usize,
}

impl BcryptGate {
    fn new(slots: usize, queue: usize) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    async fn acquire(&self) -> Result<tokio::sync::SemaphorePermit<'_>, TokenError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(TokenError::Overloaded);
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        permit.map_err(|_| TokenError::Overloaded)
    }
}

/// The default bcrypt concurrency: one less than the CPUs (at least one),
/// so a flood of wrong secrets leaves a core to the cached requests
/// (docs/design/performance.md, "bcrypt flood").
pub fn default_bcrypt_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cpus| usize::from(cpus).saturating_sub(1).max(1))
}

/// The time source, in unix seconds. [`SystemClock`] in production; tests
/// and simulations supply their own to move time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix seconds.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

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

    /// The stored hash of a new token, of the configured kind.
    async fn hash_new(&self, token: &Token) -> Result<String, TokenError> {
        if self.hash_kind == HashKind::HmacSha256
            && let Some(key) = &self.hash_key
        {
            return Ok(key.hash(token.expose_secret()));
        }
        let plaintext = token.expose_secret().to_owned();
        let cost = self.bcrypt_cost;
        blocking(move || bcrypt::hash(plaintext, cost)).await
    }

    /// Creates a token. The returned plaintext exists nowhere else: only
    /// its hash (bcrypt, or HMAC-SHA256 under the server key) is stored.
    pub async fn create_token(
        &self,
        params: CreateTokenParams,
    ) -> Result<CreatedToken, TokenError> {
        check_account_id(&params.account_id)?;
        check_text("name", &params.name, MAX_NAME_CHARS)?;
        if let Some(days) = params.expires_in_days
            && !(1..=MAX_EXPIRES_IN_DAYS).contains(&days)
        {
            return Err(TokenError::input(
                "expires_in_days",
                format!("must be between 1 and {MAX_EXPIRES_IN_DAYS} (got {days})"),
            ));
        }
        if let Some(quota) = &params.quota {
            quota.check()?;
        }
        let rate_limit = params.rate_limit.map(rate_limit_input).transpose()?;
        let token = Token::generate()?;
        let hash = self.hash_new(&token).await?;
        let now = self.clock.now();
        let record = TokenRecord {
            id: token.id(),
            account_id: params.account_id,
            name: params.name,
            hash,
            created_at: now,
            updated_at: now,
            expires_at: params
                .expires_in_days
                .map(|d| now + i64::from(d) * SECONDS_PER_DAY),
            last_accessed: None,
            revoked_at: None,
            quota: params.quota.map(|q| Quota::new(q.remaining, q.refill, now)),
            scopes: params.scopes,
            disabled_at: None,
            allowed_ips: params.allowed_ips,
            meta: params.meta,
            rotated_from: None,
            rotated_to: None,
            rate_limit,
        };
        self.store.insert(&record).await?;
        tracing::info!(token_id = %record.id, account_id = %record.account_id, "token created");
        let info = TokenInfo::from_record(record, now);
        self.audit(
            AuditAction::Create,
            Some((&info.account_id, info.id)),
            fields_of(&info, CREATED_FIELDS),
        )
        .await;
        Ok(CreatedToken { token, info })
    }

    /// The account's tokens, oldest first, without hashes.
    pub async fn list_tokens(&self, account_id: &str) -> Result<Vec<TokenInfo>, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        let now = self.clock.now();
        Ok(self
            .store
            .list_by_account(account_id)
            .await?
            .into_iter()
            .map(|r| TokenInfo::from_record(r, now))
            .collect())
    }

    /// One page of the account's tokens in id order (docs/reference/http-contract.md,
    /// "Listing"): up to `limit` (1–1,000) after the cursor `after`, only
    /// those with `status` if given, and the cursor of the next page
    /// (`None`: no more). Walking from `None` to the end returns every token
    /// that exists throughout exactly once.
    pub async fn list_tokens_page(
        &self,
        account_id: &str,
        after: Option<TokenId>,
        limit: usize,
        status: Option<TokenStatus>,
    ) -> Result<(Vec<TokenInfo>, Option<TokenId>), TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(TokenError::input(
                "limit",
                format!("must be between 1 and {MAX_PAGE} (got {limit})"),
            ));
        }
        let now = self.clock.now();
        let mut tokens = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store
                .list_page(account_id, cursor, limit - tokens.len())
                .await?;
            tokens.extend(
                page.records
                    .into_iter()
                    .map(|r| TokenInfo::from_record(r, now))
                    .filter(|info| status.is_none_or(|s| info.status == s)),
            );
            cursor = page.next;
            if cursor.is_none() || tokens.len() == limit {
                return Ok((tokens, cursor));
            }
        }
    }

    /// One token of the account. Another account's token is `NotFound`.
    pub async fn get_token(
        &self,
        token_id: TokenId,
        account_id: &str,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        match self.store.get(token_id).await? {
            Some(record) if record.account_id == account_id => {
                Ok(TokenInfo::from_record(record, self.clock.now()))
            }
            _ => Err(TokenError::NotFound),
        }
    }

    /// Revokes a token of the account (a soft delete: the record stays until
    /// cleanup) and returns its record. Revoking twice is not an error and
    /// keeps the first `revoked_at`. Another account's token is `NotFound`.
    pub async fn revoke_token(
        &self,
        token_id: TokenId,
        account_id: &str,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        let outcome = self
            .store
            .revoke(token_id, account_id, self.clock.now())
            .await?;
        if outcome == RevokeOutcome::NotFound {
            return Err(TokenError::NotFound);
        }
        self.tell_sinks(token_id, |sink, id| sink.revoked(id));
        let info = self.get_token(token_id, account_id).await?;
        if outcome == RevokeOutcome::Revoked {
            tracing::info!(token_id = %token_id, account_id, "token revoked");
            self.audit(
                AuditAction::Revoke,
                Some((account_id, token_id)),
                fields_of(&info, &["revoked_at"]),
            )
            .await;
        }
        Ok(info)
    }

    /// Sets, replaces or (with `None`) removes the usage quota of a token of
    /// the account, and returns its record. The quota starts a new period
    /// now; credits replicas had leased from the old one are void
    /// (docs/reference/quotas.md).
    pub async fn set_quota(
        &self,
        token_id: TokenId,
        account_id: &str,
        quota: Option<QuotaParams>,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if let Some(quota) = &quota {
            quota.check()?;
        }
        let now = self.clock.now();
        let quota = quota.map(|q| Quota::new(q.remaining, q.refill, now));
        if !self
            .store
            .set_quota(token_id, account_id, quota, now)
            .await?
        {
            return Err(TokenError::NotFound);
        }
        tracing::info!(token_id = %token_id, account_id, quota = quota.map(|q| q.remaining), "token quota set");
        self.tell_sinks(token_id, |sink, id| sink.changed(id));
        let info = self.get_token(token_id, account_id).await?;
        self.audit(
            AuditAction::Update,
            Some((account_id, token_id)),
            fields_of(&info, &["quota"]),
        )
        .await;
        Ok(info)
    }

    /// Changes a token of the account (docs/reference/http-contract.md, "Changing a
    /// token"): the fields given, checked as at creation; never a revoked
    /// token ([`TokenError::Revoked`]). Every replica's cache looks the
    /// token up again (this one at once, others through the events stream).
    pub async fn update_token(
        &self,
        token_id: TokenId,
        account_id: &str,
        update: TokenUpdate,
    ) -> Result<TokenInfo, TokenError> {
        check_account_id(account_id)?;
        if let Some(name) = &update.name {
            check_text("name", name, MAX_NAME_CHARS)?;
        }
        let now = self.clock.now();
        if let Some(Some(at)) = update.expires_at {
            let latest = now + i64::from(MAX_EXPIRES_IN_DAYS) * SECONDS_PER_DAY;
            if at <= now || at > latest {
                return Err(TokenError::input(
                    "expires_at",
                    format!(
                        "must be in the future and at most {MAX_EXPIRES_IN_DAYS} days away, or null for never (got {at})"
                    ),
                ));
            }
        }
        let mut given: Vec<&str> = [
            ("name", update.name.is_some()),
            ("scopes", update.scopes.is_some()),
            ("expires_at", update.expires_at.is_some()),
            ("enabled", update.enabled.is_some()),
            ("allowed_ips", update.allowed_ips.is_some()),
            ("meta", update.meta.is_some()),
            ("rate_limit", update.rate_limit.is_some()),
            ("quota", update.quota.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        let action = match (given.as_slice(), update.enabled) {
            (["enabled"], Some(false)) => AuditAction::Disable,
            (["enabled"], Some(true)) => AuditAction::Enable,
            _ => AuditAction::Update,
        };
        if let Some(Some(quota)) = &update.quota {
            quota.check()?;
        }
        let rate_limit = match update.rate_limit {
            Some(Some(limit)) => Some(Some(rate_limit_input(limit)?)),
            other => other,
        };
        let change = RecordUpdate {
            name: update.name,
            scopes: update.scopes,
            expires_at: update.expires_at,
            disabled_at: update.enabled.map(|enabled| (!enabled).then_some(now)),
            allowed_ips: update.allowed_ips,
            meta: update.meta,
            rate_limit,
            ..RecordUpdate::default()
        };
        let record = match self
            .store
            .update(token_id, account_id, &change, now)
            .await?
        {
            UpdateOutcome::Updated(record) => record,
            UpdateOutcome::Revoked => return Err(TokenError::Revoked),
            UpdateOutcome::NotFound | UpdateOutcome::AlreadyRotated => {
                return Err(TokenError::NotFound);
            }
        };
        // After the record's change, which refused a revoked token: the
        // quota's own script starts its new period. Should it fail, the
        // record's change still reaches the caches and the audit trail.
        let record = match update.quota {
            Some(quota) => {
                let quota = quota.map(|q| Quota::new(q.remaining, q.refill, now));
                let set = match self.store.set_quota(token_id, account_id, quota, now).await {
                    Ok(true) => self.store.get(token_id).await,
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                match set {
                    Ok(Some(record)) => Box::new(record),
                    failed => {
                        self.tell_sinks(token_id, |sink, id| sink.changed(id));
                        let info = TokenInfo::from_record(*record, now);
                        given.retain(|name| *name != "quota");
                        if !given.is_empty() {
                            self.audit(
                                action,
                                Some((account_id, token_id)),
                                fields_of(&info, &given),
                            )
                            .await;
                        }
                        return Err(match failed {
                            Err(e) => e.into(),
                            _ => TokenError::NotFound,
                        });
                    }
                }
            }
            None => record,
        };
        tracing::info!(token_id = %token_id, account_id, enabled = record.disabled_at.is_none(), "token updated");
        self.tell_sinks(token_id, |sink, id| sink.changed(id));
        let info = TokenInfo::from_record(*record, now);
        self.audit(
            action,
            Some((account_id, token_id)),
            fields_of(&info, &given),
        )
        .await;
        Ok(info)
    }

    /// Rotates a token of the account (docs/reference/http-contract.md, "Rotating a
    /// token"): a new token with the same account, name, scopes, metadata,
    /// allowlist, expiry, enabled state and quota, linked both ways with the
    /// old one, which then expires at the earlier of now + `grace` and its
    /// own expiry (never later); a `grace` of 0 revokes it at once. A
    /// revoked, expired or already rotated token cannot be rotated.
    pub async fn rotate_token(
        &self,
        token_id: TokenId,
        account_id: &str,
        grace: Duration,
    ) -> Result<RotatedToken, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if grace > MAX_GRACE {
            return Err(TokenError::input(
                "grace",
                format!("must be at most {MAX_EXPIRES_IN_DAYS} days"),
            ));
        }
        let old = match self.store.get(token_id).await? {
            Some(record) if record.account_id == account_id => record,
            _ => return Err(TokenError::NotFound),
        };
        let now = self.clock.now();
        if old.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if let Some(to) = old.rotated_to {
            return Err(TokenError::AlreadyRotated(to));
        }
        if old.is_expired_at(now) {
            return Err(TokenError::Expired);
        }
        let token = Token::generate()?;
        let mut record = TokenRecord {
            id: token.id(),
            hash: self.hash_new(&token).await?,
            created_at: now,
            updated_at: now,
            last_accessed: None,
            revoked_at: None,
            // The credits left now, refilled on the same schedule: during
            // the grace both tokens draw on their own (docs/reference/quotas.md).
            quota: old.quota.as_ref().map(|q| {
                let q = q.at(now);
                Quota::new(q.remaining, q.refill, q.refilled_at)
            }),
            rotated_from: Some(old.id),
            rotated_to: None,
            ..old.clone()
        };
        self.store.insert(&record).await?;
        // Whole seconds, rounded up: a grace of 500 ms is 1 s, not 0 (which
        // would revoke).
        let grace_secs = i64::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        let link = RecordUpdate {
            rotated_to: Some(record.id),
            expires_by: Some(now.saturating_add(grace_secs)),
            ..RecordUpdate::default()
        };
        let linked = match self.store.update(old.id, account_id, &link, now).await {
            Ok(UpdateOutcome::Updated(linked)) => Ok(*linked),
            Ok(UpdateOutcome::Revoked) => Err(TokenError::Revoked),
            Ok(UpdateOutcome::NotFound) => Err(TokenError::NotFound),
            // Linked to this new token (a retried script that had run, or
            // a reply lost), or to another (a concurrent rotation).
            Ok(UpdateOutcome::AlreadyRotated) | Err(_) => match self.store.get(old.id).await {
                Ok(Some(now_old)) if now_old.rotated_to == Some(record.id) => Ok(now_old),
                Ok(Some(now_old)) if now_old.rotated_to.is_some() => Err(
                    TokenError::AlreadyRotated(now_old.rotated_to.unwrap_or(record.id)),
                ),
                Ok(_) => Err(TokenError::NotFound),
                Err(e) => Err(e.into()),
            },
        };
        let linked = match linked {
            Ok(linked) => linked,
            Err(e) => {
                // The old token changed meanwhile (or the store failed): the
                // new one must not outlive the attempt.
                if let Err(undo) = self.store.revoke(record.id, account_id, now).await {
                    tracing::warn!(token_id = %record.id, error = %undo, "cannot revoke the token of a failed rotation");
                }
                return Err(e);
            }
        };
        // From here the new token exists and is linked: its plaintext is
        // returned whatever fails next (logged), never lost.
        //
        // A change made to the old token while the new one was being made
        // (disabled, scopes narrowed) is carried over.
        let follow = RecordUpdate {
            name: (linked.name != record.name).then(|| linked.name.clone()),
            scopes: (linked.scopes != record.scopes).then(|| linked.scopes.clone()),
            disabled_at: (linked.disabled_at != record.disabled_at).then_some(linked.disabled_at),
            allowed_ips: (linked.allowed_ips != record.allowed_ips)
                .then(|| linked.allowed_ips.clone()),
            meta: (linked.meta != record.meta).then(|| linked.meta.clone()),
            rate_limit: (linked.rate_limit != record.rate_limit).then_some(linked.rate_limit),
            ..RecordUpdate::default()
        };
        if follow != RecordUpdate::default() {
            match self.store.update(record.id, account_id, &follow, now).await {
                Ok(UpdateOutcome::Updated(followed)) => record = *followed,
                other => {
                    tracing::warn!(token_id = %record.id, outcome = ?other.map(|_| ()), "cannot carry a concurrent change over to the rotated token");
                }
            }
        }
        let mut old_record = linked;
        if grace.is_zero() {
            match self.store.revoke(old.id, account_id, now).await {
                Ok(_) => old_record.revoked_at = old_record.revoked_at.or(Some(now)),
                // It expires now anyway (the link set its expiry to now).
                Err(e) => {
                    tracing::warn!(token_id = %old.id, error = %e, "cannot revoke the rotated token; it expires now");
                }
            }
            self.tell_sinks(old.id, |sink, id| sink.revoked(id));
        } else {
            self.tell_sinks(old.id, |sink, id| sink.changed(id));
        }
        tracing::info!(token_id = %old.id, new_token_id = %record.id, account_id, grace_secs, "token rotated");
        let old = TokenInfo::from_record(old_record, now);
        let new = TokenInfo::from_record(record, now);
        let mut fields = fields_of(&new, CREATED_FIELDS);
        fields.insert("rotated_from".to_owned(), serde_json::json!(old.id));
        self.audit(AuditAction::Create, Some((account_id, new.id)), fields)
            .await;
        let mut fields = fields_of(&old, &["rotated_to", "expires_at", "revoked_at"]);
        fields.insert("grace_seconds".to_owned(), grace_secs.into());
        self.audit(AuditAction::Rotate, Some((account_id, old.id)), fields)
            .await;
        Ok(RotatedToken {
            new: CreatedToken { token, info: new },
            old,
        })
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

    /// Checks a presented token: parse (no I/O), one store read by id,
    /// revoked / expired checks, then one verify of the stored hash: bcrypt
    /// on the blocking pool, or HMAC-SHA256 inline. No hash is computed for
    /// a token that fails any earlier step. A record whose hash is not of
    /// the configured kind is rehashed in the background once it validates.
    pub async fn validate_token(&self, presented: &str) -> Result<AuthContext, TokenError> {
        self.validate(presented).await.map(|valid| valid.auth)
    }

    /// As [`TokenService::validate_token`], also returning what caches need.
    pub(crate) async fn validate(&self, presented: &str) -> Result<Validated, TokenError> {
        let id = token::parse(presented)?;
        let record = self.store.get(id).await?.ok_or(TokenError::NotFound)?;
        if record.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if record.is_expired_at(self.clock.now()) {
            return Err(TokenError::Expired);
        }
        if record.disabled_at.is_some() {
            return Err(TokenError::Disabled);
        }
        let stored = StoredHash::parse(&record.hash);
        let kind = stored.kind();
        let matches = match stored {
            StoredHash::Bcrypt(_) => {
                let permit = self.bcrypt_gate.acquire().await?;
                self.bcrypt_verifications.fetch_add(1, Ordering::Relaxed);
                let presented = presented.to_owned();
                let hash = record.hash.clone();
                // bcrypt::verify compares the hashes in constant time.
                let matches = blocking(move || bcrypt::verify(presented, &hash)).await?;
                drop(permit);
                matches
            }
            // Microseconds: inline, no gate (verify_slice compares in
            // constant time).
            StoredHash::Hmac { key_id, mac } => {
                self.hmac_verifications.fetch_add(1, Ordering::Relaxed);
                verify_hmac(self.hash_key.as_deref(), key_id, mac.as_ref(), presented)?
            }
        };
        if !matches {
            return Err(TokenError::WrongSecret);
        }
        if kind != self.hash_kind {
            self.rehash(id, presented, record.hash);
        }
        let auth = AuthContext {
            account_id: record.account_id,
            token_id: id,
            scopes: record.scopes,
            meta: record.meta,
        };
        Ok(Validated {
            auth,
            expires_at: record.expires_at,
            has_quota: record.quota.is_some(),
            allowed_ips: record.allowed_ips,
            rate_limit: record.rate_limit,
        })
    }

    /// Rewrites the stored hash of a token that just validated with the
    /// configured kind, in the background (off the request's path): the
    /// store replaces it only if it is still `old` and the token is not
    /// revoked. Failing is harmless: the next successful use tries again.
    fn rehash(&self, id: TokenId, presented: &str, old: String) {
        let store = self.store.clone();
        let to = self.hash_kind;
        let new = match (to, &self.hash_key) {
            (HashKind::HmacSha256, Some(key)) => Ok(key.hash(presented)),
            (HashKind::HmacSha256, None) => return,
            (HashKind::Bcrypt, _) => Err(presented.to_owned()),
        };
        let (gate, cost) = (self.bcrypt_gate.clone(), self.bcrypt_cost);
        tokio::spawn(async move {
            let new = match new {
                Ok(hash) => hash,
                // Back to bcrypt: a hash's worth of CPU, through the same
                // gate as verifications, so a restart does not queue one
                // per token at once; skipped when the gate is full.
                Err(plaintext) => {
                    let Ok(permit) = gate.acquire().await else {
                        return;
                    };
                    let hashed = blocking(move || bcrypt::hash(plaintext, cost)).await;
                    drop(permit);
                    match hashed {
                        Ok(hash) => hash,
                        Err(e) => {
                            tracing::warn!(token_id = %id, error = %e, "cannot rehash token");
                            return;
                        }
                    }
                }
            };
            match store.replace_hash(id, &old, &new).await {
                Ok(true) => tracing::debug!(token_id = %id, hash = %to, "token rehashed"),
                // Revoked, deleted or rehashed by another replica meanwhile.
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(token_id = %id, error = %e, "cannot rehash token; next use tries again");
                }
            }
        });
    }

    /// Records that a token was used at `at` (unix seconds). Never moves the
    /// stored time backwards.
    pub async fn update_last_accessed(&self, token_id: TokenId, at: i64) -> Result<(), TokenError> {
        Ok(self.store.touch(&[(token_id, at)]).await?)
    }

    /// Deletes, from every index, the tokens that expired or were revoked
    /// more than `retention` ago. Returns how many were deleted.
    pub async fn cleanup_expired(&self, retention: Duration) -> Result<u64, TokenError> {
        let retention = i64::try_from(retention.as_secs())
            .map_err(|_| TokenError::input("retention", "is too long"))?;
        let removed = self
            .store
            .remove_dead(self.clock.now().saturating_sub(retention))
            .await?;
        tracing::info!(removed, "expired and revoked tokens cleaned up");
        let mut fields = serde_json::Map::new();
        fields.insert("removed".to_owned(), removed.into());
        fields.insert("retention_seconds".to_owned(), retention.into());
        self.audit(AuditAction::Cleanup, None, fields).await;
        Ok(removed)
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

/// Runs CPU-bound hashing on tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TokenError::Internal(format!("blocking task failed: {e}")))?
        .map_err(|e| TokenError::Internal(format!("bcrypt: {e}")))
}

/// The rule for account ids and names: 1..=max characters, not blank, no
/// control characters (they break logs, terminals and headers).
fn check_text(field: &'static str, value: &str, max_chars: usize) -> Result<(), TokenError> {
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
fn check_account_id(value: &str) -> Result<(), TokenError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_leaves_a_core_to_cached_requests_by_default() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(default_bcrypt_concurrency(), (cpus - 1).max(1));
    }

    #[test]
    fn account_ids_are_a_safe_set() {
        for good in [
            "acme",
            "org:acme",
            "a.b-c_d",
            "user+tag@example.com",
            "ZW5j=",
            &"a".repeat(128),
        ] {
            assert!(check_account_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " acme",
            "acme ",
            "ac me",
            "\tacme",
            "a,b",
            "a;b",
            "a/b",
            "a\"b",
            "é",
            "a\u{a0}",
            &"a".repeat(129),
        ] {
            let err = check_account_id(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid account_id: "),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn text_rules_name_the_field() {
        assert!(check_text("name", "ok", 4).is_ok());
        assert!(check_text("name", "four", 4).is_ok());
        assert!(check_text("name", "ééééé", 4).is_err());
        for bad in ["", "  ", "a\nb", "tab\there", "nul\0"] {
            let err = check_text("account_id", bad, 10).unwrap_err();
            assert!(err.to_string().starts_with("invalid account_id: "), "{err}");
        }
    }

    #[test]
    fn status_prefers_revoked_over_expired() {
        let record = TokenRecord {
            id: TokenId::from_uuid(uuid::Uuid::nil()),
            account_id: "a".into(),
            name: "n".into(),
            hash: String::new(),
            created_at: 0,
            updated_at: 0,
            expires_at: Some(10),
            last_accessed: None,
            revoked_at: Some(20),
            quota: None,
            scopes: Scopes::default(),
            disabled_at: None,
            allowed_ips: AllowedIps::default(),
            meta: Meta::default(),
            rotated_from: None,
            rotated_to: None,
            rate_limit: None,
        };
        assert_eq!(
            TokenInfo::from_record(record.clone(), 30).status,
            TokenStatus::Revoked
        );
        let active = TokenRecord {
            revoked_at: None,
            quota: None,
            ..record
        };
        assert_eq!(
            TokenInfo::from_record(active.clone(), 9).status,
            TokenStatus::Active
        );
        assert_eq!(
            TokenInfo::from_record(active, 10).status,
            TokenStatus::Expired
        );
    }
}
