//! The cross-site guard of a keyless admin API (docs/reference/http-contract.md,
//! "Admin API without a key").

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};

use crate::wire;
use crate::wire::Body;

/// Without an admin key, the loopback listener is open to every process on
/// the machine, and so to a web page in its browser: a cross-site form POST,
/// or a DNS-rebinding page whose host name points at 127.0.0.1. A browser
/// sends such a request with its page's `Host` / `Origin`, and a form can
/// only send `text/plain` or form bodies, so keyless mode refuses (403) a
/// `Host` that is not a loopback name or address and any non-loopback
/// `Origin`, and (415) a POST whose body is not declared JSON (docs/reference/http-contract.md,
/// "Admin API without a key"). With a key, none of this is needed: a page
/// cannot attach it.
pub(super) fn refuse_cross_site<B>(request: &Request<B>) -> Option<Response<Body>> {
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
pub(super) fn is_loopback_host(host: &str) -> bool {
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
