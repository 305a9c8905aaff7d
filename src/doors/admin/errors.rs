//! Error answers of the admin API: a JSON body with the right status.

use http::{HeaderValue, Response, StatusCode};

use crate::service::TokenError;
use crate::wire;
use crate::wire::Body;

pub(super) fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut response = wire::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("Method not allowed on this route (allowed: {allow})."),
    );
    if let Ok(allow) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(http::header::ALLOW, allow);
    }
    response
}

pub(super) fn not_found() -> Response<Body> {
    wire::error(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such token for this account.",
    )
}

/// The one mapping from service errors to admin responses.
pub(super) fn token_error(e: TokenError) -> Response<Body> {
    match e {
        TokenError::NotFound => not_found(),
        TokenError::Revoked => wire::error(
            StatusCode::CONFLICT,
            "revoked",
            "The token is revoked: it cannot be changed.",
        ),
        TokenError::Expired => wire::error(
            StatusCode::CONFLICT,
            "expired",
            "The token has expired: it cannot be rotated.",
        ),
        TokenError::AlreadyRotated(to) => wire::error(
            StatusCode::CONFLICT,
            "already_rotated",
            format!("The token was already rotated to {to}: rotate that one."),
        ),
        TokenError::InvalidInput { field, reason } => wire::boxed(wire::error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            &format!("{field} {reason}"),
            Some(field),
        )),
        TokenError::Store(e) => {
            tracing::warn!(error = %e, "admin API: store unavailable");
            wire::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The token store is unreachable.",
            )
        }
        e => {
            tracing::error!(error = %e, "admin API failure");
            wire::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error.",
            )
        }
    }
}
