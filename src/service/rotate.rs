//! Rotation: a new token that carries the old one's settings, linked both
//! ways, the old one expiring after a grace (docs/reference/http-contract.md,
//! "Rotating a token").

use std::time::Duration;

use super::input::check_text;
use super::{
    CREATED_FIELDS, CreatedToken, MAX_ACCOUNT_ID_CHARS, MAX_EXPIRES_IN_DAYS, MAX_GRACE,
    RotatedToken, TokenError, TokenInfo, TokenService, fields_of,
};
use crate::audit::AuditAction;
use crate::store::{RecordUpdate, TokenRecord, UpdateOutcome};
use crate::token::{Quota, Token, TokenId};

impl TokenService {
    /// Rotates a token of the account (docs/reference/http-contract.md, "Rotating a
    /// token"): a new token with the same account, name, scopes, metadata,
    /// allowlist, expiry, enabled state and quota, linked both ways with the
    /// old one, which then expires at the earlier of now + `grace` and its
    /// own expiry (never later); a `grace` of 0 revokes it at once. A
    /// revoked, expired or already rotated token cannot be rotated.
    pub async fn rotate_token(
        &self,
        token_id: TokenId,
        account_id: &str,
        grace: Duration,
    ) -> Result<RotatedToken, TokenError> {
        check_text("account_id", account_id, MAX_ACCOUNT_ID_CHARS)?;
        if grace > MAX_GRACE {
            return Err(TokenError::input(
                "grace",
                format!("must be at most {MAX_EXPIRES_IN_DAYS} days"),
            ));
        }
        let old = match self.store.get(token_id).await? {
            Some(record) if record.account_id == account_id => record,
            _ => return Err(TokenError::NotFound),
        };
        let now = self.clock.now();
        if old.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if let Some(to) = old.rotated_to {
            return Err(TokenError::AlreadyRotated(to));
        }
        if old.is_expired_at(now) {
            return Err(TokenError::Expired);
        }
        let token = Token::generate()?;
        let mut record = TokenRecord {
            id: token.id(),
            hash: self.hash_new(&token).await?,
            created_at: now,
            updated_at: now,
            last_accessed: None,
            revoked_at: None,
            // The credits left now, refilled on the same schedule: during
            // the grace both tokens draw on their own (docs/reference/quotas.md).
            quota: old.quota.as_ref().map(|q| {
                let q = q.at(now);
                Quota::new(q.remaining, q.refill, q.refilled_at)
            }),
            rotated_from: Some(old.id),
            rotated_to: None,
            ..old.clone()
        };
        self.store.insert(&record).await?;
        // Whole seconds, rounded up: a grace of 500 ms is 1 s, not 0 (which
        // would revoke).
        let grace_secs = i64::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
        let linked = match self
            .link(&old, record.id, account_id, grace_secs, now)
            .await
        {
            Ok(linked) => linked,
            Err(e) => {
                self.undo(record.id, account_id, now).await;
                return Err(e);
            }
        };
        // From here the new token exists and is linked: its plaintext is
        // returned whatever fails next (logged), never lost.
        //
        self.carry_over(&linked, &mut record, account_id, now).await;
        let mut old_record = linked;
        if grace.is_zero() {
            match self.store.revoke(old.id, account_id, now).await {
                Ok(_) => old_record.revoked_at = old_record.revoked_at.or(Some(now)),
                // It expires now anyway (the link set its expiry to now).
                Err(e) => {
                    tracing::warn!(token_id = %old.id, error = %e, "cannot revoke the rotated token; it expires now");
                }
            }
            self.tell_sinks(old.id, |sink, id| sink.revoked(id));
        } else {
            self.tell_sinks(old.id, |sink, id| sink.changed(id));
        }
        tracing::info!(token_id = %old.id, new_token_id = %record.id, account_id, grace_secs, "token rotated");
        let old = TokenInfo::from_record(old_record, now);
        let new = TokenInfo::from_record(record, now);
        let mut fields = fields_of(&new, CREATED_FIELDS);
        fields.insert("rotated_from".to_owned(), serde_json::json!(old.id));
        self.audit(AuditAction::Create, Some((account_id, new.id)), fields)
            .await;
        let mut fields = fields_of(&old, &["rotated_to", "expires_at", "revoked_at"]);
        fields.insert("grace_seconds".to_owned(), grace_secs.into());
        self.audit(AuditAction::Rotate, Some((account_id, old.id)), fields)
            .await;
        Ok(RotatedToken {
            new: CreatedToken { token, info: new },
            old,
        })
    }

    /// Links the old token to the new one and sets its end of life: its
    /// record as linked. Linked already to this new token (a retried script
    /// that had run, or a lost reply) counts as linked; to another (a
    /// concurrent rotation) does not.
    async fn link(
        &self,
        old: &TokenRecord,
        new_id: TokenId,
        account_id: &str,
        grace_secs: i64,
        now: i64,
    ) -> Result<TokenRecord, TokenError> {
        let link = RecordUpdate {
            rotated_to: Some(new_id),
            expires_by: Some(now.saturating_add(grace_secs)),
            ..RecordUpdate::default()
        };
        match self.store.update(old.id, account_id, &link, now).await {
            Ok(UpdateOutcome::Updated(linked)) => Ok(*linked),
            Ok(UpdateOutcome::Revoked) => Err(TokenError::Revoked),
            Ok(UpdateOutcome::NotFound) => Err(TokenError::NotFound),
            Ok(UpdateOutcome::AlreadyRotated) | Err(_) => match self.store.get(old.id).await {
                Ok(Some(now_old)) if now_old.rotated_to == Some(new_id) => Ok(now_old),
                Ok(Some(now_old)) if now_old.rotated_to.is_some() => Err(
                    TokenError::AlreadyRotated(now_old.rotated_to.unwrap_or(new_id)),
                ),
                Ok(_) => Err(TokenError::NotFound),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The old token changed meanwhile (or the store failed): the new one
    /// must not outlive the attempt.
    async fn undo(&self, new_id: TokenId, account_id: &str, now: i64) {
        if let Err(undo) = self.store.revoke(new_id, account_id, now).await {
            tracing::warn!(token_id = %new_id, error = %undo, "cannot revoke the token of a failed rotation");
        }
    }

    /// A change made to the old token while the new one was being made
    /// (disabled, scopes narrowed) is carried over to the new one.
    async fn carry_over(
        &self,
        linked: &TokenRecord,
        record: &mut TokenRecord,
        account_id: &str,
        now: i64,
    ) {
        let follow = RecordUpdate {
            name: (linked.name != record.name).then(|| linked.name.clone()),
            scopes: (linked.scopes != record.scopes).then(|| linked.scopes.clone()),
            disabled_at: (linked.disabled_at != record.disabled_at).then_some(linked.disabled_at),
            allowed_ips: (linked.allowed_ips != record.allowed_ips)
                .then(|| linked.allowed_ips.clone()),
            meta: (linked.meta != record.meta).then(|| linked.meta.clone()),
            rate_limit: (linked.rate_limit != record.rate_limit).then_some(linked.rate_limit),
            ..RecordUpdate::default()
        };
        if follow == RecordUpdate::default() {
            return;
        }
        match self.store.update(record.id, account_id, &follow, now).await {
            Ok(UpdateOutcome::Updated(followed)) => *record = *followed,
            other => {
                tracing::warn!(token_id = %record.id, outcome = ?other.map(|_| ()), "cannot carry a concurrent change over to the rotated token");
            }
        }
    }
}
