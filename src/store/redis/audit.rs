//! The audit trail in a Redis stream (docs/design/redis-layout.md, "audit").

use std::collections::HashMap;

use super::RedisStore;
use super::codec::decode_audit;
use crate::audit::{
    AUDIT_MAX_LEN, AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE, parse_entry_id, successor,
};
use crate::store::StoreError;

pub(super) async fn append_audit(store: &RedisStore, entry: &AuditEntry) -> Result<(), StoreError> {
    let changes = serde_json::Value::Object(entry.changes.clone()).to_string();
    let token = entry.token_id.map(|id| id.to_string()).unwrap_or_default();
    let mut xadd = redis::cmd("XADD");
    xadd.arg(store.keys.audit())
        .arg("MAXLEN")
        .arg("~")
        .arg(AUDIT_MAX_LEN)
        .arg("*")
        .arg("at")
        .arg(entry.at)
        .arg("actor")
        .arg(&entry.actor.kind)
        .arg("actor_id")
        .arg(&entry.actor.id)
        .arg("account")
        .arg(entry.account_id.as_deref().unwrap_or_default())
        .arg("token")
        .arg(token)
        .arg("action")
        .arg(entry.action.as_str())
        .arg("changes")
        .arg(changes);
    // Not retried: a second run would be a second entry.
    let _: String = xadd.query_async(&mut store.once.clone()).await?;
    Ok(())
}

pub(super) async fn read_audit(
    store: &RedisStore,
    query: &AuditQuery,
) -> Result<AuditPage, StoreError> {
    // XRANGE in chunks, filtered by account here: an account's entries
    // are spread through the one stream (docs/design/redis-layout.md).
    let empty = AuditPage {
        entries: Vec::new(),
        next: None,
    };
    let mut start = match query.after.as_deref().map(parse_entry_id) {
        None => "-".to_owned(),
        Some(after) => match after.and_then(successor) {
            Some(start) => start,
            None => return Ok(empty),
        },
    };
    let mut entries = Vec::new();
    loop {
        let want = if query.account.is_some() {
            MAX_AUDIT_PAGE
        } else {
            query.limit - entries.len() + 1
        };
        let mut conn = store.conn.clone();
        let chunk: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(store.keys.audit())
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(want)
            .query_async(&mut conn)
            .await?;
        let full = chunk.len() == want;
        for (id, fields) in chunk {
            if entries.len() == query.limit {
                let next = entries.last().map(|e: &AuditEntry| e.id.clone());
                return Ok(AuditPage { entries, next });
            }
            let after = parse_entry_id(&id).and_then(successor);
            let entry = decode_audit(id, &fields)?;
            match after {
                Some(after) => start = after,
                // The last possible id: nothing can follow.
                None => {
                    if query.wants(&entry) && entries.len() < query.limit {
                        entries.push(entry);
                    }
                    return Ok(AuditPage {
                        entries,
                        next: None,
                    });
                }
            }
            if query.wants(&entry) {
                entries.push(entry);
            }
        }
        if !full {
            return Ok(AuditPage {
                entries,
                next: None,
            });
        }
    }
}
