use http::{HeaderMap, HeaderValue};

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
