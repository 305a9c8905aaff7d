//! The admin listener: the token API (through `TokenService`), health,
//! readiness, metrics and the OpenAPI document (docs/reference/openapi.json).
//!
//! The token routes need `Authorization: Bearer <TOKENGATE_ADMIN_KEY>`,
//! compared in constant time; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` need no key (probes and scrapers).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::bodies::{DEFAULT_PAGE, VerifyBody, query_pairs, read_json, verify_code};
use self::errors::{method_not_allowed, not_found, token_error};
use self::guard::refuse_cross_site;
use self::handlers::{create, revoke, rotate, set_quota, update};
use self::routes::{Parsed, Route};
use crate::audit::{Actor, AuditQuery};
use crate::auth::{Authenticator, Rejection};
use crate::service::{MAX_PAGE, TokenError, TokenService, TokenStatus, scopes_input};
use crate::telemetry::metrics::Metrics;
use crate::token::TokenId;
use crate::wire::{self, Body, percent_decode};

mod bodies;
mod config;
mod errors;
mod guard;
mod handlers;
#[cfg(test)]
mod proptests;
mod routes;
#[cfg(test)]
mod tests;

pub(crate) use self::config::ADMIN_KEY_ENV;
pub use self::config::{AdminConfig, AdminKey};

/// The OpenAPI 3 document, kept in the repository and served as is.
pub(crate) const OPENAPI: &str = include_str!("../../../docs/reference/openapi.json");

/// Largest request body accepted (a create request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// The admin API's state.
pub(crate) struct Admin {
    service: TokenService,
    /// For `POST /v1/verify`: the same cache and limits as the doors.
    auth: Authenticator,
    metrics: Arc<Metrics>,
    /// SHA-256 of the admin key; `None`: no key needed (loopback only).
    key_digest: Option<[u8; 32]>,
}

impl Admin {
    pub(crate) fn new(auth: Authenticator, metrics: Arc<Metrics>, key: Option<&AdminKey>) -> Self {
        Self {
            service: auth.service().clone(),
            auth,
            metrics,
            key_digest: key.map(|k| Sha256::digest(k.0.as_bytes()).into()),
        }
    }

    /// Answers one request from `peer` (the audit trail's actor for the
    /// changes it makes).
    pub(crate) async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::wire::BoxError>,
    {
        if self.key_digest.is_none()
            && let Some(refused) = refuse_cross_site(&request)
        {
            return refused;
        }
        let path = request.uri().path().to_owned();
        let (route, params) = match Route::parse(request.method(), &path) {
            Parsed::Route(route, params) => (Ok(route), params),
            Parsed::WrongMethod {
                allow,
                needs_key,
                params,
            } => (Err((allow, needs_key)), params),
            Parsed::NotFound => {
                return wire::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("No route for {path}."),
                );
            }
        };
        let needs_key = match &route {
            Ok(route) => route.needs_key(),
            Err((_, needs_key)) => *needs_key,
        };
        if needs_key && let Some(refused) = self.check_key(request.headers()) {
            return refused;
        }
        let account = match params.account.as_deref().map(percent_decode) {
            Some(None) => {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Malformed account id in the path.",
                );
            }
            Some(Some(account)) => account,
            None => String::new(),
        };
        let id = params.id.as_deref().unwrap_or_default();
        let query = request.uri().query();
        match route {
            Ok(Route::ListTokens) => self.list(&account, query).await,
            Ok(Route::Audit) => self.audit(query).await,
            Ok(route) => {
                let service = self.service.acting_as(Actor::admin_api(peer));
                self.apply(&service, route, &account, id, request.into_body())
                    .await
            }
            Err((allow, _)) => method_not_allowed(&allow),
        }
    }

    /// Answers a parsed request (its key checked, its account decoded).
    async fn apply<B>(
        &self,
        service: &TokenService,
        route: Route,
        account: &str,
        id: &str,
        body: B,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::wire::BoxError>,
    {
        match route {
            Route::Healthz => wire::json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Route::Readyz => self.ready().await,
            Route::Metrics => self.metrics.response(),
            Route::OpenApi => {
                let mut response = Response::new(wire::full(OPENAPI));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Route::CreateToken => create(service, account, body).await,
            Route::ListTokens => self.list(account, None).await,
            Route::Audit => self.audit(None).await,
            Route::GetToken => self.get(account, id).await,
            Route::RevokeToken => revoke(service, account, id).await,
            Route::UpdateToken => update(service, account, id, body).await,
            Route::RotateToken => rotate(service, account, id, body).await,
            Route::Verify => self.verify(body).await,
            Route::SetQuota => set_quota(service, account, id, Some(body)).await,
            Route::RemoveQuota => set_quota(service, account, id, None::<B>).await,
        }
    }

    async fn ready(&self) -> Response<Body> {
        match self.service.store().ping().await {
            Ok(()) => wire::json(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "store": self.service.store().kind()}),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check: store unreachable");
                wire::error(
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
        let mut response = wire::error(StatusCode::UNAUTHORIZED, code, message);
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="tokengate-admin""#),
        );
        Some(response)
    }

    /// `GET …/tokens?limit=&cursor=&status=` (docs/reference/http-contract.md,
    /// "Listing"): a page in id order and the cursor of the next.
    async fn list(&self, account: &str, query: Option<&str>) -> Response<Body> {
        let (mut limit, mut cursor, mut status) = (DEFAULT_PAGE, None, None);
        for (name, value) in query_pairs(query) {
            let bad = |field: &'static str, reason: &str| {
                token_error(TokenError::InvalidInput {
                    field,
                    reason: reason.to_owned(),
                })
            };
            match name {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                    _ => return bad("limit", "must be a number between 1 and 1000"),
                },
                "cursor" => match value.parse::<TokenId>() {
                    Ok(id) => cursor = Some(id),
                    Err(_) => return bad("cursor", "must be the `next` of a previous page"),
                },
                "status" => match value.parse::<TokenStatus>() {
                    Ok(parsed) => status = Some(parsed),
                    Err(e) => return bad("status", &e.to_string()),
                },
                _ => return bad("query", "takes only limit, cursor and status"),
            }
        }
        match self
            .service
            .list_tokens_page(account, cursor, limit, status)
            .await
        {
            Ok((tokens, next)) => wire::json(
                StatusCode::OK,
                &serde_json::json!({ "tokens": tokens, "next": next }),
            ),
            Err(e) => token_error(e),
        }
    }

    async fn get(&self, account: &str, id: &str) -> Response<Body> {
        let Some(id) = parse_id(id) else {
            return not_found();
        };
        match self.service.get_token(id, account).await {
            Ok(info) => wire::json(StatusCode::OK, &serde_json::json!(info)),
            Err(e) => token_error(e),
        }
    }

    /// `GET /v1/audit?account=&after=&limit=` (docs/reference/http-contract.md,
    /// "Audit log"): entries oldest first and the `after` of the next page.
    async fn audit(&self, query: Option<&str>) -> Response<Body> {
        let mut audit = AuditQuery {
            limit: DEFAULT_PAGE,
            ..AuditQuery::default()
        };
        for (name, value) in query_pairs(query) {
            match name {
                "account" => audit.account = Some(value),
                "after" => audit.after = Some(value),
                "limit" => match value.parse::<usize>() {
                    Ok(n) => audit.limit = n,
                    Err(_) => audit.limit = 0,
                },
                _ => {
                    return token_error(TokenError::InvalidInput {
                        field: "query",
                        reason: "takes only account, after and limit".to_owned(),
                    });
                }
            }
        }
        match self.service.read_audit(&audit).await {
            Ok(page) => wire::json(StatusCode::OK, &serde_json::json!(page)),
            Err(e) => token_error(e),
        }
    }

    /// `POST /v1/verify` (docs/reference/http-contract.md, "Verify API"): 200 with
    /// the verdict for any token, valid or not; 503 only when the store
    /// cannot answer.
    async fn verify<B>(&self, body: B) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<crate::wire::BoxError>,
    {
        let body: VerifyBody = match read_json(body, "verify request").await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let needed = match scopes_input(body.scopes) {
            Ok(scopes) => scopes.as_slice().to_vec(),
            Err(e) => return token_error(e),
        };
        let client = match body.ip.as_deref().map(str::parse::<std::net::IpAddr>) {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => {
                return token_error(TokenError::InvalidInput {
                    field: "ip",
                    reason: "must be an IPv4 or IPv6 address".to_owned(),
                });
            }
        };
        let verdict = match self.auth.verify(&body.token, &needed, client).await {
            Ok(verified) => {
                let mut verdict = serde_json::json!({
                    "valid": true,
                    "code": "VALID",
                    "account_id": verified.auth.account_id,
                    "token_id": verified.auth.token_id,
                    "scopes": verified.auth.scopes,
                    "meta": verified.auth.meta,
                    "expires_at": verified.expires_at,
                });
                if let Some(remaining) = verified.remaining {
                    verdict["remaining"] = remaining.into();
                }
                verdict
            }
            Err(Rejection::Unavailable { .. }) => {
                return wire::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The token store is unreachable.",
                );
            }
            Err(rejection) => serde_json::json!({
                "valid": false,
                "code": verify_code(&rejection),
                "account_id": null,
                "token_id": null,
                "scopes": null,
                "meta": null,
                "expires_at": null,
            }),
        };
        wire::json(StatusCode::OK, &verdict)
    }
}

fn parse_id(id: &str) -> Option<TokenId> {
    percent_decode(id)?.parse().ok()
}
