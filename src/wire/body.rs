//! The boxed body every front door answers with, and JSON and error
//! responses (docs/reference/http-contract.md, "Responses").

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body of every listener.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response (`Content-Type: application/json`, `Cache-Control:
/// no-store`), in whichever body type the caller needs.
pub(crate) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The error body every door answers with (docs/reference/http-contract.md,
/// "Responses"): `{"error": code, "message": message}`, plus `field` naming
/// the bad input of a 422. The one place it is written.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({ "error": code, "message": message });
    if let Some(field) = field {
        body["field"] = field.into();
    }
    json_response(status, &body)
}

/// A response with a boxed body (the type every listener answers with).
pub(crate) fn boxed(response: Response<Full<Bytes>>) -> Response<Body> {
    response.map(|body| body.map_err(|never| match never {}).boxed())
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    boxed(json_response(status, value))
}

/// `{"error": code, "message": message}` with `status`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    boxed(error_response(status, code, &message.into(), None))
}

/// An error and its causes on one line (`client error (Connect): invalid
/// peer certificate: UnknownIssuer`), each said once.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
