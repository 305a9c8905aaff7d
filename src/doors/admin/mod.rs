//! The admin listener: the token API (through `TokenService`), health,
//! readiness, metrics and the OpenAPI document (docs/reference/openapi.json).
//!
//! The token routes need `Authorization: Bearer <TOKENGATE_ADMIN_KEY>`,
//! compared in constant time; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` need no key (probes and scrapers).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{Actor, AuditQuery};
use crate::auth::{Authenticator, InvalidReason, Rejection};
use crate::service::{
    CreateTokenParams, CreatedToken, MAX_EXPIRES_IN_DAYS, MAX_GRACE, MAX_PAGE, QuotaParams,
    RotatedToken, TokenError, TokenInfo, TokenService, TokenStatus, TokenUpdate, allowed_ips_input,
    meta_input, scopes_input,
};
use crate::settings::{InvalidConfig, invalid};
use crate::telemetry::metrics::Metrics;
use crate::tls::{ListenerTls, TlsKeys};
use crate::token::TokenRateLimit;
use crate::token::{Meta, TokenId};
use crate::wire::{self, Body, percent_decode};

/// The config keys of `[admin]`'s listener certificate.
pub(crate) const TLS_KEYS: TlsKeys = TlsKeys {
    cert: "admin.tls_cert",
    key: "admin.tls_key",
};

/// The environment variable holding the admin API's bearer key.
pub(crate) const ADMIN_KEY_ENV: &str = "TOKENGATE_ADMIN_KEY";
/// Shortest admin key accepted.
pub(crate) const MIN_ADMIN_KEY_LEN: usize = 16;

/// `[admin]`: the admin API, health and metrics (`tokengate serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; unset: off.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// Serve the token routes without `TOKENGATE_ADMIN_KEY`, allowed only on
    /// a loopback address (for trying tokengate on a laptop).
    pub allow_unauthenticated_loopback: bool,
    /// The listener's certificate chain (PEM): with `tls_key`, the admin
    /// API serves HTTPS (docs/guide/tls.md).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The token routes' bearer key: from `TOKENGATE_ADMIN_KEY` only (the
    /// loader fills it in), never from the file, and never serialized.
    #[serde(skip)]
    pub key: Option<AdminKey>,
}

impl AdminConfig {
    /// The rules on the file's keys alone: keyless only on loopback; a
    /// certificate and its key together.
    pub fn validate_file(&self) -> Result<(), InvalidConfig> {
        self.tls().validate()?;
        if self.allow_unauthenticated_loopback && self.listen.is_some_and(|a| !a.ip().is_loopback())
        {
            return Err(invalid(
                "admin.allow_unauthenticated_loopback",
                "only allowed when admin.listen is a loopback address",
            ));
        }
        Ok(())
    }

    /// The listener's certificate settings.
    pub(crate) fn tls(&self) -> ListenerTls<'_> {
        ListenerTls {
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            keys: TLS_KEYS,
        }
    }

    /// Keyless only on loopback; with a listener, a key of at least
    /// 16 characters unless keyless is allowed. `serve`
    /// checks this; loading a file checks only [`AdminConfig::validate_file`]
    /// (the token commands read the same file and need no admin key).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.validate_file()?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    quota: Option<QuotaParams>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
    /// Checked by [`typed`] (422 naming it, not a JSON error).
    #[serde(default)]
    rate_limit: Option<serde_json::Value>,
}

/// `PATCH …/tokens/{id}`: the fields to change; absent ones stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Absent: unchanged; `null`: never expires.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<i64>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    allowed_ips: Option<Vec<String>>,
    /// Absent: unchanged; `null` or `{}`: none.
    #[serde(default, deserialize_with = "present")]
    meta: Option<Option<serde_json::Value>>,
    /// Absent: unchanged; `null`: the configured limit.
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<serde_json::Value>>,
    /// Absent: unchanged; `null`: unlimited.
    #[serde(default, deserialize_with = "present")]
    quota: Option<Option<serde_json::Value>>,
}

/// `POST …/tokens/{id}/rotate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the old token keeps working: `"24h"`, `"0"`, … (read as
    /// any JSON value: a number is a 422 naming it, not a JSON error).
    grace: serde_json::Value,
}

/// Tokens in a page of `GET …/tokens` without `limit`.
const DEFAULT_PAGE: usize = 100;

/// `POST /v1/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    token: String,
    /// Scopes the caller needs, every one.
    #[serde(default)]
    scopes: Vec<String>,
    /// The end client's address, for the token's IP allowlist.
    #[serde(default)]
    ip: Option<String>,
}

/// The verify API's `code` for a refusal.
fn verify_code(rejection: &Rejection) -> &'static str {
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
trait Nested: serde::de::DeserializeOwned {
    const FIELD: &'static str;
}

impl Nested for TokenRateLimit {
    const FIELD: &'static str = "rate_limit";
}

impl Nested for QuotaParams {
    const FIELD: &'static str = "quota";
}

fn typed<T: Nested>(value: serde_json::Value) -> Result<T, TokenError> {
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
                "status" => match value.as_str() {
                    "active" => status = Some(TokenStatus::Active),
                    "expired" => status = Some(TokenStatus::Expired),
                    "revoked" => status = Some(TokenStatus::Revoked),
                    "disabled" => status = Some(TokenStatus::Disabled),
                    _ => return bad("status", "must be active, expired, revoked or disabled"),
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

async fn create<B>(service: &TokenService, account: &str, body: B) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::wire::BoxError>,
{
    let body: CreateBody = match read_json(body, "create request").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let meta = body.meta.map(meta_input).transpose();
    let (scopes, allowed_ips, meta) = match (
        scopes_input(body.scopes),
        allowed_ips_input(&body.allowed_ips),
        meta,
    ) {
        (Ok(scopes), Ok(allowed_ips), Ok(meta)) => (scopes, allowed_ips, meta),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return token_error(e),
    };
    let rate_limit = match body.rate_limit.map(typed::<TokenRateLimit>).transpose() {
        Ok(limit) => limit,
        Err(e) => return token_error(e),
    };
    let created = service
        .create_token(CreateTokenParams {
            account_id: account.to_owned(),
            name: body.name,
            expires_in_days: body.expires_in_days,
            quota: body.quota,
            scopes,
            allowed_ips,
            meta: meta.unwrap_or_default(),
            rate_limit,
        })
        .await;
    match created {
        Ok(created) => match serde_json::to_value(CreatedTokenBody::new(&created)) {
            Ok(value) => wire::json(StatusCode::CREATED, &value),
            Err(e) => token_error(TokenError::Internal(e.to_string())),
        },
        Err(e) => token_error(e),
    }
}

async fn revoke(service: &TokenService, account: &str, id: &str) -> Response<Body> {
    let Some(id) = parse_id(id) else {
        return not_found();
    };
    match service.revoke_token(id, account).await {
        Ok(info) => wire::json(StatusCode::OK, &serde_json::json!(info)),
        Err(e) => token_error(e),
    }
}

/// `PATCH …/tokens/{id}` (docs/reference/http-contract.md, "Changing a token").
async fn update<B>(service: &TokenService, account: &str, id: &str, body: B) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::wire::BoxError>,
{
    let Some(id) = parse_id(id) else {
        return not_found();
    };
    let body: UpdateBody = match read_json(body, "update request").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let scopes = body.scopes.map(scopes_input).transpose();
    let allowed_ips = body
        .allowed_ips
        .as_deref()
        .map(allowed_ips_input)
        .transpose();
    let meta = body
        .meta
        .map(|meta| meta.map_or(Ok(Meta::default()), meta_input))
        .transpose();
    let (scopes, allowed_ips, meta) = match (scopes, allowed_ips, meta) {
        (Ok(scopes), Ok(allowed_ips), Ok(meta)) => (scopes, allowed_ips, meta),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return token_error(e),
    };
    let rate_limit = body
        .rate_limit
        .map(|limit| limit.map(typed::<TokenRateLimit>).transpose())
        .transpose();
    let quota = body
        .quota
        .map(|quota| quota.map(typed::<QuotaParams>).transpose())
        .transpose();
    let (rate_limit, quota) = match (rate_limit, quota) {
        (Ok(rate_limit), Ok(quota)) => (rate_limit, quota),
        (Err(e), _) | (_, Err(e)) => return token_error(e),
    };
    let update = TokenUpdate {
        name: body.name,
        scopes,
        expires_at: body.expires_at,
        enabled: body.enabled,
        allowed_ips,
        meta,
        rate_limit,
        quota,
    };
    match service.update_token(id, account, update).await {
        Ok(info) => wire::json(StatusCode::OK, &serde_json::json!(info)),
        Err(e) => token_error(e),
    }
}

/// `PUT …/quota` (`Some` body) or `DELETE …/quota`: sets or removes the
/// token's quota (docs/reference/quotas.md).
async fn set_quota<B>(
    service: &TokenService,
    account: &str,
    id: &str,
    body: Option<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::wire::BoxError>,
{
    let Some(id) = parse_id(id) else {
        return not_found();
    };
    let quota: Option<QuotaParams> = match body {
        Some(body) => match read_json(body, "quota").await {
            Ok(quota) => Some(quota),
            Err(refused) => return refused,
        },
        None => None,
    };
    match service.set_quota(id, account, quota).await {
        Ok(info) => wire::json(StatusCode::OK, &serde_json::json!(info)),
        Err(e) => token_error(e),
    }
}

/// `POST …/tokens/{id}/rotate` (docs/reference/http-contract.md, "Rotating a
/// token"): 201 with the new token (its plaintext this once) and the old
/// one's record under `old`.
async fn rotate<B>(service: &TokenService, account: &str, id: &str, body: B) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<crate::wire::BoxError>,
{
    let Some(id) = parse_id(id) else {
        return not_found();
    };
    let body: RotateBody = match read_json(body, "rotate request").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let grace = match body.grace.as_str().map(parse_grace) {
        Some(Ok(grace)) => grace,
        Some(Err(e)) => return token_error(e),
        None => {
            return token_error(TokenError::InvalidInput {
                field: "grace",
                reason: "must be a string: a duration such as \"24h\", \"30m\" or \"0\"".to_owned(),
            });
        }
    };
    match service.rotate_token(id, account, grace).await {
        Ok(rotated) => match rotated_json(&rotated) {
            Ok(value) => wire::json(StatusCode::CREATED, &value),
            Err(e) => token_error(TokenError::Internal(e.to_string())),
        },
        Err(e) => token_error(e),
    }
}

/// The rotated-token JSON of the admin API and `tokengate token rotate
/// --json`: the new token as at creation (its plaintext this once) and the
/// old one's record under `old`.
pub(crate) fn rotated_json(rotated: &RotatedToken) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(CreatedTokenBody::new(&rotated.new))?;
    value["old"] = serde_json::to_value(&rotated.old)?;
    Ok(value)
}

/// A rotation's grace period: a duration such as `"24h"`, `"30m"` or
/// `"0"` (revoke the old token at once).
pub(crate) fn parse_grace(text: &str) -> Result<Duration, TokenError> {
    let grace = if text.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| TokenError::InvalidInput {
            field: "grace",
            reason: format!("must be a duration such as \"24h\", \"30m\" or \"0\" ({e})"),
        })?
    };
    if grace > MAX_GRACE {
        return Err(TokenError::InvalidInput {
            field: "grace",
            reason: format!("must be at most {MAX_EXPIRES_IN_DAYS} days"),
        });
    }
    Ok(grace)
}

/// Reads a JSON body of at most `MAX_BODY` bytes; the error response names
/// `what` was expected.
async fn read_json<T, B>(body: B, what: &str) -> Result<T, Response<Body>>
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
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name, percent_decode(value).unwrap_or_default())
        })
}

/// Every admin route. A request is parsed into one ([`Route::parse`]), then
/// answered ([`Admin::apply`]); [`Route::ALL`] is also the table the OpenAPI
/// document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    ListTokens,
    CreateToken,
    GetToken,
    RevokeToken,
    UpdateToken,
    SetQuota,
    RemoveQuota,
    RotateToken,
    Verify,
    Audit,
}

/// The path parameters of a matched route, as sent (percent-encoded).
#[derive(Debug, Default)]
struct Params {
    account: Option<String>,
    id: Option<String>,
}

/// What a request's method and path name.
#[derive(Debug)]
enum Parsed {
    Route(Route, Params),
    /// The path is a route's, the method none of its: 405 with `Allow`
    /// (after the key check, for the token routes).
    WrongMethod {
        allow: String,
        needs_key: bool,
        params: Params,
    },
    NotFound,
}

impl Route {
    /// The route table, in the order methods are listed in `Allow`.
    const ALL: [Route; 14] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::OpenApi,
        Route::ListTokens,
        Route::CreateToken,
        Route::GetToken,
        Route::RevokeToken,
        Route::UpdateToken,
        Route::SetQuota,
        Route::RemoveQuota,
        Route::RotateToken,
        Route::Verify,
        Route::Audit,
    ];

    /// Method and path template (`{name}` matches one segment).
    fn spec(self) -> (Method, &'static str) {
        match self {
            Route::Healthz => (Method::GET, "/healthz"),
            Route::Readyz => (Method::GET, "/readyz"),
            Route::Metrics => (Method::GET, "/metrics"),
            Route::OpenApi => (Method::GET, "/openapi.json"),
            Route::ListTokens => (Method::GET, "/v1/accounts/{account}/tokens"),
            Route::CreateToken => (Method::POST, "/v1/accounts/{account}/tokens"),
            Route::GetToken => (Method::GET, "/v1/accounts/{account}/tokens/{id}"),
            Route::RevokeToken => (Method::DELETE, "/v1/accounts/{account}/tokens/{id}"),
            Route::UpdateToken => (Method::PATCH, "/v1/accounts/{account}/tokens/{id}"),
            Route::SetQuota => (Method::PUT, "/v1/accounts/{account}/tokens/{id}/quota"),
            Route::RemoveQuota => (Method::DELETE, "/v1/accounts/{account}/tokens/{id}/quota"),
            Route::RotateToken => (Method::POST, "/v1/accounts/{account}/tokens/{id}/rotate"),
            Route::Verify => (Method::POST, "/v1/verify"),
            Route::Audit => (Method::GET, "/v1/audit"),
        }
    }

    /// The token routes need the admin key; probes and scrapers do not.
    fn needs_key(self) -> bool {
        matches!(
            self,
            Route::ListTokens
                | Route::CreateToken
                | Route::GetToken
                | Route::RevokeToken
                | Route::UpdateToken
                | Route::SetQuota
                | Route::RemoveQuota
                | Route::RotateToken
                | Route::Verify
                | Route::Audit
        )
    }

    /// Whether `method` is this route's; HEAD counts as GET on the routes
    /// that need no key.
    fn accepts(self, method: &Method) -> bool {
        let (own, _) = self.spec();
        *method == own || (*method == Method::HEAD && own == Method::GET && !self.needs_key())
    }

    /// `path`'s parameters if it fits this route's template (leading
    /// slashes count as one).
    fn match_path(self, path: &str) -> Option<Params> {
        let (_, template) = self.spec();
        let mut params = Params::default();
        let mut segments = path.trim_start_matches('/').split('/');
        for expected in template.trim_start_matches('/').split('/') {
            let segment = segments.next()?;
            match expected {
                "{account}" => params.account = Some(segment.to_owned()),
                "{id}" => params.id = Some(segment.to_owned()),
                literal if literal == segment => {}
                _ => return None,
            }
        }
        segments.next().is_none().then_some(params)
    }

    fn parse(method: &Method, path: &str) -> Parsed {
        let mut allow: Vec<String> = Vec::new();
        let mut needs_key = false;
        let mut matched = None;
        for route in Route::ALL {
            let Some(params) = route.match_path(path) else {
                continue;
            };
            if route.accepts(method) {
                return Parsed::Route(route, params);
            }
            matched = Some(params);
            let own = route.spec().0;
            allow.push(own.to_string());
            if own == Method::GET && !route.needs_key() {
                allow.push("HEAD".to_owned());
            }
            needs_key |= route.needs_key();
        }
        match matched {
            Some(params) => Parsed::WrongMethod {
                allow: allow.join(", "),
                needs_key,
                params,
            },
            None => Parsed::NotFound,
        }
    }
}

/// The created-token JSON of the admin API and `tokengate token create
/// --json`: the token's record and, this once, the token itself.
/// No `Debug`: it holds the plaintext token, which must never reach a log.
#[derive(Serialize)]
pub(crate) struct CreatedTokenBody<'a> {
    #[serde(flatten)]
    info: &'a TokenInfo,
    token: &'a str,
}

impl<'a> CreatedTokenBody<'a> {
    pub(crate) fn new(created: &'a CreatedToken) -> Self {
        Self {
            info: &created.info,
            token: created.token.expose_secret(),
        }
    }
}

/// Without an admin key, the loopback listener is open to every process on
/// the machine, and so to a web page in its browser: a cross-site form POST,
/// or a DNS-rebinding page whose host name points at 127.0.0.1. A browser
/// sends such a request with its page's `Host` / `Origin`, and a form can
/// only send `text/plain` or form bodies, so keyless mode refuses (403) a
/// `Host` that is not a loopback name or address and any non-loopback
/// `Origin`, and (415) a POST whose body is not declared JSON (docs/reference/http-contract.md,
/// "Admin API without a key"). With a key, none of this is needed: a page
/// cannot attach it.
fn refuse_cross_site<B>(request: &Request<B>) -> Option<Response<Body>> {
    let headers = request.headers();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(is_loopback_host) {
        return Some(wire::error(
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
            return Some(wire::error(
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
        return Some(wire::error(
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

fn method_not_allowed(allow: &str) -> Response<Body> {
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

fn not_found() -> Response<Body> {
    wire::error(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such token for this account.",
    )
}

/// The one mapping from service errors to admin responses.
fn token_error(e: TokenError) -> Response<Body> {
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

/// The caller of the unit tests' requests.
#[cfg(test)]
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

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
        let mut routes: Vec<(String, String)> = Route::ALL
            .iter()
            .map(|route| {
                let (method, template) = route.spec();
                (method.to_string(), template.to_owned())
            })
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn requests_parse_into_routes() {
        let parse = |method: Method, path: &str| match Route::parse(&method, path) {
            Parsed::Route(route, params) => format!("{route:?} {params:?}"),
            Parsed::WrongMethod { allow, .. } => format!("405 {allow}"),
            Parsed::NotFound => "404".to_owned(),
        };
        assert_eq!(
            parse(Method::HEAD, "/healthz"),
            "Healthz Params { account: None, id: None }"
        );
        assert_eq!(parse(Method::POST, "/readyz"), "405 GET, HEAD");
        assert_eq!(
            parse(Method::POST, "/v1/accounts/a%20b/tokens"),
            r#"CreateToken Params { account: Some("a%20b"), id: None }"#
        );
        assert_eq!(
            parse(Method::HEAD, "/v1/accounts/a/tokens"),
            "405 GET, POST"
        );
        assert_eq!(
            parse(Method::PUT, "/v1/accounts/a/tokens/x"),
            "405 GET, DELETE, PATCH"
        );
        assert_eq!(parse(Method::GET, "/v1/accounts/a/tokens/x/y"), "404");
        assert_eq!(parse(Method::GET, "/healthz/"), "404");
        assert_eq!(parse(Method::GET, "/"), "404");
        assert_eq!(
            parse(Method::GET, "//healthz"),
            "Healthz Params { account: None, id: None }"
        );
    }

    /// Checks `value` against an OpenAPI 3.0 schema: the parts the document
    /// uses (`$ref`, `allOf`, `type`, `nullable`, `required`, `properties`,
    /// `additionalProperties: false`, `enum`, `items`, `format: uuid`).
    fn check_schema(
        doc: &serde_json::Value,
        schema: &serde_json::Value,
        value: &serde_json::Value,
        at: &str,
    ) {
        use serde_json::Value;
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.strip_prefix("#/components/schemas/").unwrap();
            return check_schema(doc, &doc["components"]["schemas"][name], value, at);
        }
        if value.is_null() && schema["nullable"] == Value::Bool(true) {
            return;
        }
        if let Some(all) = schema["allOf"].as_array() {
            for part in all {
                check_schema(doc, part, value, at);
            }
            return;
        }
        if value.is_null() {
            assert_eq!(
                schema["nullable"],
                Value::Bool(true),
                "{at}: null where not nullable"
            );
            return;
        }
        let fits = match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("boolean") => value.is_boolean(),
            Some(other) => panic!("{at}: schema type {other} not handled"),
            None => true,
        };
        assert!(fits, "{at}: {value} is not a {}", schema["type"]);
        if let Some(allowed) = schema["enum"].as_array() {
            assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
        }
        if schema["format"] == "uuid" {
            assert!(
                value.as_str().unwrap().parse::<TokenId>().is_ok(),
                "{at}: {value} is not a uuid"
            );
        }
        if let Some(items) = value.as_array() {
            for (i, item) in items.iter().enumerate() {
                check_schema(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        if let Some(object) = value.as_object() {
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                assert!(object.contains_key(key), "{at}: {key} is required");
            }
            let properties = schema["properties"].as_object();
            for (key, field) in object {
                match properties.and_then(|p| p.get(key)) {
                    Some(property) => check_schema(doc, property, field, &format!("{at}.{key}")),
                    None => assert_ne!(
                        schema["additionalProperties"],
                        Value::Bool(false),
                        "{at}: {key} is not in the schema"
                    ),
                }
            }
        }
    }

    #[tokio::test]
    async fn real_responses_match_the_documented_schemas() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let store = Arc::new(crate::store::MemoryStore::new());
        let service = TokenService::new(store).with_bcrypt_cost(4);
        let auth =
            crate::auth::Authenticator::new(service.clone(), &crate::auth::AuthConfig::default())
                .unwrap();
        let metrics = Arc::new(Metrics::new(
            auth.clone(),
            crate::telemetry::metrics::StoreLatency::default(),
        ));
        let key = AdminKey::new("k".repeat(MIN_ADMIN_KEY_LEN));
        let admin = Admin::new(auth, metrics, Some(&key));

        let call = |method: Method, path: String, body: &'static str, with_key: bool| {
            let mut request = Request::builder().method(method).uri(path);
            if with_key {
                request = request.header(AUTHORIZATION, format!("Bearer {}", key.0));
            }
            let request = request
                .body(http_body_util::Full::new(Bytes::from(body)))
                .unwrap();
            let admin = &admin;
            async move {
                let response = admin.handle(request, PEER).await;
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                )
            }
        };
        // Checks one answer against the schema its route documents for its status.
        let check = |route: Route, status: StatusCode, body: &serde_json::Value| {
            let (method, template) = route.spec();
            let documented = &doc["paths"][template][method.as_str().to_lowercase()]["responses"]
                [status.as_str()];
            assert!(
                documented.is_object(),
                "{template} does not document {status}"
            );
            let schema = &documented["content"]["application/json"]["schema"];
            check_schema(&doc, schema, body, &format!("{method} {template} {status}"));
        };

        let tokens = "/v1/accounts/acme/tokens".to_owned();
        let (status, created) = call(
            Method::POST,
            tokens.clone(),
            r#"{"name":"ci","expires_in_days":30}"#,
            true,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        check(Route::CreateToken, status, &created);
        assert!(crate::token::parse(created["token"].as_str().unwrap()).is_ok());
        let token = format!("{tokens}/{}", created["id"].as_str().unwrap());

        let (status, list) = call(Method::GET, tokens.clone(), "", true).await;
        check(Route::ListTokens, status, &list);
        let (status, info) = call(Method::GET, token.clone(), "", true).await;
        check(Route::GetToken, status, &info);
        // The whole token names it too (and only its id comes back).
        let by_text = format!("{tokens}/{}", created["token"].as_str().unwrap());
        let (status, same) = call(Method::GET, by_text, "", true).await;
        assert_eq!((status, &same), (StatusCode::OK, &info));
        let quota = format!("{token}/quota");
        let (status, set) = call(
            Method::PUT,
            quota.clone(),
            r#"{"remaining":5,"refill":{"amount":10,"interval":"month"}}"#,
            true,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(set["quota"]["refill"]["interval"], "month");
        check(Route::SetQuota, status, &set);
        let (status, error) = call(Method::PUT, quota.clone(), r#"{"remaining":-1}"#, true).await;
        check(Route::SetQuota, status, &error);
        let (status, removed) = call(Method::DELETE, quota, "", true).await;
        assert_eq!(removed["quota"], serde_json::Value::Null);
        check(Route::RemoveQuota, status, &removed);
        let (status, rotated) = call(
            Method::POST,
            format!("{token}/rotate"),
            r#"{"grace":"1h"}"#,
            true,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        check(Route::RotateToken, status, &rotated);
        assert_eq!(rotated["old"]["rotated_to"], rotated["id"]);
        let (status, error) = call(
            Method::POST,
            format!("{token}/rotate"),
            r#"{"grace":"1h"}"#,
            true,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        check(Route::RotateToken, status, &error);
        let (status, error) = call(Method::POST, format!("{token}/rotate"), "{}", true).await;
        assert_eq!(
            (status, &error["field"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &"grace".into())
        );
        check(Route::RotateToken, status, &error);
        let (status, revoked) = call(Method::DELETE, token.clone(), "", true).await;
        check(Route::RevokeToken, status, &revoked);
        assert_eq!(revoked["status"], "revoked");
        // The in-memory store's trail, with the caller's address.
        let (status, audit) = call(Method::GET, "/v1/audit?limit=3".to_owned(), "", true).await;
        check(Route::Audit, status, &audit);
        assert_eq!(audit["entries"][0]["action"], "create");
        assert_eq!(audit["entries"][0]["actor"]["id"], PEER.to_string());
        let (status, audit) = call(
            Method::GET,
            format!("/v1/audit?after={}", audit["next"].as_str().unwrap()),
            "",
            true,
        )
        .await;
        check(Route::Audit, status, &audit);
        let actions: Vec<_> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["create", "rotate", "revoke"]);
        let (status, error) = call(Method::GET, "/v1/audit?after=x".to_owned(), "", true).await;
        check(Route::Audit, status, &error);
        let (status, health) = call(Method::GET, "/healthz".to_owned(), "", false).await;
        check(Route::Healthz, status, &health);
        let (status, ready) = call(Method::GET, "/readyz".to_owned(), "", false).await;
        check(Route::Readyz, status, &ready);

        // Each error body.
        let (status, error) = call(Method::POST, tokens.clone(), "{", true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        check(Route::CreateToken, status, &error);
        let (status, error) = call(Method::POST, tokens.clone(), r#"{"name":""}"#, true).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error["field"], "name");
        check(Route::CreateToken, status, &error);
        let (status, error) = call(Method::GET, tokens.clone(), "", false).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        check(Route::ListTokens, status, &error);
        let unknown = format!("{tokens}/{}", TokenId::from_uuid(uuid::Uuid::nil()));
        let (status, error) = call(Method::GET, unknown, "", true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        check(Route::GetToken, status, &error);
        // Not a route's own status, but the same Error body.
        let (status, error) = call(Method::GET, "/nowhere".to_owned(), "", true).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        check_schema(
            &doc,
            &serde_json::json!({"$ref": "#/components/schemas/Error"}),
            &error,
            "404",
        );
    }
}

/// Arbitrary path segments, methods, headers and JSON bodies through the
/// admin API (docs/design/fuzzing.md): only documented statuses, never a 5xx on a
/// healthy store, and a JSON error body on every 4xx.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::proptest_config;

    const KEY: &str = "0123456789abcdef-admin";

    /// A path segment: ids in every form, encodings, tricks, anything.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9._-]{1,12}",
            "(%[0-9a-fA-F]{2}|%|[a-z]|\\.|;|,|\")*",
            "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            "[0-9A-Za-z]{22}",
            "mk_[0-9A-Za-z]{52}",
            "[!-~]{0,16}",
            any::<String>(),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        (segment(), segment(), 0u8..6, "/{0,2}").prop_map(|(account, id, shape, lead)| {
            let tokens = format!("{lead}/v1/accounts/{account}/tokens");
            match shape {
                0 => tokens,
                1 => format!("{tokens}/{id}"),
                2 => format!("{tokens}/{id}/quota"),
                3 => format!("/{account}"),
                4 => format!("{tokens}/{id}/{account}"),
                _ => ["/healthz", "/readyz", "/openapi.json", "/metrics"][id.len() % 4].to_owned(),
            }
        })
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~]{0,20}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            let key = prop_oneof![
                proptest::sample::select(vec![
                    "name",
                    "expires_in_days",
                    "quota",
                    "remaining",
                    "refill",
                    "amount",
                    "interval",
                    "scopes",
                ])
                .prop_map(str::to_owned),
                "[a-z_]{0,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => json().prop_map(|v| v.to_string().into_bytes()),
            1 => (
                "[ -~]{0,30}",
                proptest::option::of(any::<i64>()),
                proptest::option::of((any::<i64>(), any::<i64>(), "(day|week|month|year|[a-z]{0,6})")),
            )
                .prop_map(|(name, days, quota)| {
                    let mut v = serde_json::json!({ "name": name });
                    if let Some(d) = days {
                        v["expires_in_days"] = d.into();
                        v["scopes"] = serde_json::json!([name, "orders:*"]);
                    }
                    if let Some((remaining, amount, interval)) = quota {
                        v["quota"] = serde_json::json!({
                            "remaining": remaining,
                            "refill": { "amount": amount, "interval": interval },
                        });
                    }
                    v.to_string().into_bytes()
                }),
            1 => proptest::collection::vec(any::<u8>(), 0..128),
        ]
    }

    #[test]
    fn arbitrary_requests_get_documented_answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (keyed, keyless) = rt.block_on(async {
            let store = Arc::new(crate::store::MemoryStore::new());
            let service = TokenService::new(store).with_bcrypt_cost(4);
            let auth =
                crate::auth::Authenticator::new(service, &crate::auth::AuthConfig::default())
                    .unwrap();
            let metrics = Arc::new(Metrics::new(
                auth.clone(),
                crate::telemetry::metrics::StoreLatency::default(),
            ));
            (
                Admin::new(auth.clone(), metrics.clone(), Some(&AdminKey::new(KEY))),
                Admin::new(auth, metrics, None),
            )
        });
        let method = prop_oneof![
            Just(Method::GET),
            Just(Method::POST),
            Just(Method::PUT),
            Just(Method::DELETE),
            Just(Method::HEAD),
            Just(Method::PATCH),
        ];
        let strategy = (
            method,
            path(),
            body(),
            0u8..4,
            proptest::option::of(
                "(localhost|127\\.0\\.0\\.1|evil\\.example|\\[::1\\])(:[0-9]{1,5})?",
            ),
            proptest::option::of("(application/json|text/plain|APPLICATION/JSON; charset=utf-8)"),
        );
        let mut runner = proptest::test_runner::TestRunner::new(proptest_config(1000));
        let result = runner.run(
            &strategy,
            |(method, path, body, auth, host, content_type)| {
                let Ok(uri) = path.parse::<http::Uri>() else {
                    return Ok(()); // hyper refuses such a request line
                };
                let mut builder = Request::builder().method(method).uri(uri);
                builder = match auth {
                    0 => builder.header(AUTHORIZATION, format!("Bearer {KEY}")),
                    1 => builder.header(AUTHORIZATION, "Bearer wrong"),
                    2 => builder.header(AUTHORIZATION, format!("bearer   {KEY} ")),
                    _ => builder,
                };
                if let Some(host) = host {
                    builder = builder.header(http::header::HOST, host);
                }
                if let Some(content_type) = content_type {
                    builder = builder.header(CONTENT_TYPE, content_type);
                }
                let admin = if auth == 3 { &keyless } else { &keyed };
                let request = builder
                    .body(http_body_util::Full::new(Bytes::from(body)))
                    .unwrap();
                let response = rt.block_on(admin.handle(request, PEER));
                let status = response.status().as_u16();
                prop_assert!(
                    [200, 201, 400, 401, 403, 404, 405, 413, 415, 422].contains(&status),
                    "status {} for {}",
                    status,
                    path
                );
                if status >= 400 {
                    let body = rt
                        .block_on(response.into_body().collect())
                        .unwrap()
                        .to_bytes();
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    prop_assert!(json["error"].is_string() && json["message"].is_string());
                    if status == 422 {
                        prop_assert!(json["field"].is_string());
                    }
                }
                Ok(())
            },
        );
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
