//! The embedded in-memory store: the default when no Redis URL is set.
//!
//! One process only, and every token is lost on restart, which is why
//! `tokengate` says so loudly when it starts on this store. It is a product
//! feature for trying tokengate and for single-process embedding, not a stand-in
//! for Redis in tests of Redis behaviour.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    LimitReport, LimitState, RecordUpdate, RevokeOutcome, StoreError, TokenRecord, TokenStore,
    UpdateOutcome,
};
use crate::audit::{AuditEntry, AuditPage, AuditQuery, MEMORY_AUDIT_LEN, parse_entry_id};
use crate::token::{Lease, Quota, TokenId};

/// Token records in a `HashMap`, with an account index.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std mutex, not tokio's: it is never held across an `.await`, and every
    // critical section is a few map operations.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<TokenId, TokenRecord>,
    accounts: HashMap<String, BTreeSet<TokenId>>,
    /// The audit trail's latest entries, oldest first.
    audit: VecDeque<AuditEntry>,
    /// The last entry's id, as (milliseconds, sequence): ids only grow,
    /// even if the clock steps back (as Redis makes stream ids).
    last_audit: (u64, u64),
}

impl MemoryStore {
    /// An empty store. Nothing in it survives the process, and other
    /// processes cannot see it (`tokengate serve` says so once it is up).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock, so a poisoned map is still
        // consistent; keep serving rather than fail every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&record.id) {
            return Err(StoreError::Duplicate(record.id));
        }
        inner
            .accounts
            .entry(record.account_id.clone())
            .or_default()
            .insert(record.id);
        inner.tokens.insert(record.id, record.clone());
        Ok(())
    }

    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.get(&id).cloned())
    }

    async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let inner = self.lock();
        let mut records: Vec<TokenRecord> = inner
            .accounts
            .get(account_id)
            .into_iter()
            .flatten()
            .filter_map(|id| inner.tokens.get(id).cloned())
            .collect();
        records.sort_by_key(|r| (r.created_at, r.id));
        Ok(records)
    }

    async fn revoke(
        &self,
        id: TokenId,
        account_id: &str,
        at: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut inner = self.lock();
        match inner.tokens.get_mut(&id) {
            Some(record) if record.account_id == account_id => {
                if record.revoked_at.is_some() {
                    return Ok(RevokeOutcome::AlreadyRevoked);
                }
                record.revoked_at = Some(at);
                record.updated_at = at;
                Ok(RevokeOutcome::Revoked)
            }
            _ => Ok(RevokeOutcome::NotFound),
        }
    }

    async fn update(
        &self,
        id: TokenId,
        account_id: &str,
        update: &RecordUpdate,
        at: i64,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut inner = self.lock();
        match inner.tokens.get_mut(&id) {
            Some(record) if record.account_id == account_id => {
                if record.revoked_at.is_some() {
                    return Ok(UpdateOutcome::Revoked);
                }
                if update.rotated_to.is_some() && record.rotated_to.is_some() {
                    return Ok(UpdateOutcome::AlreadyRotated);
                }
                update.apply(record, at);
                Ok(UpdateOutcome::Updated(Box::new(record.clone())))
            }
            _ => Ok(UpdateOutcome::NotFound),
        }
    }

    async fn lease_credits(
        &self,
        id: TokenId,
        want: u64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let mut inner = self.lock();
        let Some(quota) = inner.tokens.get_mut(&id).and_then(|r| r.quota.as_mut()) else {
            return Ok(None);
        };
        *quota = quota.at(now);
        let granted = want.min(quota.remaining);
        quota.remaining -= granted;
        Ok(Some(Lease {
            granted,
            period: quota.period,
            next_refill: quota.next_refill(),
            remaining: quota.remaining,
        }))
    }

    async fn return_credits(
        &self,
        id: TokenId,
        credits: u64,
        period: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(quota) = inner.tokens.get_mut(&id).and_then(|r| r.quota.as_mut())
            && quota.period == period
        {
            quota.remaining = quota.remaining.saturating_add(credits);
        }
        Ok(())
    }

    async fn set_quota(
        &self,
        id: TokenId,
        account_id: &str,
        quota: Option<Quota>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(record) = inner
            .tokens
            .get_mut(&id)
            .filter(|r| r.account_id == account_id)
        else {
            return Ok(false);
        };
        // A new period either way: leases of the old quota are void.
        let period = record.quota.map_or(0, |q| q.period) + 1;
        record.quota = quota.map(|q| Quota {
            refilled_at: at,
            period,
            ..q
        });
        record.updated_at = at;
        Ok(true)
    }

    async fn replace_hash(&self, id: TokenId, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.tokens.get_mut(&id) {
            Some(record) if record.hash == old && record.revoked_at.is_none() => {
                new.clone_into(&mut record.hash);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for &(id, at) in batch {
            if let Some(record) = inner.tokens.get_mut(&id) {
                record.last_accessed = Some(record.last_accessed.map_or(at, |cur| cur.max(at)));
            }
        }
        Ok(())
    }

    async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let dead: Vec<(TokenId, String)> = inner
            .tokens
            .values()
            .filter(|r| r.end_of_life().is_some_and(|end| end <= cutoff))
            .map(|r| (r.id, r.account_id.clone()))
            .collect();
        for (id, account_id) in &dead {
            inner.tokens.remove(id);
            if let Some(ids) = inner.accounts.get_mut(account_id) {
                ids.remove(id);
                if ids.is_empty() {
                    inner.accounts.remove(account_id);
                }
            }
        }
        Ok(dead.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut inner = self.lock();
        let (last_ms, last_seq) = inner.last_audit;
        let id = if millis > last_ms {
            (millis, 0)
        } else {
            (last_ms, last_seq + 1)
        };
        inner.last_audit = id;
        if inner.audit.len() == MEMORY_AUDIT_LEN {
            inner.audit.pop_front();
        }
        inner.audit.push_back(AuditEntry {
            id: format!("{}-{}", id.0, id.1),
            ..entry.clone()
        });
        Ok(())
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let after = query.after.as_deref().and_then(parse_entry_id);
        let inner = self.lock();
        let mut entries = Vec::new();
        for entry in &inner.audit {
            if after.is_some_and(|after| parse_entry_id(&entry.id) <= Some(after)) {
                continue;
            }
            if entries.len() == query.limit {
                let next = entries.last().map(|e: &AuditEntry| e.id.clone());
                return Ok(AuditPage { entries, next });
            }
            if query.wants(entry) {
                entries.push(entry.clone());
            }
        }
        Ok(AuditPage {
            entries,
            next: None,
        })
    }

    /// One process: its limits are its own.
    fn shares_limits(&self) -> bool {
        false
    }

    async fn reconcile_limits(
        &self,
        _reports: &[LimitReport],
    ) -> Result<Vec<LimitState>, StoreError> {
        Ok(Vec::new())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditAction};

    /// The trail keeps the latest entries, ids growing, and pages by them.
    #[tokio::test]
    async fn the_audit_ring_keeps_the_latest_entries() {
        let store = MemoryStore::new();
        let entry = |n: i64| AuditEntry {
            id: String::new(),
            at: n,
            actor: Actor::library(),
            account_id: Some(if n % 2 == 0 { "even" } else { "odd" }.to_owned()),
            token_id: None,
            action: AuditAction::Cleanup,
            changes: serde_json::Map::new(),
        };
        let total = i64::try_from(MEMORY_AUDIT_LEN).unwrap() + 5;
        for n in 0..total {
            store.append_audit(&entry(n)).await.unwrap();
        }
        let query = |after: Option<String>, account: Option<&str>| AuditQuery {
            account: account.map(str::to_owned),
            after,
            limit: MAX_PAGE_FOR_TEST,
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.read_audit(&query(after, None)).await.unwrap();
            seen.extend(page.entries.iter().map(|e| e.at));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (5..total).collect::<Vec<_>>());
        let odd = store.read_audit(&query(None, Some("odd"))).await.unwrap();
        assert!(odd.entries.iter().all(|e| e.at % 2 == 1));
        assert_eq!(odd.entries.len(), MAX_PAGE_FOR_TEST);
    }

    const MAX_PAGE_FOR_TEST: usize = 1_000;
}
