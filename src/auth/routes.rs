//! Public routes: method + path-prefix rules that skip authentication,
//! matched on the normalized, percent-decoded path.
//!
//! A path that is not already in normal form (a `.` or `..` segment, an
//! empty segment such as `//`, an encoded `/` or `\`, a bad escape) never
//! matches: it is authenticated like any other request. That is fail-closed:
//! `/public/../private`, `/public/%2e%2e/private` and `//private` are not
//! public, whatever the service behind would make of them.

use http::Method;

use crate::config::PublicRoute;

/// The percent-decoded path if it is in normal form, else `None`.
pub fn normalize_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return None;
    }
    let decoded = percent_decode(raw)?;
    // `;` starts path parameters that some servers (Tomcat, Spring, Jetty)
    // drop before routing: `/public/..;/private` is `/private` to them.
    if decoded.contains('\\') || decoded.contains('\0') || decoded.contains(';') {
        return None;
    }
    let body = &decoded[1..];
    let body = body.strip_suffix('/').unwrap_or(body);
    if !body.is_empty()
        && body
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return None;
    }
    Some(decoded)
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
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

/// The configured public routes.
#[derive(Debug, Clone, Default)]
pub struct PublicRoutes {
    rules: Vec<(String, Vec<Method>)>,
}

impl PublicRoutes {
    /// From `[[public_routes]]` (already validated by the config).
    pub fn new(routes: &[PublicRoute]) -> Self {
        let rules = routes
            .iter()
            .map(|r| {
                let prefix = r.path_prefix.trim_end_matches('/').to_owned();
                let methods = r
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect();
                (prefix, methods)
            })
            .collect();
        Self { rules }
    }

    /// Whether a request with this method and raw path skips authentication.
    pub fn is_public(&self, method: &Method, raw_path: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let Some(path) = normalize_path(raw_path) else {
            return false;
        };
        self.rules.iter().any(|(prefix, methods)| {
            let path_matches = prefix.is_empty()
                || path == *prefix
                || path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            path_matches && (methods.is_empty() || methods.contains(method))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> PublicRoutes {
        PublicRoutes::new(&[
            PublicRoute {
                path_prefix: "/public".into(),
                methods: vec![],
            },
            PublicRoute {
                path_prefix: "/health/".into(),
                methods: vec!["GET".into(), "head".into()],
            },
        ])
    }

    #[test]
    fn matches_on_segment_boundaries_and_methods() {
        let r = routes();
        assert!(r.is_public(&Method::GET, "/public"));
        assert!(r.is_public(&Method::POST, "/public/x/y"));
        assert!(r.is_public(&Method::GET, "/public/"));
        assert!(
            r.is_public(&Method::GET, "/p%75blic/x"),
            "decoded before matching"
        );
        assert!(!r.is_public(&Method::GET, "/publicity"));
        assert!(r.is_public(&Method::HEAD, "/health"));
        assert!(!r.is_public(&Method::POST, "/health"));
        assert!(!r.is_public(&Method::GET, "/private"));
    }

    #[test]
    fn traversal_and_odd_paths_are_never_public() {
        let r = routes();
        for path in [
            "/public/../private",
            "/public/%2e%2e/private",
            "/public/%2E%2E/private",
            "/public/./x",
            "//private",
            "/public//x",
            "/public%2f..%2fprivate",
            "/public/..%5cprivate",
            "/public/%zz",
            "/public/%",
            "/public/..;/private",
            "/public/%2e%2e;/private",
            "/public;x/y",
            "public",
            "",
        ] {
            assert!(!r.is_public(&Method::GET, path), "{path}");
        }
    }
}
