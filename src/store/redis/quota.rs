//! Usage quotas in Redis: credits leased to replicas, given back, and set
//! (docs/reference/quotas.md; the scripts refill.lua, lease.lua, return.lua,
//! set_quota.lua).

use super::{EVENTS_MAX_LEN, RedisStore};
use crate::store::StoreError;
use crate::token::{Lease, Quota, TokenId};

pub(super) async fn lease_credits(
    store: &RedisStore,
    id: TokenId,
    want: u64,
    now: i64,
) -> Result<Option<Lease>, StoreError> {
    let mut invocation = store.lease.prepare_invoke();
    invocation.key(store.keys.token(id)).arg(want).arg(now);
    // Not retried once sent: a lost reply may have handed out credits,
    // and asking again would only lose more of them (never over-spend:
    // see docs/reference/quotas.md). The caller fails closed.
    let reply: Vec<i64> = store
        .retried_if_refused(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    let &[granted, period, next_refill, remaining] = reply.as_slice() else {
        return Ok(None);
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Some(Lease {
        granted: count(granted),
        period: count(period),
        next_refill: (next_refill >= 0).then_some(next_refill),
        remaining: count(remaining),
    }))
}

pub(super) async fn return_credits(
    store: &RedisStore,
    id: TokenId,
    credits: u64,
    period: u64,
) -> Result<(), StoreError> {
    let mut invocation = store.give_back.prepare_invoke();
    invocation
        .key(store.keys.token(id))
        .arg(credits)
        .arg(period);
    // Not retried once sent either: giving back twice would mint credits.
    let _: i64 = store
        .retried_if_refused(|mut conn| {
            let invocation = &invocation;
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    Ok(())
}

pub(super) async fn set_quota(
    store: &RedisStore,
    id: TokenId,
    account_id: &str,
    quota: Option<Quota>,
    at: i64,
) -> Result<bool, StoreError> {
    let mut invocation = store.set_quota.prepare_invoke();
    invocation.key(store.keys.token(id));
    if !store.keys.cluster {
        invocation.key(store.keys.events());
    }
    invocation
        .arg(account_id)
        .arg(id.to_string())
        .arg(EVENTS_MAX_LEN)
        .arg(at);
    if let Some(quota) = quota {
        invocation.arg(quota.remaining);
        match quota.refill {
            Some(refill) => invocation
                .arg(refill.amount)
                .arg(refill.interval.to_field()),
            None => invocation.arg("").arg(""),
        };
    }
    // Retried like a revoke: setting twice starts one more period.
    let found: i64 = store.invoke_retried(&invocation).await?;
    if found == 1 && store.keys.cluster {
        let mut event = redis::cmd("XADD");
        event
            .arg(store.keys.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(EVENTS_MAX_LEN)
            .arg("*")
            .arg("type")
            .arg("quota")
            .arg("id")
            .arg(id.to_string());
        let _: String = event.query_async(&mut store.conn.clone()).await?;
    }
    Ok(found == 1)
}
