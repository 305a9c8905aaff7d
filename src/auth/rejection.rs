//! Why a request was refused, and the one function that turns that into an
//! HTTP response (docs/reference/http-contract.md, "Responses"): status,
//! `WWW-Authenticate`, rate-limit headers and a JSON body that never says
//! which part of a token was wrong.

use std::time::Duration;

use bytes::Bytes;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::Outcome;
use crate::service::TokenError;
use crate::wire;

const REALM: &str = r#"Bearer realm="tokengate""#;

/// Why a token was not accepted: kept for logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// Not a well-formed `mk_` token.
    Format,
    /// No such token.
    NotFound,
    /// Revoked.
    Revoked,
    /// Disabled (it may be enabled again).
    Disabled,
    /// Expired.
    Expired,
    /// The secret does not match.
    WrongSecret,
}

impl InvalidReason {
    /// Every reason, in the order of
    /// [`AuthStats::invalid_tokens`](super::AuthStats::invalid_tokens).
    pub const ALL: [InvalidReason; 6] = [
        Self::Format,
        Self::NotFound,
        Self::Revoked,
        Self::Disabled,
        Self::Expired,
        Self::WrongSecret,
    ];

    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::NotFound => "not_found",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::WrongSecret => "wrong_secret",
        }
    }

    pub(crate) fn from_error(e: &TokenError) -> Option<Self> {
        Some(match e {
            TokenError::InvalidFormat(_) => Self::Format,
            TokenError::NotFound => Self::NotFound,
            TokenError::Revoked => Self::Revoked,
            TokenError::Disabled => Self::Disabled,
            TokenError::Expired => Self::Expired,
            TokenError::WrongSecret => Self::WrongSecret,
            _ => return None,
        })
    }
}

/// A refused request. It is answered, not raised: front doors turn it into a
/// response with [`Rejection::to_response`], which also puts it in the
/// response's extensions for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No token was sent: 401 without an error code (RFC 6750 §3.1).
    MissingToken,
    /// A token was sent and is not valid: 401 `invalid_token`.
    InvalidToken(InvalidReason),
    /// The token is valid but lacks a scope the route needs: 403
    /// `insufficient_scope` (RFC 6750 §3.1).
    InsufficientScope {
        /// The scopes the route needs, space-separated.
        scope: String,
    },
    /// The token is valid but may not be used from the client's address
    /// (its IP allowlist): 403 `ip_not_allowed`.
    IpNotAllowed,
    /// The request is malformed, e.g. it carries two tokens: 400
    /// `invalid_request`.
    InvalidRequest(&'static str),
    /// Over a rate limit: 429.
    RateLimited {
        /// Which limit: `"token"` or `"failed-auth"`.
        policy: &'static str,
        /// Requests allowed per window.
        quota: u32,
        /// The window.
        window: Duration,
        /// When to try again.
        retry_after: Duration,
    },
    /// The token's usage quota is used up: 429 `usage_exceeded`
    /// (docs/reference/quotas.md).
    UsageExceeded {
        /// When the quota refills, if it does.
        retry_after: Option<Duration>,
    },
    /// The store cannot answer, or verification is overloaded, and the cache
    /// cannot vouch for the token: 503. Never 401, never 200.
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

impl Rejection {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } | Self::IpNotAllowed => StatusCode::FORBIDDEN,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::RateLimited { .. } | Self::UsageExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        self.outcome().as_str()
    }

    /// The [`Outcome`] this refusal is counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::MissingToken => Outcome::MissingToken,
            Self::InvalidToken(_) => Outcome::InvalidToken,
            Self::InsufficientScope { .. } => Outcome::InsufficientScope,
            Self::IpNotAllowed => Outcome::IpNotAllowed,
            Self::InvalidRequest(_) => Outcome::InvalidRequest,
            Self::RateLimited { .. } => Outcome::RateLimited,
            Self::UsageExceeded { .. } => Outcome::UsageExceeded,
            Self::Unavailable { .. } => Outcome::Unavailable,
        }
    }

    /// The human message of the JSON body: the same for every bad token.
    pub fn message(&self) -> String {
        match self {
            Self::MissingToken => {
                "This API needs a token: send `Authorization: Bearer <token>`.".into()
            }
            Self::InvalidToken(_) => "The token is not valid.".into(),
            Self::InsufficientScope { scope } => {
                format!("The token lacks a scope this request needs: {scope}.")
            }
            Self::IpNotAllowed => "The token may not be used from this address.".into(),
            Self::InvalidRequest(why) => (*why).to_owned(),
            Self::RateLimited { retry_after, .. } => {
                format!(
                    "Too many requests; retry in {} s.",
                    whole_seconds(*retry_after)
                )
            }
            Self::UsageExceeded {
                retry_after: Some(retry_after),
            } => format!(
                "The token's usage quota is used up; it refills in {} s.",
                whole_seconds(*retry_after)
            ),
            Self::UsageExceeded { retry_after: None } => {
                "The token's usage quota is used up.".into()
            }
            Self::Unavailable { retry_after } => format!(
                "Authentication is temporarily unavailable; retry in {} s.",
                whole_seconds(*retry_after)
            ),
        }
    }

    /// The full HTTP response, with this rejection in its extensions.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut response = wire::error_response(self.status(), self.code(), &self.message(), None);
        let headers = response.headers_mut();
        let www = match self {
            Self::MissingToken => Some(REALM.to_owned()),
            Self::InvalidToken(_) => Some(format!(r#"{REALM}, error="invalid_token""#)),
            Self::InsufficientScope { scope } => Some(format!(
                r#"{REALM}, error="insufficient_scope", scope="{scope}""#
            )),
            Self::InvalidRequest(_) => Some(format!(r#"{REALM}, error="invalid_request""#)),
            _ => None,
        };
        if let Some(value) = www.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        match self {
            Self::RateLimited {
                policy,
                quota,
                window,
                retry_after,
            } => {
                let retry = whole_seconds(*retry_after);
                headers.insert(RETRY_AFTER, HeaderValue::from(retry));
                // draft-ietf-httpapi-ratelimit-headers: the policy (quota per
                // window) and the current state (r = remaining, t = seconds
                // until there is room again).
                let window = whole_seconds(*window);
                if let Ok(v) = HeaderValue::from_str(&format!(r#""{policy}";q={quota};w={window}"#))
                {
                    headers.insert("ratelimit-policy", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!(r#""{policy}";r=0;t={retry}"#)) {
                    headers.insert("ratelimit", v);
                }
            }
            Self::Unavailable { retry_after }
            | Self::UsageExceeded {
                retry_after: Some(retry_after),
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(whole_seconds(*retry_after)));
            }
            _ => {}
        }
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// Seconds, rounded up, at least 1: `Retry-After: 0` invites a hot loop.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}
