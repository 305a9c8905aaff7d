//! [`TokenError`]: everything that can go wrong in the service, with whose
//! fault it is.

use crate::hashing::KeyError;
use crate::store::StoreError;
use crate::token::{FormatError, RandomError, TokenId};

/// Everything that can go wrong in [`TokenService`](super::TokenService), with whose fault it is.
///
/// The variants tell a bad token apart (format, not found, revoked, expired,
/// wrong secret) for logs and metrics; clients are told only that the token is
/// invalid (see [`TokenError::is_invalid_token`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Client: the string is not a well-formed `mk_` token.
    #[error("invalid token format: {0}")]
    InvalidFormat(#[from] FormatError),
    /// Client: no such token (or it belongs to another account).
    #[error("token not found")]
    NotFound,
    /// Client: the token was revoked.
    #[error("token revoked")]
    Revoked,
    /// Client: the token is disabled (it can be enabled again).
    #[error("token disabled")]
    Disabled,
    /// Client: the token has expired.
    #[error("token expired")]
    Expired,
    /// Client: the token was rotated already (to the token named); rotate
    /// that one instead.
    #[error("token already rotated to {0}")]
    AlreadyRotated(TokenId),
    /// Client: the id exists but the secret does not match its hash.
    #[error("token secret does not match")]
    WrongSecret,
    /// Client: a management input breaks a rule; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The parameter at fault (`account_id`, `name`, `expires_in_days`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Store: Redis could not answer. Fail closed: the token is not valid.
    #[error("token store unavailable: {0}")]
    Store(#[from] StoreError),
    /// Server: every bcrypt slot is busy and the wait queue is full; try
    /// again shortly.
    #[error("too many token verifications in progress")]
    Overloaded,
    /// Server: the record's hash is HMAC-SHA256 under a key this process
    /// does not have (`TOKENGATE_HASH_KEY` unset, or another key). Fail
    /// closed: the token is not valid here.
    #[error("cannot check the token's hash: {0}")]
    HashKey(#[from] KeyError),
    /// Server: hashing or randomness failed (bcrypt error, blocking pool gone,
    /// OS RNG failure).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TokenError {
    /// Whether this error means "the presented token is not valid": the cases
    /// a client sees as one generic 401.
    pub fn is_invalid_token(&self) -> bool {
        matches!(
            self,
            Self::InvalidFormat(_)
                | Self::NotFound
                | Self::Revoked
                | Self::Disabled
                | Self::Expired
                | Self::WrongSecret
        )
    }

    pub(super) fn input(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<RandomError> for TokenError {
    fn from(e: RandomError) -> Self {
        Self::Internal(e.to_string())
    }
}
