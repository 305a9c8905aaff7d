//! The request bodies and query strings of the admin API, and how a bad
//! one is answered (docs/reference/openapi.json).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::MAX_BODY;
use crate::auth::{InvalidReason, Rejection};
use crate::service::{QuotaParams, TokenError};
use crate::token::TokenRateLimit;
use crate::wire;
use crate::wire::{Body, percent_decode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    pub(super) name: String,
    #[serde(default)]
    pub(super) expires_in_days: Option<u32>,
    #[serde(default)]
    pub(super) quota: Option<QuotaParams>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) allowed_ips: Vec<String>,
    #[serde(default)]
    pub(super) meta: Option<serde_json::Value>,
    /// Checked by [`typed`] (422 naming it, not a JSON error).
    #[serde(default)]
    pub(super) rate_limit: Option<serde_json::Value>,
}

/// `PATCH …/tokens/{id}`: the fields to change; absent ones stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) scopes: Option<Vec<String>>,
    /// Absent: unchanged; `null`: never expires.
    #[serde(default, deserialize_with = "present")]
    pub(super) expires_at: Option<Option<i64>>,
    #[serde(default)]
    pub(super) enabled: Option<bool>,
    #[serde(default)]
    pub(super) allowed_ips: Option<Vec<String>>,
    /// Absent: unchanged; `null` or `{}`: none.
    #[serde(default, deserialize_with = "present")]
    pub(super) meta: Option<Option<serde_json::Value>>,
    /// Absent: unchanged; `null`: the configured limit.
    #[serde(default, deserialize_with = "present")]
    pub(super) rate_limit: Option<Option<serde_json::Value>>,
    /// Absent: unchanged; `null`: unlimited.
    #[serde(default, deserialize_with = "present")]
    pub(super) quota: Option<Option<serde_json::Value>>,
}

/// `POST …/tokens/{id}/rotate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    /// How long the old token keeps working: `"24h"`, `"0"`, … (read as
    /// any JSON value: a number is a 422 naming it, not a JSON error).
    pub(super) grace: serde_json::Value,
}

/// Tokens in a page of `GET …/tokens` without `limit`.
pub(super) const DEFAULT_PAGE: usize = 100;

/// `POST /v1/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    pub(super) token: String,
    /// Scopes the caller needs, every one.
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    /// The end client's address, for the token's IP allowlist.
    #[serde(default)]
    pub(super) ip: Option<String>,
}

/// The verify API's `code` for a refusal.
pub(super) fn verify_code(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::InvalidToken(InvalidReason::NotFound) => "NOT_FOUND",
        Rejection::InvalidToken(InvalidReason::Revoked) => "REVOKED",
        Rejection::InvalidToken(InvalidReason::Expired) => "EXPIRED",
        Rejection::InvalidToken(InvalidReason::Disabled) => "DISABLED",
        Rejection::InsufficientScope { .. } => "INSUFFICIENT_SCOPE",
        Rejection::IpNotAllowed => "IP_NOT_ALLOWED",
        Rejection::RateLimited { .. } => "RATE_LIMITED",
        Rejection::UsageExceeded { .. } => "USAGE_EXCEEDED",
        _ => "INVALID",
    }
}

/// A nested object of a body (`rate_limit`, `quota`), read on its own so
/// that a bad one is a 422 naming it rather than a JSON error.
pub(super) trait Nested: serde::de::DeserializeOwned {
    const FIELD: &'static str;
}

impl Nested for TokenRateLimit {
    const FIELD: &'static str = "rate_limit";
}

impl Nested for QuotaParams {
    const FIELD: &'static str = "quota";
}

pub(super) fn typed<T: Nested>(value: serde_json::Value) -> Result<T, TokenError> {
    serde_json::from_value(value).map_err(|e| TokenError::InvalidInput {
        field: T::FIELD,
        reason: format!("is not valid: {e}"),
    })
}

/// A field that may be `null`: present (even as `null`) is `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Reads a JSON body of at most `MAX_BODY` bytes; the error response names
/// `what` was expected.
pub(super) async fn read_json<T, B>(body: B, what: &str) -> Result<T, Response<Body>>
where
    T: serde::de::DeserializeOwned,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::wire::BoxError>,
{
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(wire::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("The body is larger than {MAX_BODY} bytes, or could not be read."),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        // A well-formed body with a field no route takes: 422 naming it,
        // like any other input that breaks a rule.
        if let Some(field) = field_in(&e, "unknown field `") {
            return wire::boxed(wire::error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                &format!("{field:?} is not a field of a {what}: {e}"),
                Some(&field),
            ));
        }
        if let Some(field) = field_in(&e, "missing field `") {
            return wire::boxed(wire::error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                &format!("{field} is required in a {what}"),
                Some(&field),
            ));
        }
        wire::error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The body is not a valid {what}: {e}"),
        )
    })
}

/// The field a well-formed body named wrongly: serde's "unknown field
/// `name`, expected …" (`deny_unknown_fields`) or "missing field `name`",
/// as `prefix` says; at most 64 characters of it.
fn field_in(e: &serde_json::Error, prefix: &str) -> Option<String> {
    let message = e.to_string();
    let (field, _) = message.strip_prefix(prefix)?.split_once('`')?;
    Some(field.chars().take(64).collect())
}

/// A query string's `name=value` pairs, values percent-decoded (a bad
/// escape reads as empty, which the routes' own rules then refuse).
pub(super) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name, percent_decode(value).unwrap_or_default())
        })
}
