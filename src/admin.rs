//! The admin listener: the token API (through `TokenService`), health,
//! readiness, metrics and the OpenAPI document (docs/openapi.json).
//!
//! The token routes need `Authorization: Bearer <TOKENGATE_ADMIN_KEY>`,
//! compared in constant time; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` need no key (probes and scrapers).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http_util::{self, Body, percent_decode};
use crate::metrics::Metrics;
use crate::service::{CreateTokenParams, TokenError, TokenService};
use crate::settings::{InvalidConfig, invalid};
use crate::token::TokenId;

/// The environment variable holding the admin API's bearer key.
pub(crate) const ADMIN_KEY_ENV: &str = "TOKENGATE_ADMIN_KEY";
/// Shortest admin key accepted.
pub(crate) const MIN_ADMIN_KEY_LEN: usize = 16;

/// `[admin]`: the admin API, health and metrics (`tokengate serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; unset: off.
    pub listen: Option<SocketAddr>,
    /// Serve the token routes without `TOKENGATE_ADMIN_KEY`, allowed only on
    /// a loopback address (for trying tokengate on a laptop).
    pub allow_unauthenticated_loopback: bool,
    /// The token routes' bearer key: from `TOKENGATE_ADMIN_KEY` only (the
    /// loader fills it in), never from the file, and never serialized.
    #[serde(skip)]
    pub key: Option<AdminKey>,
}

impl AdminConfig {
    /// Keyless only on loopback; with a listener, a key of at least
    /// [`MIN_ADMIN_KEY_LEN`] characters unless keyless is allowed.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.allow_unauthenticated_loopback && self.listen.is_some_and(|a| !a.ip().is_loopback())
        {
            return Err(invalid(
                "admin.allow_unauthenticated_loopback",
                "only allowed when admin.listen is a loopback address",
            ));
        }
        let Some(addr) = self.listen else {
            return Ok(());
        };
        match &self.key {
            Some(key) if key.0.len() < MIN_ADMIN_KEY_LEN => Err(InvalidConfig::Environment(
                format!("{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_LEN} characters"),
            )),
            Some(_) => Ok(()),
            None if self.allow_unauthenticated_loopback => Ok(()),
            None => Err(InvalidConfig::Environment(format!(
                "the admin listener ({addr}) needs {ADMIN_KEY_ENV}, or a loopback address with \
                 [admin] allow_unauthenticated_loopback = true"
            ))),
        }
    }
}

/// The admin API's bearer key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(String);

impl AdminKey {
    /// A key (checked by [`AdminConfig::validate`]).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(***)")
    }
}

/// The OpenAPI 3 document, kept in the repository and served as is.
pub(crate) const OPENAPI: &str = include_str!("../docs/openapi.json");

/// Largest request body accepted (a create request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The admin API's state.
pub(crate) struct Admin {
    service: TokenService,
    metrics: Arc<Metrics>,
    /// SHA-256 of the admin key; `None`: no key needed (loopback only).
    key_digest: Option<[u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

impl Admin {
    pub(crate) fn new(
        service: TokenService,
        metrics: Arc<Metrics>,
        key: Option<&AdminKey>,
    ) -> Self {
        Self {
            service,
            metrics,
            key_digest: key.map(|k| Sha256::digest(k.0.as_bytes()).into()),
        }
    }

    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::http_util::BoxError>,
    {
        if self.key_digest.is_none() {
            if let Some(refused) = refuse_cross_site(&request) {
                return refused;
            }
        }
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method().clone();
        match segments.as_slice() {
            ["healthz"] => only_get(&method, || {
                http_util::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }),
            ["readyz"] if method == Method::GET || method == Method::HEAD => self.ready().await,
            ["metrics"] => only_get(&method, || {
                let mut response = Response::new(http_util::full(self.metrics.render()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }),
            ["openapi.json"] => only_get(&method, || {
                let mut response = Response::new(http_util::full(OPENAPI));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }),
            ["v1", "accounts", account, "tokens", rest @ ..] if rest.len() <= 1 => {
                if let Some(refused) = self.check_key(request.headers()) {
                    return refused;
                }
                let Some(account) = percent_decode(account) else {
                    return http_util::error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Malformed account id in the path.",
                    );
                };
                match (rest.first(), method) {
                    (None, Method::POST) => self.create(&account, request.into_body()).await,
                    (None, Method::GET) => self.list(&account).await,
                    (Some(id), Method::GET) => self.get(&account, id).await,
                    (Some(id), Method::DELETE) => self.revoke(&account, id).await,
                    (None, _) => method_not_allowed("GET, POST"),
                    (Some(_), _) => method_not_allowed("GET, DELETE"),
                }
            }
            ["readyz"] => method_not_allowed("GET, HEAD"),
            _ => http_util::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("No route for {path}."),
            ),
        }
    }

    async fn ready(&self) -> Response<Body> {
        match self.service.store().ping().await {
            Ok(()) => http_util::json(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "store": self.service.store().kind()}),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check: store unreachable");
                http_util::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The token store is unreachable.",
                )
            }
        }
    }

    /// `None` when the request may go on, else the 401 to send.
    fn check_key(&self, headers: &http::HeaderMap) -> Option<Response<Body>> {
        let expected = self.key_digest?;
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        // Comparing digests keeps the comparison constant-time and
        // independent of the key's length.
        let ok = presented.is_some_and(|key| {
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            bool::from(digest.ct_eq(&expected))
        });
        if ok {
            return None;
        }
        let (code, message) = if presented.is_some() {
            ("invalid_token", "The admin key is not valid.")
        } else {
            (
                "missing_token",
                "The admin API needs `Authorization: Bearer <admin key>`.",
            )
        };
        let mut response = http_util::error(StatusCode::UNAUTHORIZED, code, message);
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="tokengate-admin""#),
        );
        Some(response)
    }

    async fn create<B>(&self, account: &str, body: B) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::http_util::BoxError>,
    {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return http_util::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    format!("The body is larger than {MAX_BODY} bytes, or could not be read."),
                );
            }
        };
        let body: CreateBody = match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(e) => {
                return http_util::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("The body is not a valid create request: {e}"),
                );
            }
        };
        let created = self
            .service
            .create_token(CreateTokenParams {
                account_id: account.to_owned(),
                name: body.name,
                expires_in_days: body.expires_in_days,
            })
            .await;
        match created {
            Ok(created) => {
                let mut value = serde_json::json!(created.info);
                value["token"] = created.token.expose_secret().into();
                http_util::json(StatusCode::CREATED, &value)
            }
            Err(e) => token_error(e),
        }
    }

    async fn list(&self, account: &str) -> Response<Body> {
        match self.service.list_tokens(account).await {
            Ok(tokens) => http_util::json(StatusCode::OK, &serde_json::json!({ "tokens": tokens })),
            Err(e) => token_error(e),
        }
    }

    async fn get(&self, account: &str, id: &str) -> Response<Body> {
        let Some(id) = parse_id(id) else {
            return not_found();
        };
        match self.service.get_token(id, account).await {
            Ok(info) => http_util::json(StatusCode::OK, &serde_json::json!(info)),
            Err(e) => token_error(e),
        }
    }

    async fn revoke(&self, account: &str, id: &str) -> Response<Body> {
        let Some(id) = parse_id(id) else {
            return not_found();
        };
        match self.service.revoke_token(id, account).await {
            Ok(info) => http_util::json(StatusCode::OK, &serde_json::json!(info)),
            Err(e) => token_error(e),
        }
    }
}

/// Without an admin key, the loopback listener is open to every process on
/// the machine, and so to a web page in its browser: a cross-site form POST,
/// or a DNS-rebinding page whose host name points at 127.0.0.1. A browser
/// sends such a request with its page's `Host` / `Origin`, and a form can
/// only send `text/plain` or form bodies, so keyless mode refuses (403) a
/// `Host` that is not a loopback name or address and any non-loopback
/// `Origin`, and (415) a POST whose body is not declared JSON (docs/http-contract.md,
/// "Admin API without a key"). With a key, none of this is needed: a page
/// cannot attach it.
fn refuse_cross_site<B>(request: &Request<B>) -> Option<Response<Body>> {
    let headers = request.headers();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(is_loopback_host) {
        return Some(http_util::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Without an admin key, the admin API answers only requests to a loopback host \
             (localhost, 127.0.0.1, [::1]).",
        ));
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let loopback = origin
            .to_str()
            .ok()
            .and_then(|o| {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
            })
            .is_some_and(is_loopback_host);
        if !loopback {
            return Some(http_util::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Without an admin key, the admin API refuses requests from web pages of other sites.",
            ));
        }
    }
    // A POST (the one route with a body) must say JSON: a cross-site form
    // cannot, and a page's fetch that does needs a CORS preflight, which
    // this API never grants.
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if request.method() == Method::POST && !json {
        return Some(http_util::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Without an admin key, a request body must be sent as `Content-Type: application/json`.",
        ));
    }
    None
}

/// `localhost`, `*.localhost` (RFC 6761), a 127/8 address or `[::1]`, with
/// or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_id(id: &str) -> Option<TokenId> {
    percent_decode(id)?.parse().ok()
}

fn only_get(method: &Method, respond: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if method == Method::GET || method == Method::HEAD {
        respond()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = http_util::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("Method not allowed on this route (allowed: {allow})."),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn not_found() -> Response<Body> {
    http_util::error(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such token for this account.",
    )
}

/// The one mapping from service errors to admin responses.
fn token_error(e: TokenError) -> Response<Body> {
    match e {
        TokenError::NotFound => not_found(),
        TokenError::InvalidInput { field, reason } => http_util::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "error": "invalid_input", "field": field, "message": format!("{field} {reason}") }),
        ),
        TokenError::Store(e) => {
            tracing::warn!(error = %e, "admin API: store unavailable");
            http_util::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The token store is unreachable.",
            )
        }
        e => {
            tracing::error!(error = %e, "admin API failure");
            http_util::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8081",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1:8081",
            "127.1.2.3",
            "[::1]:8081",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "10.0.0.1:8081",
            "[2001:db8::1]:80",
            "",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    /// Every route: (method, path template). The OpenAPI document must list
    /// exactly these (checked by a test).
    const ROUTES: [(&str, &str); 8] = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/accounts/{account}/tokens"),
        ("GET", "/v1/accounts/{account}/tokens"),
        ("GET", "/v1/accounts/{account}/tokens/{id}"),
        ("DELETE", "/v1/accounts/{account}/tokens/{id}"),
    ];

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
