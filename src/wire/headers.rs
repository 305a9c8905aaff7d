//! Header rules: the one host a request names (RFC 9112 §3.2), hop-by-hop
//! headers, upgrades.

use http::header::CONNECTION;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The host a request names, checked as RFC 9112 §3.2 asks of a server:
/// at most one `Host` header, holding a valid `host[:port]`, and one at all
/// in HTTP/1.1. `Ok(Some(authority))` when the request target carries an
/// authority (absolute form, or HTTP/2's `:authority`), which a proxy must
/// send as `Host` in place of the client's (§3.2.2); `Ok(None)`: keep
/// `Host` as it is. `Err` is the 400 message (docs/reference/http-contract.md, "Host").
pub(crate) fn request_host(
    version: http::Version,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, &'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("The request has more than one Host header.");
    }
    if host.is_some_and(|h| !is_valid_host(h.as_bytes())) {
        return Err("The Host header is not a valid host[:port].");
    }
    if let Some(authority) = uri.authority() {
        if !is_valid_host(authority.as_str().as_bytes()) {
            return Err("The request target's authority is not a valid host[:port].");
        }
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    if host.is_none() && version == http::Version::HTTP_11 {
        return Err("An HTTP/1.1 request needs a Host header.");
    }
    Ok(None)
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2–3.2.3), or empty (allowed for a
/// target without an authority). No user information, spaces, paths.
pub(crate) fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        None => return true,
        Some(b'[') => {
            let Some(end) = value.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &value[1..end];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
            {
                return false;
            }
            (&value[..=end], &value[end + 1..])
        }
        Some(_) => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (&value[..end], &value[end..])
        }
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let host_ok = host.first() == Some(&b'[') || (!host.is_empty() && host.iter().all(reg_name));
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers and every header the `Connection` header
/// names. `Upgrade` too, unless `keep_upgrade` (a WebSocket handshake).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // The common case, none present: one pass over the names.
    if !headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(&k.as_str()) || *k == http::header::UPGRADE)
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == http::header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(http::header::UPGRADE);
    }
}

/// Whether the request asks for a protocol upgrade (WebSocket).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}
