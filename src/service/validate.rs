//! Validation: a presented token checked against its record (format, then
//! the store, then the hash off the async runtime), and the rehash of a
//! bcrypt token to HMAC on its first use.

use std::sync::atomic::Ordering;

use super::bcrypt::blocking;
use super::{AuthContext, TokenError, TokenService, Validated};
use crate::hashing::{HashKind, StoredHash, verify_hmac};
use crate::token;
use crate::token::TokenId;

impl TokenService {
    /// Checks a presented token: parse (no I/O), one store read by id,
    /// revoked / expired checks, then one verify of the stored hash: bcrypt
    /// on the blocking pool, or HMAC-SHA256 inline. No hash is computed for
    /// a token that fails any earlier step. A record whose hash is not of
    /// the configured kind is rehashed in the background once it validates.
    pub async fn validate_token(&self, presented: &str) -> Result<AuthContext, TokenError> {
        self.validate(presented).await.map(|valid| valid.auth)
    }

    /// As [`TokenService::validate_token`], also returning what caches need.
    pub(crate) async fn validate(&self, presented: &str) -> Result<Validated, TokenError> {
        let id = token::parse(presented)?;
        let record = self.store.get(id).await?.ok_or(TokenError::NotFound)?;
        if record.revoked_at.is_some() {
            return Err(TokenError::Revoked);
        }
        if record.is_expired_at(self.clock.now()) {
            return Err(TokenError::Expired);
        }
        if record.disabled_at.is_some() {
            return Err(TokenError::Disabled);
        }
        let stored = StoredHash::parse(&record.hash);
        let kind = stored.kind();
        let matches = match stored {
            StoredHash::Bcrypt(_) => {
                let permit = self.bcrypt_gate.acquire().await?;
                self.bcrypt_verifications.fetch_add(1, Ordering::Relaxed);
                let presented = presented.to_owned();
                let hash = record.hash.clone();
                // bcrypt::verify compares the hashes in constant time.
                let matches = blocking(move || bcrypt::verify(presented, &hash)).await?;
                drop(permit);
                matches
            }
            // Microseconds: inline, no gate (verify_slice compares in
            // constant time).
            StoredHash::Hmac { key_id, mac } => {
                self.hmac_verifications.fetch_add(1, Ordering::Relaxed);
                verify_hmac(self.hash_key.as_deref(), key_id, mac.as_ref(), presented)?
            }
        };
        if !matches {
            return Err(TokenError::WrongSecret);
        }
        if kind != self.hash_kind {
            self.rehash(id, presented, record.hash);
        }
        let auth = AuthContext {
            account_id: record.account_id,
            token_id: id,
            scopes: record.scopes,
            meta: record.meta,
        };
        Ok(Validated {
            auth,
            expires_at: record.expires_at,
            has_quota: record.quota.is_some(),
            allowed_ips: record.allowed_ips,
            rate_limit: record.rate_limit,
        })
    }

    /// Rewrites the stored hash of a token that just validated with the
    /// configured kind, in the background (off the request's path): the
    /// store replaces it only if it is still `old` and the token is not
    /// revoked. Failing is harmless: the next successful use tries again.
    fn rehash(&self, id: TokenId, presented: &str, old: String) {
        let store = self.store.clone();
        let to = self.hash_kind;
        let new = match (to, &self.hash_key) {
            (HashKind::HmacSha256, Some(key)) => Ok(key.hash(presented)),
            (HashKind::HmacSha256, None) => return,
            (HashKind::Bcrypt, _) => Err(presented.to_owned()),
        };
        let (gate, cost) = (self.bcrypt_gate.clone(), self.bcrypt_cost);
        tokio::spawn(async move {
            let new = match new {
                Ok(hash) => hash,
                // Back to bcrypt: a hash's worth of CPU, through the same
                // gate as verifications, so a restart does not queue one
                // per token at once; skipped when the gate is full.
                Err(plaintext) => {
                    let Ok(permit) = gate.acquire().await else {
                        return;
                    };
                    let hashed = blocking(move || bcrypt::hash(plaintext, cost)).await;
                    drop(permit);
                    match hashed {
                        Ok(hash) => hash,
                        Err(e) => {
                            tracing::warn!(token_id = %id, error = %e, "cannot rehash token");
                            return;
                        }
                    }
                }
            };
            match store.replace_hash(id, &old, &new).await {
                Ok(true) => tracing::debug!(token_id = %id, hash = %to, "token rehashed"),
                // Revoked, deleted or rehashed by another replica meanwhile.
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(token_id = %id, error = %e, "cannot rehash token; next use tries again");
                }
            }
        });
    }

    /// Records that a token was used at `at` (unix seconds). Never moves the
    /// stored time backwards.
    pub async fn update_last_accessed(&self, token_id: TokenId, at: i64) -> Result<(), TokenError> {
        Ok(self.store.touch(&[(token_id, at)]).await?)
    }
}
