//! The validation cache: moka, keyed by SHA-256 of the token, with a
//! per-entry lifetime, single-flight misses, and revocation.
//!
//! Keying by a hash of the whole token (not its id) means a wrong secret for
//! a known id cannot evict or poison the entry of the real token, and the
//! plaintext is never kept. Entries of revoked tokens are refused through a
//! map of recently revoked or changed ids, looked at once on every hit,
//! which also covers a lookup that was in flight when the revocation
//! arrived; an entry verified before its token changed (a quota set) is
//! looked up again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InvalidReason;
use crate::service::AuthContext;
use crate::settings::{InvalidConfig, in_range, within};
use crate::store::RevocationSink;
use crate::token::{AllowedIps, TokenId, TokenRateLimit};

/// `[cache]`: the validation cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a valid token is trusted without asking the store: the
    /// longest a revocation can go unnoticed by a replica that did not get
    /// its event. Never past the token's own expiry.
    #[serde(with = "crate::settings::duration")]
    pub ttl: Duration,
    /// How long a bad token (unknown, wrong secret, revoked, expired) is
    /// remembered, so repeats cost neither a store read nor bcrypt.
    #[serde(with = "crate::settings::duration")]
    pub negative_ttl: Duration,
    /// How long a valid token is trusted while the revocation channel
    /// (the Redis events stream) is down or not answering: revocations made
    /// by other processes cannot arrive then. Capped by `ttl`.
    #[serde(with = "crate::settings::duration")]
    pub degraded_ttl: Duration,
    /// Most entries kept (positive and negative together).
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            degraded_ttl: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

impl CacheConfig {
    /// Range checks: a ttl of 1 s–1 h, a negative ttl no longer than it.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        within(
            "cache.ttl",
            self.ttl,
            Duration::from_secs(1),
            Duration::from_secs(3_600),
        )?;
        within(
            "cache.negative_ttl",
            self.negative_ttl,
            Duration::ZERO,
            self.ttl,
        )?;
        within(
            "cache.degraded_ttl",
            self.degraded_ttl,
            Duration::ZERO,
            Duration::from_secs(3_600),
        )?;
        in_range("cache.max_entries", self.max_entries, 1, 100_000_000)
    }
}

/// What the cache remembers about one token.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// Valid, for at most `lifetime` (capped by the token's own expiry).
    Valid {
        auth: AuthContext,
        lifetime: Duration,
        /// When the store said so (for the shorter trust while the
        /// revocation channel is down).
        verified_at: Instant,
        /// [`AuthCache::epoch`] when the lookup began: one that began
        /// before a recheck may have missed a revocation the recheck was for.
        epoch: u64,
        /// The token has a usage quota: each request spends a credit.
        has_quota: bool,
        /// Where its requests may come from.
        allowed_ips: AllowedIps,
        /// Its expiry, as stored (unix seconds).
        expires_at: Option<i64>,
        /// Its own rate limit, if it has one.
        rate_limit: Option<TokenRateLimit>,
    },
    /// Not valid (remembered for the negative ttl): a well-formed token of
    /// `id` that the store refused when asked at `checked_at`. A change to
    /// the token since (enabled again, a new expiry) makes it ask again.
    Invalid {
        reason: InvalidReason,
        id: TokenId,
        checked_at: Instant,
    },
}

type Key = [u8; 32];

impl Cached {
    /// The token the entry is about.
    fn id(&self) -> TokenId {
        match self {
            Cached::Valid { auth, .. } => auth.token_id,
            Cached::Invalid { id, .. } => *id,
        }
    }
}

struct Lifetimes {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<Key, Arc<Cached>> for Lifetimes {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match &**value {
            Cached::Valid { lifetime, .. } => (*lifetime).min(self.ttl),
            Cached::Invalid { .. } => self.negative_ttl,
        })
    }
}

/// What the cache heard about a token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Revoked,
    /// Changed (its quota set) at this moment: entries verified before it
    /// may carry what no longer holds.
    Changed(Instant),
}

/// The cache and its counters.
pub(crate) struct AuthCache {
    /// Behind an `Arc`: a hit clones a pointer, not the entry (and the
    /// futures that carry it stay small).
    entries: moka::future::Cache<Key, Arc<Cached>>,
    /// Ids revoked or changed within the last ttl: a positive entry for a
    /// revoked one is refused, whenever it was inserted; one for a changed
    /// one is looked up again if it was verified before the change.
    changes: moka::sync::Cache<TokenId, Change>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Whether the revocation channel is up (always, without one).
    subscribed: AtomicBool,
    /// Rechecks so far.
    epoch: AtomicU64,
    /// The entries present when the last recheck collected the ids to ask
    /// the store about: trusted although stamped with an older epoch. Read
    /// only on a hit whose epoch is old, i.e. after a recheck, for one ttl.
    rechecked: std::sync::Mutex<std::collections::HashSet<Key>>,
    /// How long a valid entry is trusted while it is not.
    degraded_ttl: Duration,
}

impl AuthCache {
    pub(crate) fn new(config: &CacheConfig) -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(config.max_entries)
                .expire_after(Lifetimes {
                    ttl: config.ttl,
                    negative_ttl: config.negative_ttl,
                })
                .build(),
            // Twice the ttl: an entry inserted by a lookup that was already in
            // flight when the revocation arrived lives up to one ttl after it.
            changes: moka::sync::Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl * 2)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            subscribed: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            rechecked: std::sync::Mutex::default(),
            degraded_ttl: config.degraded_ttl.min(config.ttl),
        }
    }

    pub(crate) fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The entry for `key`, or the result of `lookup`, run once however many
    /// callers miss on the same key at the same time. Errors are not cached.
    pub(crate) async fn get_or_lookup<L, F, E>(
        &self,
        key: Key,
        lookup: L,
    ) -> Result<Arc<Cached>, Arc<E>>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Cached, E>>,
        E: Send + Sync + 'static,
    {
        let mut hit = self.entries.get(&key).await;
        // One look at the token's recent changes serves both checks below.
        let mut change = hit.as_ref().and_then(|entry| self.change_of(entry));
        if let Some(entry) = &hit
            && (self.distrusted(&key, entry) || changed_since(entry, change))
        {
            Box::pin(self.entries.invalidate(&key)).await;
            hit = None;
        }
        let entry = match hit {
            Some(hit) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                // Boxed: this future is large, and every request's future
                // would otherwise carry (and move) room for it.
                let looked_up = lookup();
                let entry = Box::pin(
                    self.entries
                        .try_get_with(key, async { looked_up.await.map(Arc::new) }),
                )
                .await?;
                change = self.change_of(&entry);
                entry
            }
        };
        if change == Some(Change::Revoked) && matches!(*entry, Cached::Valid { .. }) {
            let revoked = Arc::new(Cached::Invalid {
                reason: InvalidReason::Revoked,
                id: entry.id(),
                checked_at: Instant::now(),
            });
            Box::pin(self.entries.insert(key, revoked.clone())).await;
            return Ok(revoked);
        }
        Ok(entry)
    }

    /// What was heard recently about an entry's token.
    fn change_of(&self, entry: &Cached) -> Option<Change> {
        self.changes.get(&entry.id())
    }

    /// A valid entry older than the degraded ttl while the revocation
    /// channel is down: a revocation made elsewhere meanwhile cannot have
    /// reached us, so ask the store again (one relaxed load on every hit).
    /// Also an entry whose lookup began before the last recheck: the
    /// recheck asks the store about the tokens cached then, not about one
    /// a lookup in flight inserts afterwards from what it read before.
    fn distrusted(&self, key: &Key, entry: &Cached) -> bool {
        match entry {
            Cached::Valid {
                verified_at, epoch, ..
            } => {
                (*epoch != self.epoch.load(Ordering::Relaxed) && !self.was_rechecked(key))
                    || (!self.subscribed.load(Ordering::Relaxed)
                        && verified_at.elapsed() >= self.degraded_ttl)
            }
            Cached::Invalid { .. } => false,
        }
    }

    fn was_rechecked(&self, key: &Key) -> bool {
        self.rechecked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(key)
    }

    /// The current recheck count, to stamp a lookup with when it begins.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

/// An entry the store vouched for (or refused) before its token last
/// changed.
fn changed_since(entry: &Cached, change: Option<Change>) -> bool {
    match (entry, change) {
        (Cached::Valid { verified_at, .. }, Some(Change::Changed(at))) => *verified_at <= at,
        (Cached::Invalid { checked_at, .. }, Some(Change::Changed(at))) => *checked_at <= at,
        _ => false,
    }
}

impl RevocationSink for AuthCache {
    fn revoked(&self, id: TokenId) {
        tracing::debug!(token_id = %id, "dropping revoked token from the cache");
        self.changes.insert(id, Change::Revoked);
    }

    fn changed(&self, id: TokenId) {
        tracing::debug!(token_id = %id, "token changed: its cache entries will be looked up again");
        // A revocation stays a revocation.
        self.changes
            .entry(id)
            .and_upsert_with(|current| match current.map(|c| c.into_value()) {
                Some(Change::Revoked) => Change::Revoked,
                _ => Change::Changed(Instant::now()),
            });
    }

    fn caught_up(&self) {
        if !self.subscribed.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "revocation feed back: cached tokens are trusted for the full ttl again"
            );
        }
    }

    fn recheck(&self) -> Vec<TokenId> {
        let mut rechecked = self
            .rechecked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // First the new epoch: a lookup in flight inserts what it read
        // before a revocation the store is about to be asked about, stamped
        // with the old one, and is trusted only if collected below.
        self.epoch.fetch_add(1, Ordering::Relaxed);
        rechecked.clear();
        let mut ids = Vec::new();
        for (key, entry) in self.entries.iter() {
            if let Cached::Valid { auth, .. } = &*entry {
                rechecked.insert(*key);
                ids.push(auth.token_id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn unsubscribed(&self) {
        if self.subscribed.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                degraded_ttl = ?self.degraded_ttl,
                "revocation channel down: valid tokens are re-checked with the store after the degraded ttl"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(id: TokenId, epoch: u64) -> Cached {
        Cached::Valid {
            auth: AuthContext {
                account_id: "acme".into(),
                token_id: id,
                scopes: Default::default(),
                meta: Default::default(),
            },
            lifetime: Duration::MAX,
            verified_at: Instant::now(),
            epoch,
            has_quota: false,
            allowed_ips: AllowedIps::default(),
            expires_at: None,
            rate_limit: None,
        }
    }

    /// How many lookups `get` ran (0: a hit).
    async fn get(cache: &AuthCache, key: Key, answer: Cached) -> usize {
        let mut lookups = 0;
        let lookup = || {
            lookups += 1;
            async move { Ok::<_, ()>(answer) }
        };
        cache.get_or_lookup(key, lookup).await.unwrap();
        lookups
    }

    #[tokio::test]
    async fn a_recheck_keeps_what_it_checked_and_distrusts_lookups_in_flight() {
        let cache = AuthCache::new(&CacheConfig::default());
        let id = TokenId::from_uuid(uuid::Uuid::from_u128(1));
        let (cached, in_flight) = (AuthCache::key("cached"), AuthCache::key("in flight"));
        assert_eq!(get(&cache, cached, valid(id, cache.epoch())).await, 1);
        // A lookup begins (stamped with the epoch now), then a re-check runs
        // before it inserts what it read.
        let began = cache.epoch();
        assert_eq!(cache.recheck(), vec![id]);
        assert_eq!(get(&cache, in_flight, valid(id, began)).await, 1);
        // The entry the re-check collected stays trusted: a hit, no lookup.
        assert_eq!(get(&cache, cached, valid(id, cache.epoch())).await, 0);
        // The one that was in flight is not: asked again, once.
        assert_eq!(get(&cache, in_flight, valid(id, cache.epoch())).await, 1);
        assert_eq!(get(&cache, in_flight, valid(id, cache.epoch())).await, 0);
    }

    #[tokio::test]
    async fn caught_up_restores_full_trust_without_clearing() {
        let config = CacheConfig {
            degraded_ttl: Duration::ZERO,
            ..CacheConfig::default()
        };
        let cache = AuthCache::new(&config);
        let id = TokenId::from_uuid(uuid::Uuid::from_u128(2));
        let key = AuthCache::key("token");
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 1);
        // Feed down: with a zero degraded ttl, every hit asks the store.
        cache.unsubscribed();
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 1);
        // Back: trusted again, from the cache.
        cache.caught_up();
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 0);
    }

    #[tokio::test]
    async fn a_change_makes_older_entries_look_again_and_a_revocation_stays() {
        let cache = AuthCache::new(&CacheConfig::default());
        let id = TokenId::from_uuid(uuid::Uuid::from_u128(3));
        let key = AuthCache::key("token");
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 1);
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 0);
        // Its quota was set: the entry predates that, so it is read again,
        // once; what is read afterwards is trusted.
        cache.changed(id);
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 1);
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 0);
        // Revoked, then changed: still revoked.
        cache.revoked(id);
        cache.changed(id);
        let entry = cache
            .get_or_lookup(key, || async { Ok::<_, ()>(valid(id, 0)) })
            .await
            .unwrap();
        let Cached::Invalid {
            reason: InvalidReason::Revoked,
            ..
        } = *entry
        else {
            panic!("a change must not undo a revocation");
        };
    }

    #[tokio::test]
    async fn a_change_lifts_a_refusal_cached_before_it() {
        let cache = AuthCache::new(&CacheConfig::default());
        let id = TokenId::from_uuid(uuid::Uuid::from_u128(4));
        let key = AuthCache::key("disabled token");
        let disabled = || Cached::Invalid {
            reason: InvalidReason::Disabled,
            id,
            checked_at: Instant::now(),
        };
        assert_eq!(get(&cache, key, disabled()).await, 1);
        assert_eq!(get(&cache, key, disabled()).await, 0, "remembered");
        // Enabled again: the refusal predates it, so the store is asked.
        cache.changed(id);
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 1);
        assert_eq!(get(&cache, key, valid(id, cache.epoch())).await, 0);
    }
}
