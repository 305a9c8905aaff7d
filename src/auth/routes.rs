//! Route rules, matched on the normalized, percent-decoded path by method
//! and path prefix: public routes, which skip authentication, and scoped
//! routes, which name the scopes a token needs (docs/http-contract.md,
//! "Public routes" and "Scopes").
//!
//! A path that is not already in normal form (a `.` or `..` segment, an
//! empty segment such as `//`, an encoded `/`, `\` or `%`, a bad escape)
//! never matches a public route: it is authenticated like any other
//! request. That is fail-closed: `/public/../private`,
//! `/public/%2e%2e/private`, `/public/%252e%252e/private` and `//private`
//! are not public, whatever the service behind would make of them. For the
//! same reason such a path needs every scope that any scoped route names.

use std::collections::HashMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::http_util::normalize_path;
use crate::settings::{InvalidConfig, invalid};
use crate::token::{MAX_SCOPES, is_valid_scope};

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
        check_prefix_and_methods(
            ("public_routes.path_prefix", "public_routes.methods"),
            &self.path_prefix,
            &self.methods,
        )
    }
}

fn check_prefix_and_methods(
    (prefix_key, methods_key): (&'static str, &'static str),
    prefix: &str,
    methods: &[String],
) -> Result<(), InvalidConfig> {
    if !prefix.starts_with('/') || prefix.contains('%') || normalize_path(prefix).is_none() {
        return Err(invalid(
            prefix_key,
            format!(
                "{prefix:?} must be an absolute, normalized path (no //, . or .. segments, no %-escapes)"
            ),
        ));
    }
    for method in methods {
        Method::from_bytes(method.as_bytes())
            .map_err(|_| invalid(methods_key, format!("{method:?} is not an HTTP method")))?;
    }
    Ok(())
}

/// Whether the normalized `path` is `prefix` (trailing `/` trimmed) or
/// below it, on a segment boundary.
fn under(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn methods_of(names: &[String]) -> Vec<Method> {
    names
        .iter()
        .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .collect()
}

/// `[[routes]]`: the scopes a request needs (docs/http-contract.md,
/// "Scopes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedRoute {
    /// Matches this path and everything below it, on the normalized path;
    /// the most specific (longest) matching prefix wins.
    pub path_prefix: String,
    /// Methods that match; empty: any method. For one prefix, a route that
    /// names the method wins over one that does not.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Scopes the token needs, every one of them; empty: none (an exception
    /// below a scoped prefix).
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl ScopedRoute {
    /// Prefix and methods as for public routes; scopes in the scope syntax,
    /// at most 32.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check_prefix_and_methods(
            ("routes.path_prefix", "routes.methods"),
            &self.path_prefix,
            &self.methods,
        )?;
        if let Some(bad) = self.scopes.iter().find(|s| !is_valid_scope(s)) {
            return Err(invalid(
                "routes.scopes",
                format!(
                    "{bad:?} is not a scope: 1–64 characters from a-z 0-9 : . _ - and a * only at the end"
                ),
            ));
        }
        if self.scopes.len() > MAX_SCOPES {
            return Err(invalid("routes.scopes", "at most 32 scopes per route"));
        }
        Ok(())
    }

    /// Two routes for one prefix and one method (or both for any method)
    /// would leave the choice to their order: refused.
    pub fn check_overlaps(routes: &[ScopedRoute]) -> Result<(), InvalidConfig> {
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[..i] {
                let same_prefix =
                    a.path_prefix.trim_end_matches('/') == b.path_prefix.trim_end_matches('/');
                let (ma, mb) = (methods_of(&a.methods), methods_of(&b.methods));
                let same_methods =
                    (ma.is_empty() && mb.is_empty()) || ma.iter().any(|m| mb.contains(m));
                if same_prefix && same_methods {
                    return Err(invalid(
                        "routes",
                        format!(
                            "two routes for path_prefix {:?} and the same methods",
                            a.path_prefix
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The configured scoped routes, most specific first, indexed by the first
/// segment of their prefix: a request looks at the rules under its own
/// first segment and those for `/`, not at the whole table.
#[derive(Debug, Clone, Default)]
pub struct ScopedRoutes {
    rules: Vec<ScopeRule>,
    /// First segment → indexes into `rules`, in order.
    by_segment: HashMap<String, Vec<usize>>,
    /// Rules for `/` (every path), in order.
    root: Vec<usize>,
    /// Every scope any route names: what a path not in normal form needs.
    all: Vec<String>,
}

#[derive(Debug, Clone)]
struct ScopeRule {
    prefix: String,
    methods: Vec<Method>,
    scopes: Vec<String>,
}

impl ScopedRoutes {
    /// From `[[routes]]` (checked by [`ScopedRoute::validate`]).
    pub fn new(routes: &[ScopedRoute]) -> Self {
        let mut rules: Vec<ScopeRule> = routes
            .iter()
            .map(|r| ScopeRule {
                prefix: r.path_prefix.trim_end_matches('/').to_owned(),
                methods: methods_of(&r.methods),
                scopes: r.scopes.clone(),
            })
            .collect();
        // Longest prefix first; for one prefix, named methods first.
        rules.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.methods.is_empty()));
        let mut by_segment: HashMap<String, Vec<usize>> = HashMap::new();
        let mut root = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match first_segment(&rule.prefix) {
                "" => root.push(i),
                segment => by_segment.entry(segment.to_owned()).or_default().push(i),
            }
        }
        let mut all: Vec<String> = rules.iter().flat_map(|r| r.scopes.clone()).collect();
        all.sort_unstable();
        all.dedup();
        Self {
            rules,
            by_segment,
            root,
            all,
        }
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scopes a request with this method and raw path needs.
    pub fn needed(&self, method: &Method, raw_path: &str) -> &[String] {
        if self.rules.is_empty() {
            return &[];
        }
        let Some(path) = normalize_path(raw_path) else {
            return &self.all;
        };
        let own = self.by_segment.get(first_segment(&path));
        own.into_iter()
            .flatten()
            .chain(&self.root)
            .map(|&i| &self.rules[i])
            .find(|r| {
                under(&r.prefix, &path) && (r.methods.is_empty() || r.methods.contains(method))
            })
            .map_or(&[], |r| &r.scopes)
    }
}

/// `orders` of `/orders/7`; empty for `/` and `` (a trimmed `/`).
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
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
                (prefix, methods_of(&r.methods))
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
            under(prefix, &path) && (methods.is_empty() || methods.contains(method))
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

    fn scoped(prefix: &str, methods: &[&str], scopes: &[&str]) -> ScopedRoute {
        ScopedRoute {
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn the_most_specific_scoped_route_wins() {
        let routes = [
            scoped("/orders", &[], &["orders:read"]),
            scoped("/orders/", &["post", "DELETE"], &["orders:write"]),
            scoped("/orders/catalog", &[], &[]),
            scoped("/", &["DELETE"], &["admin"]),
        ];
        let r = ScopedRoutes::new(&routes);
        let needed = |m: Method, p: &str| r.needed(&m, p).join(" ");
        assert_eq!(needed(Method::GET, "/orders"), "orders:read");
        assert_eq!(needed(Method::GET, "/orders/1"), "orders:read");
        assert_eq!(needed(Method::POST, "/orders/1"), "orders:write");
        assert_eq!(needed(Method::DELETE, "/orders"), "orders:write");
        assert_eq!(needed(Method::DELETE, "/orders/catalog/x"), "");
        assert_eq!(needed(Method::DELETE, "/other"), "admin");
        assert_eq!(needed(Method::GET, "/other"), "");
        assert_eq!(needed(Method::GET, "/ordersx"), "");
        assert_eq!(needed(Method::GET, "/%6frders"), "orders:read");
        // Not in normal form: every scope any route names.
        for path in [
            "/x/../orders",
            "//orders",
            "/orders/catalog/%2e%2e",
            "/a;b",
            "orders",
        ] {
            assert_eq!(
                needed(Method::GET, path),
                "admin orders:read orders:write",
                "{path}"
            );
        }
        assert!(
            ScopedRoutes::new(&[])
                .needed(&Method::GET, "/x/../y")
                .is_empty()
        );
    }

    #[test]
    fn scoped_routes_are_checked() {
        let err = |route: ScopedRoute| route.validate().unwrap_err().to_string();
        assert!(err(scoped("/a", &[], &["Orders"])).contains("routes.scopes"));
        assert!(err(scoped("/a/../b", &[], &["x"])).contains("routes.path_prefix"));
        assert!(err(scoped("/a", &["G T"], &["x"])).contains("routes.methods"));
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        let route = ScopedRoute {
            scopes: many,
            ..scoped("/a", &[], &[])
        };
        assert!(
            route
                .validate()
                .unwrap_err()
                .to_string()
                .contains("at most 32")
        );
        assert!(scoped("/a", &[], &["a:*"]).validate().is_ok());

        let overlapping = [
            scoped("/a", &["GET", "POST"], &["x"]),
            scoped("/a/", &["post"], &["y"]),
        ];
        let e = ScopedRoute::check_overlaps(&overlapping).unwrap_err();
        assert!(e.to_string().contains("two routes for path_prefix"), "{e}");
        let both_any = [scoped("/a", &[], &["x"]), scoped("/a", &[], &["y"])];
        assert!(ScopedRoute::check_overlaps(&both_any).is_err());
        let fine = [
            scoped("/a", &["GET"], &["x"]),
            scoped("/a", &[], &["y"]),
            scoped("/a/b", &["GET"], &["z"]),
        ];
        assert!(ScopedRoute::check_overlaps(&fine).is_ok());
    }
}
