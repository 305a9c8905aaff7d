//! What a store tells: revocations and changes made by other processes, and
//! the fleet's share of the rate limits.

use crate::token::{TokenId, TokenRateLimit};

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
/// The store produces remote revocations ([`TokenStore::watch_revocations`](super::TokenStore::watch_revocations));
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
