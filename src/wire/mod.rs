//! Small HTTP pieces shared by the Authenticator and the network front
//! doors: the boxed body type, JSON and error responses, path
//! normalization, hop-by-hop header handling, `Host` checks and an IO
//! wrapper that watches reads. Imports nothing from the crate.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// Told of every byte read through a [`ReadHook`].
pub(crate) trait OnRead {
    /// `data` was just read.
    fn read(&mut self, data: &[u8]);
}

/// An IO object whose reads are shown to `hook` as they happen; writes pass
/// through untouched (an idle tunnel's byte count, HTTP/2 frame headers).
#[derive(Debug)]
pub(crate) struct ReadHook<T, H> {
    pub(crate) inner: T,
    pub(crate) hook: H,
}

impl<T: AsyncRead + Unpin, H: OnRead + Unpin> AsyncRead for ReadHook<T, H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.hook.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin, H: Unpin> AsyncWrite for ReadHook<T, H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The percent-decoded path if it is in normal form, else `None`. Borrowed
/// when there is nothing to decode: the route checks run on every request.
pub(crate) fn normalize_path(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.starts_with('/') {
        return None;
    }
    // The common case, nothing escaped: one pass over the bytes.
    if !raw.as_bytes().contains(&b'%') {
        return is_normal(raw).then_some(std::borrow::Cow::Borrowed(raw));
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return None;
    }
    let decoded = percent_decode(raw)?;
    // A `%` left after decoding was sent as `%25`: a service that
    // decodes once more would read `/public/%252e%252e/x` as
    // `/public/../x`. The normal form has none, so normalizing it again
    // changes nothing.
    if decoded.contains('%') {
        return None;
    }
    is_normal(&decoded).then_some(std::borrow::Cow::Owned(decoded))
}

/// Whether a decoded path (starting with `/`) is in normal form: `/`
/// itself, or segments none of which is empty, `.` or `..` (a trailing `/`
/// allowed), and no `\`, NUL or `;` (which starts path parameters that some
/// servers, Tomcat, Spring, Jetty, drop before routing: `/public/..;/private`
/// is `/private` to them).
fn is_normal(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let body = &path.as_bytes()[1..];
    let body = body.strip_suffix(b"/").unwrap_or(body);
    // A segment's length, and how many of its bytes are dots.
    let (mut len, mut dots) = (0usize, 0usize);
    let bad_segment = |len: usize, dots: usize| len == 0 || (len == dots && dots <= 2);
    for &b in body {
        match b {
            b'\\' | 0 | b';' => return false,
            b'/' => {
                if bad_segment(len, dots) {
                    return false;
                }
                (len, dots) = (0, 0);
            }
            b'.' => (len, dots) = (len + 1, dots + 1),
            _ => len += 1,
        }
    }
    !bad_segment(len, dots)
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // Two hex digits: `from_str_radix` alone would take `%+1`.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `proptests::normalization_is_idempotent_and_leaves_no_trick`:
    /// `//` came back as itself, and `%25` decoded to a `%` that a second
    /// normalization (or a service decoding twice) read differently.
    #[test]
    fn normal_form_has_no_empty_segment_and_no_percent() {
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/a/").as_deref(), Some("/a/"));
        for raw in [
            "//",
            "/public/%252e%252e/private",
            "/public/%252f",
            "/public/%25",
            // Found by tests/server/fuzz.rs: a sign is not a hex digit.
            "/public/%+1",
            "/public/%-1",
        ] {
            assert_eq!(normalize_path(raw), None, "{raw}");
        }
    }

    #[test]
    fn hosts_follow_rfc_3986() {
        for good in [
            "",
            "api.example",
            "api.example:8080",
            "127.0.0.1:1",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--bcher-kva.example",
            "a_b.example",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            "user@evil",
            "evil.example/x",
            "host:port",
            "host:123456",
            "[::1",
            "[]",
            "[::1]x",
            "host:80:80",
            ":80",
            "a\\b",
            "a?b",
            "a#b",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn host_rules() {
        let v11 = http::Version::HTTP_11;
        let origin: http::Uri = "/x".parse().unwrap();
        let host = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(http::header::HOST, HeaderValue::from_static(v));
            }
            headers
        };
        assert_eq!(request_host(v11, &origin, &host(&["a.example"])), Ok(None));
        assert!(request_host(v11, &origin, &host(&[])).is_err());
        assert_eq!(
            request_host(http::Version::HTTP_10, &origin, &host(&[])),
            Ok(None)
        );
        assert!(request_host(v11, &origin, &host(&["a.example", "b.example"])).is_err());
        assert!(request_host(v11, &origin, &host(&["a b"])).is_err());
        assert!(request_host(v11, &origin, &host(&["user@evil"])).is_err());
        let absolute: http::Uri = "http://target.example:81/x".parse().unwrap();
        assert_eq!(
            request_host(v11, &absolute, &host(&["other.example"])),
            Ok(Some(HeaderValue::from_static("target.example:81")))
        );
        let userinfo: http::Uri = "http://user@target.example/x".parse().unwrap();
        assert!(request_host(v11, &userinfo, &host(&["target.example"])).is_err());
    }
}

/// Case counts for the crate's property tests: `default`, or
/// `PROPTEST_CASES` when set (CI's longer fuzzing step sets it).
#[cfg(test)]
pub(crate) fn proptest_config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Arbitrary bytes and traversal tricks through path normalization,
/// percent-decoding and the `Host` checks (docs/design/fuzzing.md).
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Paths made of the pieces traversal tricks use, or anything at all.
    fn raw_path() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "(/|//|\\.|\\.\\.|%2[eEfF]|%5[cC]|%25|%00|%3[bB]|%|;|\\\\|[a-z]|é|\u{ff0e})*",
            1 => any::<String>(),
            1 => proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    proptest! {
        #![proptest_config(proptest_config(2000))]

        /// The one-pass check answers as the first, plainer version did.
        #[test]
        fn the_one_pass_check_matches_the_plain_one(raw in raw_path()) {
            fn plain(raw: &str) -> Option<String> {
                if !raw.starts_with('/') {
                    return None;
                }
                let decoded = if raw.contains('%') {
                    let lower = raw.to_ascii_lowercase();
                    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
                        return None;
                    }
                    let decoded = percent_decode(raw)?;
                    if decoded.contains('%') {
                        return None;
                    }
                    decoded
                } else {
                    raw.to_owned()
                };
                if decoded.contains('\\') || decoded.contains('\0') || decoded.contains(';') {
                    return None;
                }
                let body = &decoded[1..];
                let body = body.strip_suffix('/').unwrap_or(body);
                if decoded != "/"
                    && body
                        .split('/')
                        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
                {
                    return None;
                }
                Some(decoded)
            }
            prop_assert_eq!(normalize_path(&raw).map(|p| p.into_owned()), plain(&raw), "{:?}", raw);
        }

        #[test]
        fn normalization_is_idempotent_and_leaves_no_trick(raw in raw_path()) {
            if let Some(once) = normalize_path(&raw) {
                prop_assert_eq!(normalize_path(&once), Some(once.clone()), "from {:?}", raw);
                prop_assert!(once.starts_with('/'));
                for trick in ["//", "\\", ";", "\0", "%"] {
                    prop_assert!(!once.contains(trick), "{:?} → {:?}", raw, once);
                }
                let body = once.trim_end_matches('/');
                prop_assert!(
                    body.split('/').skip(1).all(|s| s != "." && s != ".."),
                    "{:?} → {:?}", raw, once
                );
            }
        }

        #[test]
        fn percent_decoding_inverts_encoding(text in any::<String>(), upper in any::<bool>()) {
            let encoded: String = text
                .bytes()
                .map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") })
                .collect();
            prop_assert_eq!(percent_decode(&encoded), Some(text.clone()));
            // Text without `%` decodes to itself.
            let plain = text.replace('%', "");
            prop_assert_eq!(percent_decode(&plain), Some(plain));
        }

        #[test]
        fn host_checks_never_panic(
            value in proptest::collection::vec(any::<u8>(), 0..64),
            hosts in 0usize..3,
        ) {
            let _ = is_valid_host(&value);
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                for _ in 0..hosts {
                    headers.append(http::header::HOST, v.clone());
                }
            }
            let uri: http::Uri = "/x".parse().unwrap();
            let result = request_host(http::Version::HTTP_11, &uri, &headers);
            if hosts == 1 && result.is_ok() {
                prop_assert!(is_valid_host(&value));
            }
            if hosts == 2 {
                prop_assert!(result.is_err());
            }
        }
    }
}
