//! A cache miss: the store's record, the hash, and the entry the cache keeps.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::cache::Cached;
use crate::auth::rate_limit::Limits;
use crate::auth::timing::VerifyTime;
use crate::auth::{InvalidReason, Rejection};
use crate::service::{TokenError, TokenService};
use crate::token;

/// A cache miss: the token's record from the store, its hash verified (off
/// the async runtime), and what the cache keeps of it. A refusal without
/// bcrypt takes as long as one with it (docs/reference/http-contract.md,
/// "Timing").
pub(super) async fn look_up(
    service: TokenService,
    verify_time: Arc<VerifyTime>,
    limits: Arc<Limits>,
    owned: String,
    token_id: token::TokenId,
    epoch: u64,
) -> Result<Cached, Miss> {
    // An id flooded with wrong secrets costs no more bcrypt
    // (its real token, if cached, never gets here).
    limits.check_token(token_id).map_err(Miss::Refused)?;
    let started = tokio::time::Instant::now();
    // Before the store read: a change announced after it must
    // make the entry look stale (AuthCache::changed_since).
    let verified_at = std::time::Instant::now();
    let validated = service.validate(&owned).await;
    match &validated {
        Ok(_) | Err(TokenError::WrongSecret) => verify_time.record(started.elapsed()),
        // Refused without bcrypt: as slow as with it.
        Err(
            TokenError::NotFound | TokenError::Revoked | TokenError::Expired | TokenError::Disabled,
        ) => {
            verify_time.hold(started).await;
        }
        Err(_) => {}
    }
    match validated {
        Ok(valid) => {
            let (auth, expires_at) = (valid.auth, valid.expires_at);
            let stored_expiry = expires_at;
            let lifetime = expires_at.map_or(Duration::MAX, |at| {
                Duration::from_secs(u64::try_from(at - service.now()).unwrap_or(0))
            });
            Ok(Cached::Valid {
                auth,
                lifetime,
                verified_at,
                epoch,
                has_quota: valid.has_quota,
                allowed_ips: valid.allowed_ips,
                expires_at: stored_expiry,
                rate_limit: valid.rate_limit,
            })
        }
        Err(e) => InvalidReason::from_error(&e)
            .map(|reason| Cached::Invalid {
                reason,
                id: token_id,
                checked_at: verified_at,
            })
            .ok_or(Miss::Failed(e)),
    }
}

/// Why a cache miss produced no entry: refused before any work (a token id
/// over its wrong-secret limit), or the store / bcrypt failed.
#[derive(Debug)]
pub(super) enum Miss {
    Refused(Rejection),
    Failed(TokenError),
}
