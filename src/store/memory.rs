//! The embedded in-memory store: the default when no Redis URL is set.
//!
//! One process only, and every token is lost on restart, which is why
//! `tokengate` says so loudly when it starts on this store. It is a product
//! feature for trying tokengate and for single-process embedding, not a stand-in
//! for Redis in tests of Redis behaviour.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    Lease, LimitReport, LimitState, Quota, RecordUpdate, RevokeOutcome, StoreError, TokenRecord,
    TokenStore, UpdateOutcome,
};
use crate::token::TokenId;

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
