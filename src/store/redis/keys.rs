//! Key names (docs/design/redis-layout.md).

use super::super::LimitKey;

/// Key names (docs/design/redis-layout.md). On a cluster the names carry hash
/// tags: a token's record has its own slot (`{prefix}token:{<id>}`, the
/// braces literal), so records spread over the nodes, and the indexes and
/// the events stream share one slot (`{<prefix>}account:…`), so each write
/// to them is one atomic script.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
    pub(super) cluster: bool,
}

impl Keys {
    pub(super) fn token(&self, id: impl std::fmt::Display) -> String {
        if self.cluster {
            format!("{}token:{{{id}}}", self.prefix)
        } else {
            format!("{}token:{id}", self.prefix)
        }
    }
    pub(super) fn index(&self, name: &str) -> String {
        if self.cluster {
            format!("{{{}}}{name}", self.prefix)
        } else {
            format!("{}{name}", self.prefix)
        }
    }
    pub(super) fn account(&self, account_id: &str) -> String {
        self.index(&format!("account:{account_id}"))
    }
    pub(super) fn expiry(&self) -> String {
        self.index("expiry")
    }
    pub(super) fn events(&self) -> String {
        self.index("events")
    }
    pub(super) fn audit(&self) -> String {
        self.index("audit")
    }
    /// Cluster only: creations under way (id → "{unix seconds}:{account}").
    pub(super) fn pending(&self) -> String {
        self.index("pending")
    }
    pub(super) fn limit(&self, key: &LimitKey) -> String {
        match key {
            LimitKey::Token(id) => format!("{}ratelimit:token:{id}", self.prefix),
            LimitKey::OwnLimit(id, limit) => format!(
                "{}ratelimit:token:{id}:{}-{}-{}",
                self.prefix,
                limit.requests,
                limit.period.as_nanos(),
                limit.burst
            ),
            LimitKey::Account(account) => format!("{}ratelimit:account:{account}", self.prefix),
        }
    }
}
