//! The forward-auth endpoint: nginx `auth_request`, Traefik `forwardAuth`,
//! Caddy `forward_auth`, Envoy `ext_authz` (HTTP).
//!
//! Any method, any path: 200 with the identity headers to allow, or the
//! Authenticator's 401 / 400 / 429 / 503. The original request's method and
//! URI (for public routes and the query-parameter token) are read from
//! `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy) or
//! `X-Original-Method` / `X-Original-URI` (nginx), only when the peer is a
//! trusted proxy: anyone else could otherwise name a public route.

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::auth::{AuthRequest, Authenticator};
use crate::http_util::{self, Body};

pub(crate) async fn handle<B>(
    auth: &Authenticator,
    request: Request<B>,
    peer: SocketAddr,
) -> Response<Body> {
    let headers = request.headers();
    let (method, uri) = if auth.is_trusted_proxy(peer.ip()) {
        let method = original(headers, &["x-forwarded-method", "x-original-method"])
            .map(|m| Method::from_bytes(m.as_bytes()));
        let uri =
            original(headers, &["x-forwarded-uri", "x-original-uri"]).map(|u| u.parse::<Uri>());
        match (method, uri) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                return http_util::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The original method or URI header is malformed.",
                );
            }
            (method, uri) => (
                method
                    .and_then(Result::ok)
                    .unwrap_or_else(|| request.method().clone()),
                uri.and_then(Result::ok)
                    .unwrap_or_else(|| request.uri().clone()),
            ),
        }
    } else {
        (request.method().clone(), request.uri().clone())
    };
    let decision = auth
        .check(AuthRequest {
            method: &method,
            uri: &uri,
            headers,
            peer: Some(peer.ip()),
        })
        .await;
    match decision {
        Ok(decision) => {
            let mut response = Response::new(http_util::empty());
            auth.identity_headers()
                .apply(response.headers_mut(), decision.auth());
            response
        }
        Err(rejection) => http_util::rejection(&rejection),
    }
}

/// The first of `names` present, as text.
fn original<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}
