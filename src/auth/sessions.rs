//! Connections that outlive the request a token admitted: a WebSocket (or
//! any other upgrade) tunnel, a response still streaming, a Layer
//! service's own long-lived work. Each holds a [`TokenWatch`], which ends
//! when the token no longer admits what the connection was opened for
//! (docs/reference/http-contract.md, "Open connections"):
//!
//! - a revocation ends it on receipt, here or from another replica;
//! - any other change (disabled, new scopes, a new allowlist, a new expiry,
//!   a rotation's grace) makes the token's record be read again, and ends
//!   it when the record no longer covers the request's method and path;
//! - its expiry ends it at that second.
//!
//! A watch opened reads the record at once: a change made between the
//! request's check and the watch is not missed. The records of watched
//! tokens are read again every `[cache] ttl` (every `degraded_ttl` while
//! the revocation feed is down); a record the store cannot return then
//! ends the connection when the feed is down (fail closed, as a request
//! would get 503), and is tried again next round while it is up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::service::TokenService;
use crate::store::TokenRecord;
use crate::token::TokenId;

/// Why a watched connection was ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// The token was revoked (or deleted).
    Revoked,
    /// The token was disabled.
    Disabled,
    /// The token expired.
    Expired,
    /// The token no longer holds a scope the request needed.
    InsufficientScope,
    /// The client is outside the token's new IP allowlist.
    IpNotAllowed,
    /// The store could not vouch for the token while the revocation feed
    /// was down.
    Unverified,
    /// The Authenticator was dropped.
    Stopped,
}

impl Ended {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::Unverified => "unverified",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open { expires_at: Option<i64> },
    Ended(Ended),
}

/// One watched connection.
#[derive(Debug)]
struct Entry {
    /// The scopes its request needed.
    needed: Arc<[String]>,
    /// The client, for the token's allowlist.
    client: Option<IpAddr>,
    state: watch::Sender<State>,
    /// The newest read judged (see [`Sessions::seq`]): an older read that
    /// finishes later is not applied over it.
    judged: AtomicU64,
}

impl Entry {
    fn end(&self, why: Ended) {
        self.state.send_if_modified(|state| {
            let open = matches!(state, State::Open { .. });
            if open {
                *state = State::Ended(why);
            }
            open
        });
    }

    /// Ends it unless `record` (read as number `seq`) still admits its
    /// request; else takes the record's expiry.
    fn judge(&self, record: &TokenRecord, now: i64, seq: u64) {
        if self.judged.fetch_max(seq, Ordering::Relaxed) > seq {
            return;
        }
        let why = if record.revoked_at.is_some() {
            Some(Ended::Revoked)
        } else if record.is_expired_at(now) {
            Some(Ended::Expired)
        } else if record.disabled_at.is_some() {
            Some(Ended::Disabled)
        } else if record.scopes.first_missing(&self.needed).is_some() {
            Some(Ended::InsufficientScope)
        } else if !record.allowed_ips.allows(self.client) {
            Some(Ended::IpNotAllowed)
        } else {
            None
        };
        match why {
            Some(why) => self.end(why),
            None => {
                let open = State::Open {
                    expires_at: record.expires_at,
                };
                self.state.send_if_modified(|state| {
                    let changed = matches!(state, State::Open { .. }) && *state != open;
                    if changed {
                        *state = open;
                    }
                    changed
                });
            }
        }
    }
}

type Open = HashMap<TokenId, HashMap<u64, Arc<Entry>>>;

/// The watched connections, by token.
pub(crate) struct Sessions {
    service: TokenService,
    open: Mutex<Open>,
    next_id: AtomicU64,
    /// Numbers the record reads, in the order they start: Redis answers
    /// each key's reads in order, so a later number saw a newer record.
    seq: AtomicU64,
    /// Whether the revocation feed is down.
    feed_down: AtomicBool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// How long a first read that failed waits before it is tried again (then
/// twice as long, up to the patrol's own rounds).
const FIRST_READ_RETRY: Duration = Duration::from_millis(250);

impl Sessions {
    pub(crate) fn new(service: TokenService) -> Self {
        Self {
            service,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            seq: AtomicU64::new(1),
            feed_down: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches `token_id` for a connection whose request needed `needed`
    /// from `client`, the token expiring at `expires_at` as last known,
    /// and reads its record at once (in the background): a change made
    /// before this call, which its events may not have reached, is seen.
    pub(crate) fn open(
        self: &Arc<Self>,
        token_id: TokenId,
        needed: Arc<[String]>,
        client: Option<IpAddr>,
        expires_at: Option<i64>,
    ) -> TokenWatch {
        let (state, receiver) = watch::channel(State::Open { expires_at });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            needed,
            client,
            state,
            judged: AtomicU64::new(0),
        });
        self.lock()
            .entry(token_id)
            .or_default()
            .insert(id, entry.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let sessions = self.clone();
            runtime.spawn(async move { sessions.first_read(token_id, &entry).await });
        }
        TokenWatch {
            sessions: self.clone(),
            token_id,
            id,
            state: receiver,
        }
    }

    /// The first read of a new watch's record: only that watch is judged,
    /// and a read the store fails is tried again soon while the watch
    /// lives (else the next patrol round, up to `cache.ttl` away, would be
    /// the first look).
    async fn first_read(&self, token_id: TokenId, entry: &Entry) {
        let mut wait = FIRST_READ_RETRY;
        loop {
            match self.read(token_id).await {
                Ok((record, seq)) => return self.judge(entry, record.as_ref(), seq),
                Err(e) if self.feed_down.load(Ordering::Relaxed) => {
                    tracing::warn!(token_id = %token_id, error = %e, "cannot check a token with an open connection while the revocation feed is down: ending it");
                    return entry.end(Ended::Unverified);
                }
                Err(e) => {
                    tracing::debug!(token_id = %token_id, error = %e, "cannot check a token with an open connection; trying again");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
            if entry.state.is_closed() {
                return; // the connection is gone
            }
        }
    }

    fn close(&self, token_id: TokenId, id: u64) {
        let mut open = self.lock();
        if let Some(entries) = open.get_mut(&token_id) {
            entries.remove(&id);
            if entries.is_empty() {
                open.remove(&token_id);
            }
        }
    }

    fn entries(&self, token_id: TokenId) -> Vec<Arc<Entry>> {
        self.lock()
            .get(&token_id)
            .map(|entries| entries.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The tokens watched now.
    pub(crate) fn ids(&self) -> Vec<TokenId> {
        self.lock().keys().copied().collect()
    }

    /// `token_id` was revoked: ends its connections now.
    pub(crate) fn revoked(&self, token_id: TokenId) {
        for entry in self.entries(token_id) {
            entry.end(Ended::Revoked);
        }
    }

    /// `token_id` changed otherwise: its record is read again.
    pub(crate) fn changed(self: &Arc<Self>, token_id: TokenId) {
        if !self.lock().contains_key(&token_id) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let sessions = self.clone();
            runtime.spawn(async move { sessions.recheck(token_id).await });
        }
    }

    /// The revocation feed went down (`true`) or caught up.
    pub(crate) fn set_feed_down(&self, down: bool) {
        self.feed_down.store(down, Ordering::Relaxed);
    }

    /// Ends every connection: the Authenticator is gone.
    pub(crate) fn stop(&self) {
        let open = std::mem::take(&mut *self.lock());
        for entry in open.values().flat_map(HashMap::values) {
            entry.end(Ended::Stopped);
        }
    }

    /// Reads `token_id`'s record, numbered.
    async fn read(
        &self,
        token_id: TokenId,
    ) -> Result<(Option<TokenRecord>, u64), crate::store::StoreError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let record = self.service.store().get(token_id).await?;
        Ok((record, seq))
    }

    /// Judges `entry` by a record read as number `seq` (`None`: deleted).
    fn judge(&self, entry: &Entry, record: Option<&TokenRecord>, seq: u64) {
        match record {
            Some(record) => entry.judge(record, self.service.now(), seq),
            None => entry.end(Ended::Revoked),
        }
    }

    /// Reads `token_id`'s record and judges its connections by it; `false`
    /// when the store could not answer.
    async fn recheck(&self, token_id: TokenId) -> bool {
        let read = self.read(token_id).await;
        let entries = self.entries(token_id);
        match read {
            Ok((record, seq)) => {
                for entry in &entries {
                    self.judge(entry, record.as_ref(), seq);
                }
                true
            }
            Err(e) => {
                if self.feed_down.load(Ordering::Relaxed) {
                    tracing::warn!(token_id = %token_id, error = %e, "cannot re-check a token with open connections while the revocation feed is down: ending them");
                    entries.iter().for_each(|e| e.end(Ended::Unverified));
                } else {
                    tracing::debug!(token_id = %token_id, error = %e, "cannot re-check a token with open connections; next round tries again");
                }
                false
            }
        }
    }

    /// Ends the connections of `token_id`: the store could not vouch for it.
    fn unverified(&self, token_id: TokenId) {
        for entry in self.entries(token_id) {
            entry.end(Ended::Unverified);
        }
    }

    /// How long until the service's clock reaches `expires_at` (zero once
    /// it has). The clock counts whole seconds: when it is the system's,
    /// the wait ends as that second begins.
    fn until(&self, expires_at: i64) -> Duration {
        let now = self.service.now();
        let Ok(ahead) = u64::try_from(expires_at.saturating_sub(now)) else {
            return Duration::ZERO;
        };
        if ahead == 0 {
            return Duration::ZERO;
        }
        let whole = Duration::from_secs(ahead);
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let into_second = if i64::try_from(system.as_secs()) == Ok(now) {
            Duration::from_nanos(u64::from(system.subsec_nanos()))
        } else {
            Duration::ZERO
        };
        whole
            .saturating_sub(into_second)
            .max(Duration::from_millis(10))
    }
}

/// The shortest time between two rounds of [`patrol`].
const PATROL_MIN: Duration = Duration::from_millis(250);

/// Re-reads the records of every watched token every `every` (every
/// `degraded` while the revocation feed is down), until the sessions are
/// gone.
pub(crate) async fn patrol(sessions: Weak<Sessions>, every: Duration, degraded: Duration) {
    // `degraded_ttl` may be 0 (trust nothing cached while the feed is
    // down): a round then comes every PATROL_MIN, not in a busy loop.
    let degraded = degraded.max(PATROL_MIN);
    let mut since_full = Duration::ZERO;
    loop {
        tokio::time::sleep(degraded).await;
        since_full += degraded;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        if !sessions.feed_down.load(Ordering::Relaxed) && since_full < every {
            continue;
        }
        since_full = Duration::ZERO;
        let mut ids = sessions.ids().into_iter();
        while let Some(token_id) = ids.next() {
            // The store not answering while the feed is down: the rest
            // cannot be vouched for either, and each read would wait for
            // its timeout.
            if !sessions.recheck(token_id).await && sessions.feed_down.load(Ordering::Relaxed) {
                ids.by_ref().for_each(|id| sessions.unverified(id));
            }
        }
    }
}

/// Watches the token behind a connection that outlives its request
/// ([`crate::Authenticator::watch`]): [`TokenWatch::ended`] completes when
/// the token no longer admits that request, on this replica or any other
/// (docs/reference/http-contract.md, "Open connections"). Dropping it stops watching.
pub struct TokenWatch {
    sessions: Arc<Sessions>,
    token_id: TokenId,
    id: u64,
    state: watch::Receiver<State>,
}

impl std::fmt::Debug for TokenWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenWatch")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

impl TokenWatch {
    /// The token watched.
    pub fn token_id(&self) -> TokenId {
        self.token_id
    }

    /// Why the token no longer admits the request, if it has already
    /// stopped (without waiting).
    pub fn has_ended(&self) -> Option<Ended> {
        match *self.state.borrow() {
            State::Ended(why) => Some(why),
            State::Open { expires_at } => expires_at
                .is_some_and(|at| self.sessions.until(at).is_zero())
                .then_some(Ended::Expired),
        }
    }

    /// Completes when the token no longer admits the request (revoked,
    /// disabled, expired, or without a scope or address it needed), with
    /// why. Cancel-safe: call it again in a `select!` loop.
    pub async fn ended(&mut self) -> Ended {
        loop {
            let state = *self.state.borrow_and_update();
            let expires_at = match state {
                State::Ended(why) => return why,
                State::Open { expires_at } => expires_at,
            };
            let wait = expires_at.map(|at| self.sessions.until(at));
            if wait == Some(Duration::ZERO) {
                return Ended::Expired;
            }
            let expiry = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return Ended::Stopped;
                    }
                }
                () = expiry => {}
            }
        }
    }

    /// [`TokenWatch::ended`], owning the watch (for a body or a task that
    /// holds it).
    #[cfg(feature = "server")]
    pub(crate) async fn into_ended(mut self) -> (TokenId, Ended) {
        let why = self.ended().await;
        (self.token_id, why)
    }
}

impl Drop for TokenWatch {
    fn drop(&mut self) {
        self.sessions.close(self.token_id, self.id);
    }
}

#[cfg(test)]
mod tests;
