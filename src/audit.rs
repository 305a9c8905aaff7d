//! The audit trail: every change made through `TokenService`
//! (docs/reference/http-contract.md, "Audit log"; docs/design/redis-layout.md, "audit").
//!
//! An entry says when, who (the [`Actor`]), which account and token, what
//! (the [`AuditAction`]) and the fields it set. It never holds a token, a
//! secret or a hash: only ids and the fields a person chose.

use serde::{Deserialize, Serialize};

use crate::token::TokenId;

/// Entries the Redis stream keeps (`XADD … MAXLEN ~`: a little more
/// between trims).
pub const AUDIT_MAX_LEN: usize = 100_000;
/// Entries the in-memory store keeps (the oldest go first).
pub const MEMORY_AUDIT_LEN: usize = 10_000;
/// Most entries one read returns.
pub const MAX_AUDIT_PAGE: usize = 1_000;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `admin-api`, `cli` or `library` (a program using the Rust API).
    pub kind: String,
    /// The admin API caller's address, the CLI's OS user; empty for the
    /// library.
    pub id: String,
}

impl Actor {
    /// A caller of the admin API, by its address.
    pub fn admin_api(address: std::net::SocketAddr) -> Self {
        Self {
            kind: "admin-api".to_owned(),
            id: address.to_string(),
        }
    }

    /// The `tokengate` CLI, run by `user`.
    pub fn cli(user: &str) -> Self {
        Self {
            kind: "cli".to_owned(),
            // Bounded and printable, whatever the environment says.
            id: user.chars().filter(|c| !c.is_control()).take(64).collect(),
        }
    }

    /// A program using [`crate::TokenService`] directly (the default).
    pub fn library() -> Self {
        Self {
            kind: "library".to_owned(),
            id: String::new(),
        }
    }
}

impl Default for Actor {
    fn default() -> Self {
        Self::library()
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A token was created (also the new token of a rotation).
    Create,
    /// Fields of a token changed (name, scopes, expiry, quota, …).
    Update,
    /// A token was disabled (and nothing else changed).
    Disable,
    /// A token was enabled again (and nothing else changed).
    Enable,
    /// A token was rotated: `changes.rotated_to` names its successor.
    Rotate,
    /// A token was revoked.
    Revoke,
    /// Dead tokens were deleted: `changes.removed` says how many.
    Cleanup,
}

impl AuditAction {
    /// As in JSON and in the Redis stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Disable => "disable",
            Self::Enable => "enable",
            Self::Rotate => "rotate",
            Self::Revoke => "revoke",
            Self::Cleanup => "cleanup",
        }
    }

    /// The action named `name` ([`AuditAction::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Create,
            Self::Update,
            Self::Disable,
            Self::Enable,
            Self::Rotate,
            Self::Revoke,
            Self::Cleanup,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }
}

/// One entry of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the trail, `<milliseconds>-<sequence>` as a Redis
    /// stream id; the `after` cursor of the next read.
    pub id: String,
    /// When (unix seconds).
    pub at: i64,
    /// Who.
    pub actor: Actor,
    /// The token's account; `null` for a cleanup.
    pub account_id: Option<String>,
    /// The token; `null` for a cleanup.
    pub token_id: Option<TokenId>,
    /// What.
    pub action: AuditAction,
    /// The fields the change set, as the token's JSON shows them.
    pub changes: serde_json::Map<String, serde_json::Value>,
}

/// Whether `id` is a stream id (`<milliseconds>-<sequence>`), as an
/// `after` cursor must be; parsed for ordering.
pub fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    if ms.is_empty() || seq.is_empty() || ms.len() > 20 || seq.len() > 20 {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The smallest entry id after `(ms, seq)`, as text: where a read after it
/// starts (XRANGE's exclusive `(` start needs Redis 6.2). `None` past the
/// largest possible id.
pub(crate) fn successor((ms, seq): (u64, u64)) -> Option<String> {
    match (seq.checked_add(1), ms.checked_add(1)) {
        (Some(seq), _) => Some(format!("{ms}-{seq}")),
        (None, Some(ms)) => Some(format!("{ms}-0")),
        (None, None) => None,
    }
}

/// One page of the trail, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The `after` of the next page; `null`: none yet.
    pub next: Option<String>,
}

/// What to read: entries after `after` (exclusive), of `account` if given,
/// at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this account's entries.
    pub account: Option<String>,
    /// Start after this entry id.
    pub after: Option<String>,
    /// Most entries (1–1,000).
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `entry` is one this query wants (account only; `after` and
    /// `limit` are the reader's).
    pub fn wants(&self, entry: &AuditEntry) -> bool {
        self.account
            .as_deref()
            .is_none_or(|a| entry.account_id.as_deref() == Some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_stream_ids() {
        assert_eq!(
            parse_entry_id("1700000000000-0"),
            Some((1_700_000_000_000, 0))
        );
        for bad in ["", "-", "1-", "-1", "1", "a-1", "1-b", "1-2-3", "+", "(1-0"] {
            assert_eq!(parse_entry_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_start_just_after_an_entry() {
        assert_eq!(successor((5, 0)).as_deref(), Some("5-1"));
        assert_eq!(successor((5, u64::MAX)).as_deref(), Some("6-0"));
        assert_eq!(successor((u64::MAX, u64::MAX)), None);
    }

    #[test]
    fn actions_round_trip_and_actors_are_bounded() {
        for name in [
            "create", "update", "disable", "enable", "rotate", "revoke", "cleanup",
        ] {
            assert_eq!(
                AuditAction::parse(name).map(AuditAction::as_str),
                Some(name)
            );
        }
        assert_eq!(AuditAction::parse("delete"), None);
        let actor = Actor::cli(&format!("a\nb{}", "x".repeat(100)));
        assert_eq!(actor.id.chars().count(), 64);
        assert!(!actor.id.contains('\n'));
    }
}
