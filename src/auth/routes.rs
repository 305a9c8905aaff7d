//! Public routes: method + path-prefix rules that skip authentication,
//! matched on the normalized, percent-decoded path.
//!
//! A path that is not already in normal form (a `.` or `..` segment, an
//! empty segment such as `//`, an encoded `/`, `\` or `%`, a bad escape)
//! never matches: it is authenticated like any other request. That is
//! fail-closed: `/public/../private`, `/public/%2e%2e/private`,
//! `/public/%252e%252e/private` and `//private` are not public, whatever
//! the service behind would make of them.

use http::Method;
use serde::{Deserialize, Serialize};

use crate::http_util::normalize_path;
use crate::settings::{InvalidConfig, invalid};

/// `[[public_routes]]`: a request matching one skips authentication (its
/// forged identity headers are still removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicRoute {
    /// Matches this path and everything below it (`/health` matches
    /// `/health` and `/health/live`, not `/healthz`), on the normalized path.
    pub path_prefix: String,
    /// Methods that match; empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
}

impl PublicRoute {
    /// The prefix must be a normalized absolute path, the methods HTTP
    /// methods.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if !self.path_prefix.starts_with('/')
            || self.path_prefix.contains('%')
            || normalize_path(&self.path_prefix).is_none()
        {
            return Err(invalid(
                "public_routes.path_prefix",
                format!(
                    "{:?} must be an absolute, normalized path (no //, . or .. segments, no %-escapes)",
                    self.path_prefix
                ),
            ));
        }
        for method in &self.methods {
            Method::from_bytes(method.as_bytes()).map_err(|_| {
                invalid(
                    "public_routes.methods",
                    format!("{method:?} is not an HTTP method"),
                )
            })?;
        }
        Ok(())
    }
}

/// The configured public routes.
#[derive(Debug, Clone, Default)]
pub struct PublicRoutes {
    rules: Vec<(String, Vec<Method>)>,
}

impl PublicRoutes {
    /// From `[[public_routes]]` (checked by [`PublicRoute::validate`]).
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
            "/public/%252e%252e/private",
            "/public/%25",
            "public",
            "",
        ] {
            assert!(!r.is_public(&Method::GET, path), "{path}");
        }
    }
}
