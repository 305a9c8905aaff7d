//! What the Authenticator decided for a request, as one value that the
//! metrics (`outcome` labels), the access log and the counters of
//! [`AuthStats`](super::AuthStats) all name the same way
//! (docs/reference/metrics.md, "Label values").

use super::{Decision, Rejection};

/// The outcome of one decision: admitted with a token, admitted as public,
/// or refused with one of [`Rejection::code`]'s codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A valid token, with what the route needs.
    Authenticated,
    /// A public route: no token needed.
    Public,
    /// No token was sent (401).
    MissingToken,
    /// The token is not valid (401).
    InvalidToken,
    /// The request is malformed, e.g. it carries two tokens (400).
    InvalidRequest,
    /// Over a rate limit (429).
    RateLimited,
    /// The token's usage quota is used up (429).
    UsageExceeded,
    /// The store cannot answer and the cache cannot vouch (503).
    Unavailable,
    /// The token lacks a scope the route needs (403).
    InsufficientScope,
    /// The token may not be used from the client's address (403).
    IpNotAllowed,
}

impl Outcome {
    /// Every outcome, in the order of [`AuthStats::outcomes`](super::AuthStats::outcomes).
    pub const ALL: [Outcome; 10] = [
        Self::Authenticated,
        Self::Public,
        Self::MissingToken,
        Self::InvalidToken,
        Self::InvalidRequest,
        Self::RateLimited,
        Self::UsageExceeded,
        Self::Unavailable,
        Self::InsufficientScope,
        Self::IpNotAllowed,
    ];

    /// Its name in metrics labels and the access log; for a refusal, the
    /// JSON body's `error` code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Public => "public",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::InvalidRequest => "invalid_request",
            Self::RateLimited => "rate_limited",
            Self::UsageExceeded => "usage_exceeded",
            Self::Unavailable => "unavailable",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
        }
    }

    /// The outcome of a decision.
    pub fn of(result: Result<&Decision, &Rejection>) -> Self {
        match result {
            Ok(Decision::Authenticated(_)) => Self::Authenticated,
            Ok(Decision::Public) => Self::Public,
            Err(rejection) => rejection.outcome(),
        }
    }

    /// Its place in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;
    use crate::auth::InvalidReason;

    #[test]
    fn every_outcome_is_in_all_at_its_index() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome}");
        }
        for (i, reason) in InvalidReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{}", reason.as_str());
        }
    }
}
