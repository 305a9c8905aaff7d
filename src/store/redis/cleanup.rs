//! Cleanup: removing tokens dead past the retention from every key, and
//! (on a cluster) repairing creations a crash left half done.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::scripts::{REMOVE_LUA, REMOVE_RECORD_LUA};
use super::{CLEANUP_BATCH, PENDING_GRACE, RedisStore, each_cmd, each_script, unix_now};
use crate::store::StoreError;

pub(super) async fn remove_dead(store: &RedisStore, cutoff: i64) -> Result<u64, StoreError> {
    if store.keys.cluster {
        return store.remove_dead_on_cluster(cutoff).await;
    }
    let mut conn = store.conn.clone();
    let expiry = store.keys.expiry();
    let mut removed = 0;
    loop {
        // Each step is idempotent; the first read stands for the rest (a
        // connection closed since the last call fails here, before any work).
        let ids = store.dead_ids(cutoff).await?;
        if ids.is_empty() {
            return Ok(removed);
        }
        // The account index key is needed as a declared key of the
        // script, so read each token's account first.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(store.keys.token(id), "account_id");
        }
        let accounts: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(REMOVE_LUA).ignore();
        for (id, account) in ids.iter().zip(&accounts) {
            pipe.invoke_script(
                store
                    .remove
                    .key(store.keys.token(id))
                    .key(store.keys.account(account.as_deref().unwrap_or_default()))
                    .key(&expiry)
                    .arg(id)
                    .arg(cutoff),
            );
        }
        let deleted: Vec<u64> = pipe.query_async(&mut conn).await?;
        removed += deleted.iter().sum::<u64>();
        // Every id in the range left the expiry index (the script removes
        // it whenever its score is still at or before the cutoff), so the
        // next range read makes progress.
        if ids.len() < CLEANUP_BATCH as usize {
            return Ok(removed);
        }
    }
}

impl RedisStore {
    /// The first ids (at most `CLEANUP_BATCH`) whose end of life is at or
    /// before `cutoff`, by the expiry index.
    async fn dead_ids(&self, cutoff: i64) -> redis::RedisResult<Vec<String>> {
        let expiry = self.keys.expiry();
        self.retried(|mut conn| {
            let expiry = &expiry;
            async move {
                conn.zrangebyscore_limit(expiry, "-inf", cutoff, 0, CLEANUP_BATCH)
                    .await
            }
        })
        .await
    }

    /// Cleanup on a cluster, where a record and its index entries are in
    /// different slots: for each dead id, first out of its account's index,
    /// then the record (its end of life checked again on the record), then
    /// out of the expiry index. Interrupted anywhere, the next cleanup
    /// finds the id in the expiry index again and finishes. Then creations
    /// that never finished are repaired (docs/design/redis-layout.md, "Redis
    /// Cluster").
    async fn remove_dead_on_cluster(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let ids = self.dead_ids(cutoff).await?;
            if ids.is_empty() {
                break;
            }
            let reads = ids
                .iter()
                .map(|id| {
                    let mut cmd = redis::cmd("HGET");
                    cmd.arg(self.keys.token(id)).arg("account_id");
                    cmd
                })
                .collect();
            let accounts: Vec<Option<String>> = each_cmd(self.conn.clone(), reads).await?;
            let unlist = ids
                .iter()
                .zip(&accounts)
                .filter_map(|(id, account)| {
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(self.keys.account(account.as_deref()?)).arg(id);
                    Some(cmd)
                })
                .collect();
            let _: Vec<i64> = each_cmd(self.conn.clone(), unlist).await?;
            let deletions: Vec<_> = ids
                .iter()
                .map(|id| {
                    let mut invocation = self.remove_record.prepare_invoke();
                    invocation.key(self.keys.token(id)).arg(cutoff);
                    invocation
                })
                .collect();
            let outcomes: Vec<i64> =
                each_script(self.conn.clone(), REMOVE_RECORD_LUA, &deletions).await?;
            removed += outcomes.iter().filter(|&&o| o == 1).count() as u64;
            // Gone now (or before): out of the expiry index. One alive after
            // all (its index entry was stale) is listed again under its
            // account and re-entered with its true end of life.
            let gone: Vec<&String> = ids
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o != 0)
                .map(|(id, _)| id)
                .collect();
            if !gone.is_empty() {
                let _: i64 = self.conn.clone().zrem(self.keys.expiry(), gone).await?;
            }
            let alive: Vec<&String> = ids
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o == 0)
                .map(|(id, _)| id)
                .collect();
            for id in alive {
                self.relist(id).await?;
            }
            if ids.len() < CLEANUP_BATCH as usize {
                break;
            }
        }
        self.repair_pending().await?;
        Ok(removed)
    }

    /// Puts a record that is alive back in its indexes as the record says.
    async fn relist(&self, id: &str) -> Result<(), StoreError> {
        let (account, expires, revoked): (Option<String>, Option<i64>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(self.keys.token(id))
                .arg("account_id")
                .arg("expires_at")
                .arg("revoked_at")
                .query_async(&mut self.conn.clone())
                .await?;
        let Some(account) = account else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.sadd(self.keys.account(&account), id).ignore();
        match expires.into_iter().chain(revoked).min() {
            Some(end_of_life) => pipe.zadd(self.keys.expiry(), id, end_of_life).ignore(),
            None => pipe.zrem(self.keys.expiry(), id).ignore(),
        };
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Finishes or undoes creations noted as pending more than
    /// `PENDING_GRACE` seconds ago (by this machine's clock, as they were
    /// noted): the process that began them is gone. A record that exists is listed as it says; an id without
    /// one is taken out of its account's index.
    async fn repair_pending(&self) -> Result<(), StoreError> {
        let pending: HashMap<String, String> =
            self.conn.clone().hgetall(self.keys.pending()).await?;
        for (id, note) in pending {
            let Some((created_at, account)) = note.split_once(':') else {
                continue;
            };
            if created_at
                .parse::<i64>()
                .is_ok_and(|t| t.saturating_add(PENDING_GRACE) > unix_now())
            {
                continue;
            }
            let owner: Option<String> = self
                .conn
                .clone()
                .hget(self.keys.token(&id), "account_id")
                .await?;
            if owner.as_deref() == Some(account) {
                self.relist(&id).await?;
            } else {
                let _: i64 = self
                    .conn
                    .clone()
                    .srem(self.keys.account(account), &id)
                    .await?;
            }
            let _: i64 = self.conn.clone().hdel(self.keys.pending(), &id).await?;
            tracing::info!(token_id = %id, account_id = account, finished = owner.is_some(), "repaired an interrupted token creation");
        }
        Ok(())
    }
}
