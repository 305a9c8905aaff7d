//! Route rules, matched on the normalized, percent-decoded path by method
//! and path prefix: public routes, which skip authentication, and scoped
//! routes, which name the scopes a token needs (docs/reference/http-contract.md,
//! "Public routes" and "Scopes").
//!
//! A path that is not already in normal form (a `.` or `..` segment, an
//! empty segment such as `//`, an encoded `/`, `\` or `%`, a bad escape)
//! never matches a public route: it is authenticated like any other
//! request. That is fail-closed: `/public/../private`,
//! `/public/%2e%2e/private`, `/public/%252e%252e/private` and `//private`
//! are not public, whatever the service behind would make of them. For the
//! same reason such a path needs every scope that any scoped route names.
//!
//! Scoped routes match without regard to ASCII letter case unless a rule
//! says `case_sensitive = true` (many frameworks route `/ADMIN` to
//! `/admin`), and a rule for GET covers HEAD (every framework answers HEAD
//! with the GET handler). Public routes do neither: matching them more
//! loosely would make more paths public, not fewer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde::{Deserialize, Serialize};

use super::method_override::Named;
use crate::settings::{InvalidConfig, invalid};
use crate::token::{MAX_SCOPES, is_valid_scope};
use crate::wire::normalize_path;

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
/// below it, on a segment boundary; letter case counts only when
/// `case_sensitive`.
#[inline]
fn under(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    // Most paths are in the prefix's own case: one memcmp.
    let same = head == prefix || (!case_sensitive && head.eq_ignore_ascii_case(prefix));
    same && (path.len() == prefix.len() || prefix.is_empty() || path[prefix.len()] == b'/')
}

fn methods_of(names: &[String]) -> Vec<Method> {
    names
        .iter()
        .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .collect()
}

/// The methods a scoped rule applies to: those named, and HEAD wherever
/// GET is (RFC 9110 §9.3.2: HEAD is GET without the content, and
/// frameworks answer it with the GET handler, side effects included).
fn scoped_methods_of(names: &[String]) -> Vec<Method> {
    let mut methods = methods_of(names);
    if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
        methods.push(Method::HEAD);
    }
    methods
}

/// `[[routes]]`: the scopes a request needs (docs/reference/http-contract.md,
/// "Scopes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedRoute {
    /// Matches this path and everything below it, on the normalized path,
    /// without regard to ASCII letter case unless `case_sensitive`; the
    /// most specific (longest) matching prefix wins.
    pub path_prefix: String,
    /// Methods that match; empty: any method. GET covers HEAD too. For one
    /// prefix, a route that names the method wins over one that does not.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Scopes the token needs, every one of them; empty: none (an exception
    /// below a scoped prefix).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Match the prefix's letter case exactly (`/Admin` is then not
    /// `/admin`): only for an upstream known to route case-sensitively.
    #[serde(default)]
    pub case_sensitive: bool,
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

    /// Two routes that can match the same request with the same prefix
    /// length (one prefix, or two that differ only in letter case where
    /// either ignores it) and the same method (GET covering HEAD) would
    /// leave the choice to their order: refused.
    pub fn check_overlaps(routes: &[ScopedRoute]) -> Result<(), InvalidConfig> {
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[..i] {
                let (pa, pb) = (
                    a.path_prefix.trim_end_matches('/'),
                    b.path_prefix.trim_end_matches('/'),
                );
                let same_prefix = if a.case_sensitive && b.case_sensitive {
                    pa == pb
                } else {
                    pa.eq_ignore_ascii_case(pb)
                };
                let (ma, mb) = (scoped_methods_of(&a.methods), scoped_methods_of(&b.methods));
                let same_methods =
                    (ma.is_empty() && mb.is_empty()) || ma.iter().any(|m| mb.contains(m));
                if same_prefix && same_methods {
                    let head = if ma.contains(&Method::HEAD) && mb.contains(&Method::HEAD) {
                        " (a route for GET applies to HEAD too)"
                    } else {
                        ""
                    };
                    return Err(invalid(
                        "routes",
                        format!(
                            "two routes for path_prefix {:?} and the same methods{head}",
                            a.path_prefix
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a request needs of its token, resolved by [`ScopedRoutes::scopes`]:
/// small and cheap to copy on the hot path, and kept by a connection that
/// outlives its request (docs/reference/http-contract.md, "Open connections").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Need {
    /// No rule matches: any valid token.
    #[default]
    Nothing,
    /// One rule's scopes (an index into the table).
    Rule(usize),
    /// Every scope any rule names: a path not in normal form, or a method
    /// override that names no readable method.
    All,
    /// The scopes of several rules at once: a request that a method
    /// override makes another method's too.
    Union(Arc<Vec<String>>),
}

/// The configured scoped routes, most specific first, indexed by the first
/// segment of their prefix (in lower case): a request looks at the rules
/// under its own first segment and those for `/`, not at the whole table.
#[derive(Debug, Clone, Default)]
pub struct ScopedRoutes {
    rules: Vec<ScopeRule>,
    /// First segment, lower-cased → indexes into `rules`, in order.
    by_segment: HashMap<String, Vec<usize>, Fnv>,
    /// The longest key of `by_segment`: a longer segment matches none.
    longest_segment: usize,
    /// Rules for `/` (every path), in order.
    root: Vec<usize>,
    /// Every scope any route names: what a path not in normal form needs.
    all: Vec<String>,
    /// Whether any rule ignores letter case.
    caseless: bool,
}

#[derive(Debug, Clone)]
struct ScopeRule {
    prefix: String,
    methods: Vec<Method>,
    scopes: Vec<String>,
    case_sensitive: bool,
}

impl ScopedRoutes {
    /// From `[[routes]]` (checked by [`ScopedRoute::validate`]).
    pub fn new(routes: &[ScopedRoute]) -> Self {
        let mut rules: Vec<ScopeRule> = routes
            .iter()
            .map(|r| ScopeRule {
                prefix: r.path_prefix.trim_end_matches('/').to_owned(),
                methods: scoped_methods_of(&r.methods),
                scopes: r.scopes.clone(),
                case_sensitive: r.case_sensitive,
            })
            .collect();
        // Longest prefix first; for one prefix, named methods first.
        rules.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.methods.is_empty()));
        let mut by_segment: HashMap<String, Vec<usize>, Fnv> = HashMap::default();
        let mut root = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match first_segment(&rule.prefix) {
                "" => root.push(i),
                segment => by_segment
                    .entry(segment.to_ascii_lowercase())
                    .or_default()
                    .push(i),
            }
        }
        let mut all: Vec<String> = rules.iter().flat_map(|r| r.scopes.clone()).collect();
        all.sort_unstable();
        all.dedup();
        Self {
            longest_segment: by_segment.keys().map(String::len).max().unwrap_or(0),
            caseless: rules.iter().any(|r| !r.case_sensitive),
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

    /// The scopes a request with this method and raw path needs. Method
    /// overrides are the Authenticator's to read (docs/reference/http-contract.md,
    /// "Method overrides"): this is what the method and path alone need.
    pub fn needed(&self, method: &Method, raw_path: &str) -> &[String] {
        match self.need(method, raw_path, &Named::None) {
            Need::Nothing => &[],
            Need::Rule(i) => &self.rules[i].scopes,
            // `Union` comes of method overrides only.
            Need::All | Need::Union(_) => &self.all,
        }
    }

    /// The scopes `need` stands for.
    pub(crate) fn scopes<'a>(&'a self, need: &'a Need) -> &'a [String] {
        match need {
            Need::Nothing => &[],
            Need::Rule(i) => self.rules.get(*i).map_or(&self.all, |r| &r.scopes),
            Need::All => &self.all,
            Need::Union(scopes) => scopes,
        }
    }

    /// What a request with this method and raw path needs, and, when it
    /// names other methods in a method override (`named`), what those
    /// need too.
    pub(crate) fn need(&self, method: &Method, raw_path: &str, named: &Named) -> Need {
        self.need_lazily(method, raw_path, || named.clone())
    }

    /// [`ScopedRoutes::need`], reading the methods a request names (`named`)
    /// only when a rule over its path names methods: else the method cannot
    /// change what it needs, and the common request reads no header for it.
    pub(crate) fn need_lazily(
        &self,
        method: &Method,
        raw_path: &str,
        named: impl FnOnce() -> Named,
    ) -> Need {
        if self.rules.is_empty() {
            return Need::Nothing;
        }
        let Some(path) = self.readable(raw_path) else {
            return Need::All;
        };
        let (own, by_method) = self.rule_for(method, &path);
        if !by_method {
            return own.map_or(Need::Nothing, Need::Rule);
        }
        let named = named();
        let others = match &named {
            Named::None => return own.map_or(Need::Nothing, Need::Rule),
            Named::Unreadable => return Need::All,
            Named::Methods(methods) => methods,
        };
        let mut rules = vec![own];
        for other in others {
            let (rule, _) = self.rule_for(other, &path);
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        if let [only] = rules[..] {
            return only.map_or(Need::Nothing, Need::Rule);
        }
        // The route's own scopes first, then what the others add.
        let mut union: Vec<String> = Vec::new();
        for scope in rules
            .into_iter()
            .flatten()
            .flat_map(|i| &self.rules[i].scopes)
        {
            if !union.contains(scope) {
                union.push(scope.clone());
            }
        }
        if union.is_empty() {
            Need::Nothing
        } else {
            Need::Union(Arc::new(union))
        }
    }

    /// The path to match on: normalized, and, where a rule ignores case,
    /// without a letter that a Unicode-aware router folds into an ASCII
    /// one (`ı` → `I`, `ſ` → `S`, `K` (Kelvin) → `k`, `İ` → `i`: .NET's
    /// `OrdinalIgnoreCase` and Java's `equalsIgnoreCase` read `/admın` as
    /// `/admin`). `None`: needs every scope.
    fn readable<'a>(&self, raw_path: &'a str) -> Option<Cow<'a, str>> {
        let path = normalize_path(raw_path)?;
        if self.caseless
            && !path.is_ascii()
            && path
                .chars()
                .any(|c| matches!(c, '\u{130}' | '\u{131}' | '\u{17f}' | '\u{212a}'))
        {
            return None;
        }
        Some(path)
    }

    /// The first rule (most specific) matching a normalized path and
    /// method, and whether any rule over the path names methods.
    fn rule_for(&self, method: &Method, path: &str) -> (Option<usize>, bool) {
        let segment = first_segment(path);
        let mut buffer = [0u8; 64];
        let own = (segment.len() <= self.longest_segment)
            .then(|| lower_case(segment, &mut buffer))
            .and_then(|key| self.by_segment.get(&*key));
        let (mut found, mut by_method) = (None, false);
        // Most specific first: the first rule over the path for any method
        // decides for every method no rule before it names.
        for &i in own.into_iter().flatten().chain(&self.root) {
            let rule = &self.rules[i];
            if !under(&rule.prefix, path, rule.case_sensitive) {
                continue;
            }
            if rule.methods.is_empty() {
                return (found.or(Some(i)), by_method);
            }
            by_method = true;
            if found.is_none() && rule.methods.contains(method) {
                found = Some(i);
            }
        }
        (found, by_method)
    }
}

/// FNV-1a, for the segment index: a lookup hashes a few bytes of the path
/// on every request, and SipHash's resistance to flooding buys nothing for
/// a table fixed at start-up (a lookup never inserts).
#[derive(Debug, Clone, Copy, Default)]
struct Fnv;

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `segment` in ASCII lower case: borrowed when it has no upper-case
/// letter, else written to `buffer` when it fits (no allocation on the
/// request path).
fn lower_case<'a>(segment: &'a str, buffer: &'a mut [u8; 64]) -> Cow<'a, str> {
    if !segment.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(segment);
    }
    if let Some(out) = buffer.get_mut(..segment.len()) {
        out.copy_from_slice(segment.as_bytes());
        out.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(out) {
            return Cow::Borrowed(lower);
        }
    }
    Cow::Owned(segment.to_ascii_lowercase())
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
            under(prefix, &path, true) && (methods.is_empty() || methods.contains(method))
        })
    }
}

#[cfg(test)]
mod tests;
