//! Managing tokens: create (the plaintext shown once), list, get, revoke,
//! change, set a quota, clean up. Each change is audited and told to the
//! revocation sinks.

use std::time::Duration;

use super::bcrypt::blocking;
use super::input::{SECONDS_PER_DAY, check_account_id, check_expires_at, check_text};
use super::{
    CREATED_FIELDS, CreateTokenParams, CreatedToken, MAX_ACCOUNT_ID_CHARS, MAX_EXPIRES_IN_DAYS,
    MAX_NAME_CHARS, MAX_PAGE, QuotaParams, TokenError, TokenInfo, TokenService, TokenStatus,
    TokenUpdate, fields_of, rate_limit_input,
};
use crate::audit::AuditAction;
use crate::hashing::HashKind;
use crate::store::{RecordUpdate, RevokeOutcome, TokenRecord, UpdateOutcome};
use crate::token::{Quota, Token, TokenId};

impl TokenService {
    /// The stored hash of a new token, of the configured kind.
    pub(super) async fn hash_new(&self, token: &Token) -> Result<String, TokenError> {
        if self.hash_kind == HashKind::HmacSha256
            && let Some(key) = &self.hash_key
        {
            return Ok(key.hash(token.expose_secret()));
        }
        let plaintext = token.expose_secret().to_owned();
        let cost = self.bcrypt_cost;
        blocking(move || bcrypt::hash(plaintext, cost)).await
    }

    /// Creates a token. The returned plaintext exists nowhere else: only
    /// its hash (bcrypt, or HMAC-SHA256 under the server key) is stored.
    pub async fn create_token(
        &self,
        params: CreateTokenParams,
    ) -> Result<CreatedToken, TokenError> {
        check_account_id(&params.account_id)?;
        check_text("name", &params.name, MAX_NAME_CHARS)?;
        if let Some(days) = params.expires_in_days
            && !(1..=MAX_EXPIRES_IN_DAYS).contains(&days)
        {
            return Err(TokenError::input(
                "expires_in_days",
                format!("must be between 1 and {MAX_EXPIRES_IN_DAYS} (got {days})"),
            ));
        }
        if let Some(quota) = &params.quota {
            quota.check()?;
        }
        let rate_limit = params.rate_limit.map(rate_limit_input).transpose()?;
        let token = Token::generate()?;
        let hash = self.hash_new(&token).await?;
        let now = self.clock.now();
        let record = TokenRecord {
            id: token.id(),
            account_id: params.account_id,
            name: params.name,
            hash,
            created_at: now,
            updated_at: now,
            expires_at: params
                .expires_in_days
                .map(|d| now + i64::from(d) * SECONDS_PER_DAY),
            last_accessed: None,
            revoked_at: None,
            quota: params.quota.map(|q| Quota::new(q.remaining, q.refill, now)),
            scopes: params.scopes,
            disabled_at: None,
            allowed_ips: params.allowed_ips,
            meta: params.meta,
            rotated_from: None,
            rotated_to: None,
            rate_limit,
        };
        self.store.insert(&record).await?;
        tracing::info!(token_id = %record.id, account_id = %record.account_id, "token created");
        let info = TokenInfo::from_record(record, now);
        self.audit(
            AuditAction::Create,
            Some((&info.account_id, info.id)),
            fields_of(&info, CREATED_FIELDS),
        )
        .await;
        Ok(CreatedToken { token, info })
    }

    /// The account's tokens, oldest first, without hashes.
    pub async fn list_tokens(&self, account_id: &str) -> Result<Vec<TokenInfo>, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        let now = self.clock.now();
        Ok(self
            .store
            .list_by_account(account_id)
            .await?
            .into_iter()
            .map(|r| TokenInfo::from_record(r, now))
            .collect())
    }

    /// One page of the account's tokens in id order (docs/reference/http-contract.md,
    /// "Listing"): up to `limit` (1–1,000) after the cursor `after`, only
    /// those with `status` if given, and the cursor of the next page
    /// (`None`: no more). Walking from `None` to the end returns every token
    /// that exists throughout exactly once.
    pub async fn list_tokens_page(
        &self,
        account_id: &str,
        after: Option<TokenId>,
        limit: usize,
        status: Option<TokenStatus>,
    ) -> Result<(Vec<TokenInfo>, Option<TokenId>), TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(TokenError::input(
                "limit",
                format!("must be between 1 and {MAX_PAGE} (got {limit})"),
            ));
        }
        let now = self.clock.now();
        let mut tokens = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store
                .list_page(account_id, cursor, limit - tokens.len())
                .await?;
            tokens.extend(
                page.records
                    .into_iter()
                    .map(|r| TokenInfo::from_record(r, now))
                    .filter(|info| status.is_none_or(|s| info.status == s)),
            );
            cursor = page.next;
            if cursor.is_none() || tokens.len() == limit {
                return Ok((tokens, cursor));
            }
        }
    }

    /// One token of the account. Another account's token is `NotFound`.
    pub async fn get_token(
        &self,
        token_id: TokenId,
        account_id: &str,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        match self.store.get(token_id).await? {
            Some(record) if record.account_id == account_id => {
                Ok(TokenInfo::from_record(record, self.clock.now()))
            }
            _ => Err(TokenError::NotFound),
        }
    }

    /// Revokes a token of the account (a soft delete: the record stays until
    /// cleanup) and returns its record. Revoking twice is not an error and
    /// keeps the first `revoked_at`. Another account's token is `NotFound`.
    pub async fn revoke_token(
        &self,
        token_id: TokenId,
        account_id: &str,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        let outcome = self
            .store
            .revoke(token_id, account_id, self.clock.now())
            .await?;
        if outcome == RevokeOutcome::NotFound {
            return Err(TokenError::NotFound);
        }
        self.tell_sinks(token_id, |sink, id| sink.revoked(id));
        let info = self.get_token(token_id, account_id).await?;
        if outcome == RevokeOutcome::Revoked {
            tracing::info!(token_id = %token_id, account_id, "token revoked");
            self.audit(
                AuditAction::Revoke,
                Some((account_id, token_id)),
                fields_of(&info, &["revoked_at"]),
            )
            .await;
        }
        Ok(info)
    }

    /// Sets, replaces or (with `None`) removes the usage quota of a token of
    /// the account, and returns its record. The quota starts a new period
    /// now; credits replicas had leased from the old one are void
    /// (docs/reference/quotas.md).
    pub async fn set_quota(
        &self,
        token_id: TokenId,
        account_id: &str,
        quota: Option<QuotaParams>,
    ) -> Result<TokenInfo, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if let Some(quota) = &quota {
            quota.check()?;
        }
        let now = self.clock.now();
        let quota = quota.map(|q| Quota::new(q.remaining, q.refill, now));
        if !self
            .store
            .set_quota(token_id, account_id, quota, now)
            .await?
        {
            return Err(TokenError::NotFound);
        }
        tracing::info!(token_id = %token_id, account_id, quota = quota.map(|q| q.remaining), "token quota set");
        self.tell_sinks(token_id, |sink, id| sink.changed(id));
        let info = self.get_token(token_id, account_id).await?;
        self.audit(
            AuditAction::Update,
            Some((account_id, token_id)),
            fields_of(&info, &["quota"]),
        )
        .await;
        Ok(info)
    }

    /// Changes a token of the account (docs/reference/http-contract.md, "Changing a
    /// token"): the fields given, checked as at creation; never a revoked
    /// token ([`TokenError::Revoked`]). Every replica's cache looks the
    /// token up again (this one at once, others through the events stream).
    pub async fn update_token(
        &self,
        token_id: TokenId,
        account_id: &str,
        update: TokenUpdate,
    ) -> Result<TokenInfo, TokenError> {
        check_account_id(account_id)?;
        if let Some(name) = &update.name {
            check_text("name", name, MAX_NAME_CHARS)?;
        }
        let now = self.clock.now();
        if let Some(Some(at)) = update.expires_at {
            check_expires_at(at, now)?;
        }
        let mut given = update.given();
        let action = match (given.as_slice(), update.enabled) {
            (["enabled"], Some(false)) => AuditAction::Disable,
            (["enabled"], Some(true)) => AuditAction::Enable,
            _ => AuditAction::Update,
        };
        if let Some(Some(quota)) = &update.quota {
            quota.check()?;
        }
        let rate_limit = match update.rate_limit {
            Some(Some(limit)) => Some(Some(rate_limit_input(limit)?)),
            other => other,
        };
        let change = RecordUpdate {
            name: update.name,
            scopes: update.scopes,
            expires_at: update.expires_at,
            disabled_at: update.enabled.map(|enabled| (!enabled).then_some(now)),
            allowed_ips: update.allowed_ips,
            meta: update.meta,
            rate_limit,
            ..RecordUpdate::default()
        };
        let record = match self
            .store
            .update(token_id, account_id, &change, now)
            .await?
        {
            UpdateOutcome::Updated(record) => record,
            UpdateOutcome::Revoked => return Err(TokenError::Revoked),
            UpdateOutcome::NotFound | UpdateOutcome::AlreadyRotated => {
                return Err(TokenError::NotFound);
            }
        };
        // After the record's change, which refused a revoked token: the
        // quota's own script starts its new period. Should it fail, the
        // record's change still reaches the caches and the audit trail.
        let record = match update.quota {
            Some(quota) => {
                let quota = quota.map(|q| Quota::new(q.remaining, q.refill, now));
                let set = match self.store.set_quota(token_id, account_id, quota, now).await {
                    Ok(true) => self.store.get(token_id).await,
                    Ok(false) => Ok(None),
                    Err(e) => Err(e),
                };
                match set {
                    Ok(Some(record)) => Box::new(record),
                    failed => {
                        self.tell_sinks(token_id, |sink, id| sink.changed(id));
                        let info = TokenInfo::from_record(*record, now);
                        given.retain(|name| *name != "quota");
                        if !given.is_empty() {
                            self.audit(
                                action,
                                Some((account_id, token_id)),
                                fields_of(&info, &given),
                            )
                            .await;
                        }
                        return Err(match failed {
                            Err(e) => e.into(),
                            _ => TokenError::NotFound,
                        });
                    }
                }
            }
            None => record,
        };
        tracing::info!(token_id = %token_id, account_id, enabled = record.disabled_at.is_none(), "token updated");
        self.tell_sinks(token_id, |sink, id| sink.changed(id));
        let info = TokenInfo::from_record(*record, now);
        self.audit(
            action,
            Some((account_id, token_id)),
            fields_of(&info, &given),
        )
        .await;
        Ok(info)
    }

    /// Deletes, from every index, the tokens that expired or were revoked
    /// more than `retention` ago. Returns how many were deleted.
    pub async fn cleanup_expired(&self, retention: Duration) -> Result<u64, TokenError> {
        let retention = i64::try_from(retention.as_secs())
            .map_err(|_| TokenError::input("retention", "is too long"))?;
        let removed = self
            .store
            .remove_dead(self.clock.now().saturating_sub(retention))
            .await?;
        tracing::info!(removed, "expired and revoked tokens cleaned up");
        let mut fields = serde_json::Map::new();
        fields.insert("removed".to_owned(), removed.into());
        fields.insert("retention_seconds".to_owned(), retention.into());
        self.audit(AuditAction::Cleanup, None, fields).await;
        Ok(removed)
    }
}
