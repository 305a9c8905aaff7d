//! What the Authenticator is told of token changes, and passes on to its
//! cache, quotas, limits and open connections.

use std::sync::Arc;

use crate::auth::cache::AuthCache;
use crate::auth::quota::Quotas;
use crate::auth::rate_limit::Limits;
use crate::auth::sessions::Sessions;
use crate::store::RevocationSink;
use crate::token;

/// What the Authenticator is told of token changes (by this process, or by
/// others through the store): the cache drops the token, the quotas the
/// credits held for it.
pub(super) struct Changes {
    pub(super) cache: Arc<AuthCache>,
    pub(super) quotas: Arc<Quotas>,
    pub(super) limits: Arc<Limits>,
    pub(super) sessions: Arc<Sessions>,
}

impl RevocationSink for Changes {
    fn revoked(&self, id: token::TokenId) {
        self.cache.revoked(id);
        self.quotas.forget(id);
        self.sessions.revoked(id);
    }
    fn changed(&self, id: token::TokenId) {
        self.cache.changed(id);
        self.quotas.forget(id);
        self.limits.forget_refusals(id);
        self.sessions.changed(id);
    }
    fn unsubscribed(&self) {
        self.cache.unsubscribed();
        self.sessions.set_feed_down(true);
    }
    fn caught_up(&self) {
        self.cache.caught_up();
        self.sessions.set_feed_down(false);
    }
    fn recheck(&self) -> Vec<token::TokenId> {
        let mut ids = self.cache.recheck();
        ids.extend(self.sessions.ids());
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
