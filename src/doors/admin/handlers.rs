//! The handlers of the token routes: create, revoke, update, quota, rotate.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::bodies::{CreateBody, RotateBody, UpdateBody, read_json, typed};
use super::errors::{not_found, token_error};
use super::parse_id;
use crate::service::{
    CreateTokenParams, CreatedTokenBody, QuotaParams, TokenError, TokenService, TokenUpdate,
    allowed_ips_input, grace_input, meta_input, rotated_json, scopes_input,
};
use crate::token::{Meta, TokenRateLimit};
use crate::wire;
use crate::wire::Body;

pub(super) async fn create<B>(service: &TokenService, account: &str, body: B) -> Response<Body>
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

pub(super) async fn revoke(service: &TokenService, account: &str, id: &str) -> Response<Body> {
    let Some(id) = parse_id(id) else {
        return not_found();
    };
    match service.revoke_token(id, account).await {
        Ok(info) => wire::json(StatusCode::OK, &serde_json::json!(info)),
        Err(e) => token_error(e),
    }
}

/// `PATCH …/tokens/{id}` (docs/reference/http-contract.md, "Changing a token").
pub(super) async fn update<B>(
    service: &TokenService,
    account: &str,
    id: &str,
    body: B,
) -> Response<Body>
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
pub(super) async fn set_quota<B>(
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
pub(super) async fn rotate<B>(
    service: &TokenService,
    account: &str,
    id: &str,
    body: B,
) -> Response<Body>
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
    let grace = match body.grace.as_str().map(grace_input) {
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
