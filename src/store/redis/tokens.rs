//! The token operations of the Redis store: the [`TokenStore`] methods,
//! each a script or a pipeline (docs/design/redis-layout.md).

use std::collections::HashMap;
use std::sync::Weak;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::codec::{decode, encode};
use super::scripts::{LIMIT_LUA, TOUCH_LUA};
use super::watch::watch;
use super::{EVENTS_MAX_LEN, RedisStore, audit, cleanup, each_cmd, each_script, quota, unix_now};
use crate::audit::{AuditEntry, AuditPage, AuditQuery};
use crate::store::{
    LimitReport, LimitState, Page, RecordUpdate, RevocationSink, RevokeOutcome, StoreError,
    TokenRecord, TokenStore, UpdateOutcome,
};
use crate::token::{Lease, Quota, TokenId, TokenRateLimit};

impl RedisStore {
    /// The ids in the account's index. Ids that do not parse cannot be
    /// ours: skipped rather than failing the whole listing.
    async fn account_ids(&self, account_id: &str) -> Result<Vec<TokenId>, StoreError> {
        let account = self.keys.account(account_id);
        let members: Vec<String> = self
            .retried(|mut conn| {
                let account = &account;
                async move { conn.smembers(account).await }
            })
            .await?;
        Ok(members.iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// The records of `ids` that exist and are the account's, in the order
    /// of `ids`, in one pipelined round trip.
    async fn account_records(
        &self,
        account_id: &str,
        ids: &[TokenId],
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let reads = ids
            .iter()
            .map(|&id| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.keys.token(id));
                cmd
            })
            .collect();
        let all: Vec<HashMap<String, String>> = each_cmd(self.conn.clone(), reads).await?;
        let mut records = Vec::with_capacity(ids.len());
        for (&id, fields) in ids.iter().zip(all) {
            // Skipped: an id whose record is gone, or (after an interrupted
            // creation on a cluster, until cleanup) another account's.
            if let Some(record) = decode(id, &fields)?
                && record.account_id == account_id
            {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let id = record.id.to_string();
        let cluster = self.keys.cluster;
        // The expiry index holds the end of life: the expiry for a new
        // token, or an earlier revocation for one copied by `migrate`.
        let expires = record
            .end_of_life()
            .map(|e| e.to_string())
            .unwrap_or_default();
        if cluster {
            // Indexes first: an id listed without a record is skipped by
            // list, and cleanup finishes or undoes a pending creation.
            let mut pending = self.pending.prepare_invoke();
            pending
                .key(self.keys.pending())
                .key(self.keys.account(&record.account_id))
                .arg(&id)
                // When the creation began, by this machine's clock (not the
                // record's created_at: `migrate` copies old records).
                .arg(format!("{}:{}", unix_now(), record.account_id));
            let _: i64 = self.invoke_retried(&pending).await?;
        }
        let mut invocation = self.insert.prepare_invoke();
        invocation.key(self.keys.token(record.id));
        if !cluster {
            invocation
                .key(self.keys.account(&record.account_id))
                .key(self.keys.expiry());
        }
        invocation.arg(&id).arg(&expires);
        for (field, value) in encode(record) {
            invocation.arg(field).arg(value);
        }
        let created: i64 = self.invoke_retried(&invocation).await?;
        // A first try whose reply was lost may have created it: ours if the
        // hash is ours (a bcrypt hash is salted: no other insert has it).
        let ours = created == 1 || {
            let stored: Option<String> = self
                .conn
                .clone()
                .hget(self.keys.token(record.id), "hash")
                .await?;
            stored.as_deref() == Some(record.hash.as_str())
        };
        if !ours {
            // On a cluster the pending entry stays: cleanup sees the record
            // is another account's and takes the id out of this one's index.
            return Err(StoreError::Duplicate(record.id));
        }
        if cluster {
            let mut commit = self.commit.prepare_invoke();
            commit
                .key(self.keys.pending())
                .key(self.keys.expiry())
                .arg(&id)
                .arg(&expires);
            let _: i64 = self.invoke_retried(&commit).await?;
        }
        Ok(())
    }

    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.keys.token(id);
        let fields: HashMap<String, String> = self
            .retried(|mut conn| {
                let key = &key;
                async move { conn.hgetall(key).await }
            })
            .await?;
        decode(id, &fields)
    }

    async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let ids = self.account_ids(account_id).await?;
        let mut records = self.account_records(account_id, &ids).await?;
        records.sort_by_key(|r| (r.created_at, r.id));
        Ok(records)
    }

    async fn list_page(
        &self,
        account_id: &str,
        after: Option<TokenId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        // Only the ids (36 bytes each) are read for the whole account; the
        // records only for the page.
        let mut ids = self.account_ids(account_id).await?;
        ids.retain(|id| after.is_none_or(|after| *id > after));
        ids.sort_unstable();
        let mut records = Vec::with_capacity(limit.min(ids.len()));
        let mut consumed = 0;
        while records.len() < limit && consumed < ids.len() {
            let batch = &ids[consumed..ids.len().min(consumed + limit - records.len())];
            records.extend(self.account_records(account_id, batch).await?);
            consumed += batch.len();
        }
        let next = (consumed < ids.len()).then(|| ids[consumed - 1]);
        Ok(Page { records, next })
    }

    async fn revoke(
        &self,
        id: TokenId,
        account_id: &str,
        at: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        let cluster = self.keys.cluster;
        let mut invocation = self.revoke.prepare_invoke();
        invocation.key(self.keys.token(id));
        if !cluster {
            invocation.key(self.keys.expiry()).key(self.keys.events());
        }
        invocation
            .arg(account_id)
            .arg(at)
            .arg(id.to_string())
            .arg(EVENTS_MAX_LEN);
        // Retried like a read: a second run finds it revoked and appends again.
        let (outcome, end_of_life): (i64, i64) = self.invoke_retried(&invocation).await?;
        if outcome != 0 && cluster {
            // The record is revoked; now its index entry and the event. Were
            // this to fail, revoking again would do it (revoke is
            // idempotent), and every replica's cache forgets the token
            // within [cache] ttl anyway.
            let mut index = self.revoke_index.prepare_invoke();
            index
                .key(self.keys.expiry())
                .key(self.keys.events())
                .arg(end_of_life)
                .arg(id.to_string())
                .arg(EVENTS_MAX_LEN);
            let _: i64 = self.invoke_retried(&index).await?;
        }
        Ok(match outcome {
            1 => RevokeOutcome::Revoked,
            2 => RevokeOutcome::AlreadyRevoked,
            _ => RevokeOutcome::NotFound,
        })
    }

    async fn lease_credits(
        &self,
        id: TokenId,
        want: u64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        quota::lease_credits(self, id, want, now).await
    }
    async fn return_credits(
        &self,
        id: TokenId,
        credits: u64,
        period: u64,
    ) -> Result<(), StoreError> {
        quota::return_credits(self, id, credits, period).await
    }

    async fn set_quota(
        &self,
        id: TokenId,
        account_id: &str,
        quota: Option<Quota>,
        at: i64,
    ) -> Result<bool, StoreError> {
        quota::set_quota(self, id, account_id, quota, at).await
    }
    async fn update(
        &self,
        id: TokenId,
        account_id: &str,
        update: &RecordUpdate,
        at: i64,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut invocation = self.update.prepare_invoke();
        invocation.key(self.keys.token(id));
        if !self.keys.cluster {
            invocation.key(self.keys.expiry()).key(self.keys.events());
        }
        invocation
            .arg(account_id)
            .arg(id.to_string())
            .arg(EVENTS_MAX_LEN)
            .arg(at);
        let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
        if let Some(name) = &update.name {
            invocation.arg("name").arg(name);
        }
        if let Some(scopes) = &update.scopes {
            invocation.arg("scopes").arg(scopes.to_spaced());
        }
        if let Some(expires_at) = update.expires_at {
            invocation.arg("expires_at").arg(optional(expires_at));
        }
        if let Some(disabled_at) = update.disabled_at {
            invocation.arg("disabled_at").arg(optional(disabled_at));
        }
        if let Some(allowed_ips) = &update.allowed_ips {
            invocation.arg("allowed_ips").arg(allowed_ips.to_spaced());
        }
        if let Some(meta) = &update.meta {
            // Empty metadata deletes the field.
            let text = if meta.is_empty() { "" } else { meta.as_json() };
            invocation.arg("meta").arg(text);
        }
        if let Some(rate_limit) = update.rate_limit {
            let text = rate_limit.map(TokenRateLimit::to_field).unwrap_or_default();
            invocation.arg("rate_limit").arg(text);
        }
        if let Some(by) = update.expires_by {
            invocation.arg("expires_by").arg(by);
        }
        if let Some(to) = update.rotated_to {
            invocation.arg("rotated_to").arg(to.to_string());
        }
        // Retried like a revoke: the same change twice is the same record
        // (one more event, `updated_at` the same), except a rotation's
        // link, whose retry finds it set: answered by the record below.
        let outcome: i64 = self.invoke_retried(&invocation).await?;
        match outcome {
            0 => return Ok(UpdateOutcome::NotFound),
            2 => return Ok(UpdateOutcome::Revoked),
            _ => {}
        }
        let record = self.get(id).await?.ok_or_else(|| StoreError::Corrupt {
            id: id.to_string(),
            field: "id",
        })?;
        // Linked already: by a retry of this very change (whose first run
        // did it all; the cluster's index and event below are then still
        // due), or by another rotation.
        if outcome == 3 && record.rotated_to != update.rotated_to {
            return Ok(UpdateOutcome::AlreadyRotated);
        }
        if self.keys.cluster {
            let id = id.to_string();
            let mut pipe = redis::pipe();
            match record.end_of_life() {
                Some(end) => pipe.zadd(self.keys.expiry(), &id, end).ignore(),
                None => pipe.zrem(self.keys.expiry(), &id).ignore(),
            };
            pipe.cmd("XADD")
                .arg(self.keys.events())
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_MAX_LEN)
                .arg("*")
                .arg("type")
                .arg("update")
                .arg("id")
                .arg(&id)
                .ignore();
            let () = pipe.query_async(&mut self.conn.clone()).await?;
        }
        Ok(UpdateOutcome::Updated(Box::new(record)))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit::append_audit(self, entry).await
    }
    async fn read_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        audit::read_audit(self, query).await
    }

    async fn replace_hash(&self, id: TokenId, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut invocation = self.replace_hash.prepare_invoke();
        invocation.key(self.keys.token(id)).arg(old).arg(new);
        // Retried like a read: a second run finds the new hash and does
        // nothing.
        let replaced: i64 = self.invoke_retried(&invocation).await?;
        Ok(replaced == 1)
    }

    async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError> {
        let invocations: Vec<_> = batch
            .iter()
            .map(|&(id, at)| {
                let mut invocation = self.touch.prepare_invoke();
                invocation.key(self.keys.token(id)).arg(at);
                invocation
            })
            .collect();
        // Idempotent: a time only moves forward.
        self.retried(|conn| {
            let invocations = &invocations;
            async move { each_script::<i64>(conn, TOUCH_LUA, invocations).await }
        })
        .await?;
        Ok(())
    }

    async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError> {
        cleanup::remove_dead(self, cutoff).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.retried(
            |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shares_limits(&self) -> bool {
        true
    }

    async fn reconcile_limits(
        &self,
        reports: &[LimitReport],
    ) -> Result<Vec<LimitState>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let invocations: Vec<_> = reports
            .iter()
            .map(|report| {
                let mut invocation = self.limit.prepare_invoke();
                invocation
                    .key(self.keys.limit(&report.key))
                    .arg(report.admitted)
                    .arg(format!("{:.3}", report.interval_us))
                    .arg(format!("{:.3}", report.tolerance_us))
                    .arg(format!("{:.0}", report.window_us));
                invocation
            })
            .collect();
        // Not retried: a lost reply may have counted, and counting twice
        // would refuse requests the fleet has room for. The next round
        // reports again.
        let states: Vec<(u64, u64)> =
            each_script(self.once.clone(), LIMIT_LUA, &invocations).await?;
        Ok(states
            .into_iter()
            .map(|(ahead_us, counted)| LimitState { ahead_us, counted })
            .collect())
    }

    fn watch_revocations(
        &self,
        sink: Weak<dyn RevocationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let connector = self.connector.clone();
        Some(tokio::spawn(watch(connector, self.keys.clone(), sink)))
    }
}
