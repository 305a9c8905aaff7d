//! AFL target: public-route matching on raw request paths
//! (docs/reference/http-contract.md, "Public routes"). A path that matches `/public`
//! holds none of the traversal tricks and decodes to a path under it.

use http::Method;
use tokengate::auth::{PublicRoute, PublicRoutes};

/// Percent-decoding, written here; `None` on a bad escape or non-UTF-8.
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn main() {
    let routes = PublicRoutes::new(&[PublicRoute {
        path_prefix: "/public".into(),
        methods: vec![],
    }]);
    afl::fuzz!(|data: &[u8]| {
        let Ok(raw) = std::str::from_utf8(data) else {
            return;
        };
        if !routes.is_public(&Method::GET, raw) {
            return;
        }
        let lower = raw.to_ascii_lowercase();
        for trick in ["%2f", "%5c", "%00", "%25", "%3b", "\\", ";", "//"] {
            assert!(!lower.contains(trick), "{raw:?} is public with {trick}");
        }
        let decoded = decode(raw).expect("a public path decodes");
        assert!(
            decoded == "/public" || decoded.starts_with("/public/"),
            "{raw:?}"
        );
        let body = decoded.trim_end_matches('/');
        assert!(
            body.split('/')
                .skip(1)
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{raw:?} is public with a dot or empty segment"
        );
    });
}
