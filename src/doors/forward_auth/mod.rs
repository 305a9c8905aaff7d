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
use std::path::PathBuf;
use std::time::Instant;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthRequest, Authenticator};
use crate::settings::InvalidConfig;
use crate::telemetry::access::Note;
use crate::tls::listener_tls;
use crate::wire::{self, Body};

/// `[forward_auth]`: the forward-auth endpoint (`tokengate serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Where the forward-auth endpoint listens; unset: off.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// The listener's certificate chain (PEM): with `tls_key`, the
    /// endpoint serves HTTPS (docs/guide/tls.md).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

listener_tls!(ForwardAuthConfig, "forward_auth");

impl ForwardAuthConfig {
    /// A certificate and its key together.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.tls().validate()
    }
}

pub(crate) async fn handle<B>(
    auth: &Authenticator,
    request: Request<B>,
    peer: SocketAddr,
    note: &mut Note,
) -> Response<Body> {
    let headers = request.headers();
    // The same Host rules as the proxy's (RFC 9112 §3.2), for the request
    // itself and for the original request's host a trusted proxy names.
    if let Err(message) = wire::request_host(request.version(), request.uri(), headers) {
        return wire::error(StatusCode::BAD_REQUEST, "invalid_request", message);
    }
    let (method, uri) = if auth.is_trusted_proxy(peer.ip()) {
        let mut forwarded_hosts = headers.get_all("x-forwarded-host").iter();
        let forwarded_host = forwarded_hosts.next();
        if forwarded_hosts.next().is_some()
            || forwarded_host.is_some_and(|h| !wire::is_valid_host(h.as_bytes()))
        {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "X-Forwarded-Host must be one valid host[:port].",
            );
        }
        // One family or the other, never a mix: a proxy sets its own family
        // and passes the client's headers along, so a client could otherwise
        // add the family its proxy does not set and name a public route.
        let forwarded = (
            header(headers, "x-forwarded-method"),
            header(headers, "x-forwarded-uri"),
        );
        let original = (
            header(headers, "x-original-method"),
            header(headers, "x-original-uri"),
        );
        let present = |(m, u): (Option<&str>, Option<&str>)| m.is_some() || u.is_some();
        if present(forwarded) && present(original) {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request carries both X-Forwarded-Method/-Uri and X-Original-Method/-URI.",
            );
        }
        let (method, uri) = if present(forwarded) {
            forwarded
        } else {
            original
        };
        let method = method.map(|m| Method::from_bytes(m.as_bytes()));
        let uri = uri.map(|u| u.parse::<Uri>());
        match (method, uri) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                return wire::error(
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
    note.original(&method, &uri);
    note.client_ip(|| auth.client_ip(Some(peer.ip()), headers));
    let started = Instant::now();
    let decision = auth
        .check(AuthRequest {
            method: &method,
            uri: &uri,
            headers,
            peer: Some(peer.ip()),
        })
        .await;
    note.decided(decision.as_ref(), started);
    match decision {
        Ok(decision) => {
            let mut response = Response::new(wire::empty());
            auth.identity_headers()
                .apply(response.headers_mut(), decision.auth());
            response
        }
        Err(rejection) => wire::boxed(rejection.to_response()),
    }
}

/// A header as text; a value that is not text reads as one that fails to
/// parse (so the request gets 400, not a fallback).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Arbitrary original-request headers from trusted and untrusted peers
/// (docs/design/fuzzing.md): only the documented statuses, a JSON body on every
/// refusal, and no public route named by anyone but a trusted proxy.
#[cfg(test)]
mod proptests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    use super::*;
    use crate::auth::{AuthConfig, PublicRoute, PublicRoutes};
    use crate::service::TokenService;
    use crate::store::MemoryStore;
    use crate::wire::proptest_config;

    const NAMES: [&str; 7] = [
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-original-method",
        "x-original-uri",
        "x-forwarded-host",
        "host",
        "authorization",
    ];

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => "(/public|/private|/|//|\\.\\.|%2[eEfF]|%5[cC]|%25|%|;|\\\\|\\?|#|[a-z]| )*"
                .prop_map(String::into_bytes),
            1 => proptest::sample::select(vec!["GET", "POST", "get", "B@D", "", "gw.example", "a b"])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => "Bearer [ -~]{0,60}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
        proptest::collection::vec((0..NAMES.len(), value()), 0..6)
    }

    fn routes() -> Vec<PublicRoute> {
        vec![PublicRoute {
            path_prefix: "/public".into(),
            methods: vec![],
        }]
    }

    #[test]
    fn original_uri_handling() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let auth = rt.block_on(async {
            let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
            let config = AuthConfig {
                public_routes: routes(),
                ..AuthConfig::default()
            };
            Authenticator::new(service, &config).unwrap()
        });
        let public = PublicRoutes::new(&routes());
        let strategy = (
            "(/public|/private|/|//|\\.\\.|%2e|[a-z])*",
            headers(),
            any::<bool>(),
        );
        let mut runner = proptest::test_runner::TestRunner::new(proptest_config(1000));
        let result = runner.run(&strategy, |(target, pairs, trusted)| {
            let mut builder = Request::builder().uri(if target.is_empty() { "/" } else { &target });
            let mut sent = HeaderMap::new();
            for (name, value) in &pairs {
                if let Ok(value) = http::HeaderValue::from_bytes(value) {
                    sent.append(NAMES[*name], value);
                }
            }
            if !sent.contains_key("host") {
                builder = builder.header("host", "gw.example");
            }
            let Ok(mut request) = builder.body(()) else {
                return Ok(()); // not a request line hyper would pass on
            };
            request.headers_mut().extend(sent);
            let peer: SocketAddr = if trusted {
                "127.0.0.1:1"
            } else {
                "203.0.113.9:1"
            }
            .parse()
            .unwrap();
            let own_uri = request.uri().clone();
            let family = |m: &str, u: &str| {
                request.headers().contains_key(m) || request.headers().contains_key(u)
            };
            let both = family("x-forwarded-method", "x-forwarded-uri")
                && family("x-original-method", "x-original-uri");
            let named_uri = ["x-forwarded-uri", "x-original-uri"]
                .iter()
                .find_map(|n| request.headers().get(*n))
                .map(|v| v.to_str().unwrap_or("\0").to_owned());
            let response = rt.block_on(handle(&auth, request, peer, &mut Note::new(false)));
            let status = response.status().as_u16();
            prop_assert!([200, 400, 401, 429].contains(&status), "status {}", status);
            if trusted && both {
                prop_assert_eq!(status, 400);
            }
            if status == 200 {
                // No token exists: only a public route admits, and only the
                // URI the peer may name.
                let path = match (&named_uri, trusted) {
                    (Some(uri), true) => uri.parse::<Uri>().unwrap().path().to_owned(),
                    _ => own_uri.path().to_owned(),
                };
                prop_assert!(public.is_public(&Method::GET, &path), "{} admitted", path);
            } else {
                let body = rt
                    .block_on(response.into_body().collect())
                    .map(|c| c.to_bytes())
                    .unwrap_or_else(|_| Bytes::new());
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(json["error"].is_string() && json["message"].is_string());
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
