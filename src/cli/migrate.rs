//! `tokengate migrate`: copies every token from one Redis to another (a
//! standalone Redis to a Cluster), then the changes made meanwhile.

use super::args::Output;
use super::print::json_line;
use crate::config::Config;
use crate::store::{RedisStore, TokenStore, redact_url};

/// `tokengate migrate`: every record of the source inserted into the
/// destination as it is (the store's insert writes the record and its
/// indexes in the destination's layout).
pub(super) async fn migrate(
    config: &Config,
    to: &str,
    to_key_prefix: Option<String>,
    output: Output,
) -> Result<String, String> {
    let Some(from) = config.redis.url.as_deref() else {
        return Err("migrate copies from Redis, and no Redis URL is set \
                    (use --redis-url, TOKENGATE_REDIS_URL or [redis] url)"
            .to_owned());
    };
    let destination = crate::store::RedisConfig {
        url: Some(to.to_owned()),
        key_prefix: to_key_prefix.unwrap_or_else(|| config.redis.key_prefix.clone()),
        ..crate::store::RedisConfig::default()
    };
    destination.validate().map_err(|e| format!("--to: {e}"))?;
    if destination.url.as_deref() == Some(from) && destination.key_prefix == config.redis.key_prefix
    {
        return Err("--to is the source itself".to_owned());
    }
    let source = RedisStore::open(&config.redis)
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact_url(from)))?;
    let target = RedisStore::open(&destination)
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", redact_url(to)))?;
    let ids = source.token_ids().await.map_err(|e| e.to_string())?;
    let (mut copied, mut updated) = (0u64, 0u64);
    for &id in &ids {
        // Gone since the scan (cleanup ran): nothing to copy.
        let Some(record) = source.get(id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let failed = |e: crate::store::StoreError| format!("copying token {id}: {e}");
        match target.insert(&record).await {
            Ok(()) => copied += 1,
            Err(crate::store::StoreError::Duplicate(_)) => {
                return Err(format!(
                    "token {id} exists on the destination with another hash: not overwritten"
                ));
            }
            Err(e) => return Err(failed(e)),
        }
        // Copied by an earlier run: bring over what changed since.
        let Some(copy) = target.get(id).await.map_err(failed)? else {
            continue;
        };
        if bring_changes(&target, &record, &copy)
            .await
            .map_err(failed)?
        {
            updated += 1;
        }
    }
    Ok(if output.json {
        json_line(&serde_json::json!({ "copied": copied, "updated": updated }))
    } else {
        format!(
            "Copied {copied} token(s) from {} to {} ({updated} changed since an earlier copy, \
             brought up to date).\n",
            redact_url(from),
            redact_url(to)
        )
    })
}

/// Makes `copy` (on `target`) say what `record` says about revocation,
/// quota and last use; whether anything changed.
async fn bring_changes(
    target: &RedisStore,
    record: &crate::store::TokenRecord,
    copy: &crate::store::TokenRecord,
) -> Result<bool, crate::store::StoreError> {
    let mut changed = false;
    if let (Some(at), None) = (record.revoked_at, copy.revoked_at) {
        target.revoke(record.id, &record.account_id, at).await?;
        changed = true;
    }
    let shown = |q: &Option<crate::token::Quota>| q.map(|q| (q.remaining, q.refill, q.refilled_at));
    if shown(&record.quota) != shown(&copy.quota) {
        let at = record.quota.map_or(record.updated_at, |q| q.refilled_at);
        target
            .set_quota(record.id, &record.account_id, record.quota, at)
            .await?;
        changed = true;
    }
    if let Some(at) = record.last_accessed
        && copy.last_accessed < Some(at)
    {
        target.touch(&[(record.id, at)]).await?;
        changed = true;
    }
    Ok(changed)
}
