//! Method overrides: a request that asks the service behind to run another
//! method than its own: `POST /orders/1` with `X-HTTP-Method-Override:
//! DELETE`, or `?_method=DELETE`. Express's `method-override`, Laravel,
//! Symfony, Rails, ASP.NET Core and others honour them, so the route table
//! must see the method the service will run: such a request needs the
//! scopes of its own method and of every method it names, or the proxy
//! removes them first (`[proxy] method_override = "strip"`;
//! docs/reference/http-contract.md, "Method overrides").
//!
//! Fail closed: the headers are recognised in every spelling the identity
//! headers are (any case, `_` or `.` for `-`), the query parameter under any
//! case and percent-encoding of its name and in the spellings PHP folds
//! into `_method` (`.method`, `[method`, ` _method`), with `&` or `;`
//! between pairs, anywhere in the query and whatever the request's own
//! method; a value that is not a method (`DEL ETE`, too many of them) needs
//! every scope any route names. A request's own method in lower case
//! (`delete`, which frameworks upper-case) counts as named too. A
//! `_method` in a form body is not read: the gateway does not buffer
//! bodies (forward-auth never sees them).

use http::{HeaderMap, HeaderName, Method, Uri};

use super::headers::folds_to;
use crate::wire::percent_decode;

/// The override headers, folded.
pub(crate) const HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The override query parameter (and form field, not read).
pub(crate) const QUERY_PARAM: &str = "_method";

/// Most distinct methods one request may name; more is unreadable.
const MAX_NAMED: usize = 8;

/// The methods a request names besides its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Named {
    /// None (the common case: no allocation).
    #[default]
    None,
    /// These, upper-cased as frameworks read them, without duplicates.
    Methods(Vec<Method>),
    /// A value that is not a method, or too many: needs every scope.
    Unreadable,
}

impl Named {
    /// The methods named by `headers` and the query of `uri`.
    #[inline]
    pub(crate) fn of(headers: &HeaderMap, uri: &Uri) -> Self {
        let mut named = Self::None;
        // One pass over the names, comparing lengths first: this runs on
        // every request to a gateway with `[[routes]]`.
        if headers.keys().any(is_override_header) {
            for (name, value) in headers {
                if is_override_header(name) {
                    named.add(value.as_bytes());
                }
            }
        }
        // Every spelling of `_method` has `method` in it, in some letter
        // case, unless a letter is percent-encoded: a query with neither
        // (`?page=2`) is not looked into.
        if let Some(query) = uri.query()
            && (query.contains('%')
                || query
                    .as_bytes()
                    .windows(6)
                    .any(|w| w.eq_ignore_ascii_case(b"method")))
        {
            // A server that takes the query from the last `?` of the target
            // (`/o?a=b?_method=DELETE`) sees pairs the first reading does
            // not: that tail is read too.
            let tail = query.rsplit_once('?').map(|(_, tail)| tail);
            for pair in std::iter::once(query)
                .chain(tail)
                .flat_map(|part| part.split(['&', ';']))
            {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if is_override_param(key) {
                    match decode(value) {
                        Some(value) => named.add(value.as_bytes()),
                        None => named = Self::Unreadable,
                    }
                }
            }
        }
        named
    }

    /// Adds the methods of one value (`DELETE`, or `PUT, DELETE` when a
    /// proxy joined repeated headers); an empty value names none.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for piece in value.split(|&b| b == b',') {
            let piece = piece.trim_ascii();
            if piece.is_empty() || *self == Self::Unreadable {
                continue;
            }
            let Ok(method) = Method::from_bytes(&piece.to_ascii_uppercase()) else {
                *self = Self::Unreadable;
                return;
            };
            match self {
                Self::None => *self = Self::Methods(vec![method]),
                Self::Methods(methods) if methods.contains(&method) => {}
                Self::Methods(methods) if methods.len() < MAX_NAMED => methods.push(method),
                _ => *self = Self::Unreadable,
            }
        }
    }
}

/// Whether `name` is an override header, in any spelling.
fn is_override_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    // Length and first letter first: `authorization` is 13 bytes too.
    matches!(name.len(), 13 | 17 | 22)
        && name[0].eq_ignore_ascii_case(&b'x')
        && HEADERS.iter().any(|h| folds_to(name, h.as_bytes()))
}

/// Whether a query key is `_method`, in any case, once decoded and folded
/// as PHP folds keys (leading spaces dropped; a space, `.` or `[` read as
/// `_`): Laravel and Symfony see `.method` and `+_method` as `_method`.
/// A leading `?` goes too: in `/o??_method=DELETE` the query is
/// `?_method=DELETE`, which `URLSearchParams` reads as `_method`.
fn is_override_param(key: &str) -> bool {
    if key.eq_ignore_ascii_case(QUERY_PARAM) {
        return true;
    }
    let Some(decoded) = decode(key) else {
        // Not a key anyone reads as `_method`.
        return false;
    };
    let folded = decoded.strip_prefix('?').unwrap_or(&decoded);
    let folded = folded.trim_start_matches(' ');
    folded.len() == QUERY_PARAM.len()
        && folded.bytes().zip(QUERY_PARAM.bytes()).all(|(a, b)| {
            (matches!(a, b' ' | b'.' | b'[') && b == b'_') || a.eq_ignore_ascii_case(&b)
        })
}

/// A query key or value decoded as forms encode it (`+` is a space).
fn decode(text: &str) -> Option<String> {
    percent_decode(&text.replace('+', " "))
}

/// Removes every override header and `_method` query parameter; whether
/// there was one (the proxy's `[proxy] method_override = "strip"`).
#[cfg(feature = "server")]
pub(crate) fn strip(headers: &mut HeaderMap, uri: &mut Uri) -> bool {
    let mut stripped = false;
    if headers.keys().any(is_override_header) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_override_header(n))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
        stripped = true;
    }
    let Some(query) = uri.query() else {
        return stripped;
    };
    // An override after the last `?` (read by some servers, see
    // `Named::of`) goes with everything after that `?`.
    let is_override_pair =
        |pair: &str| is_override_param(pair.split_once('=').map_or(pair, |(k, _)| k));
    let (query, mut removed) = match query.rsplit_once('?') {
        Some((head, tail)) if tail.split(['&', ';']).any(is_override_pair) => (head, true),
        _ => (query, false),
    };
    let mut kept = String::with_capacity(query.len());
    for piece in query.split_inclusive(['&', ';']) {
        let pair = piece.trim_end_matches(['&', ';']);
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if is_override_param(key) {
            removed = true;
        } else {
            kept.push_str(piece);
        }
    }
    if !removed {
        return stripped;
    }
    let kept = kept.trim_end_matches(['&', ';']);
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{kept}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(path_and_query) = path_and_query.parse() {
        parts.path_and_query = Some(path_and_query);
        if let Ok(new) = Uri::from_parts(parts) {
            *uri = new;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(headers: &[(&str, &str)], uri: &str) -> Named {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Named::of(&map, &uri.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_every_header_and_the_query_parameter_is_read() {
        assert_eq!(named(&[], "/orders/1"), Named::None);
        assert_eq!(named(&[("x-other", "DELETE")], "/o?a=1"), Named::None);
        for header in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "X_HTTP_Method_Override",
            "x.http.method",
            "X_Method.Override",
        ] {
            assert_eq!(
                named(&[(header, "delete")], "/orders/1"),
                Named::Methods(vec![Method::DELETE]),
                "{header}"
            );
        }
        for uri in [
            "/orders/1?_method=DELETE",
            "/orders/1?a=1&_method=delete",
            "/orders/1?a=1;_method=DELETE",
            "/orders/1?_METHOD=DELETE",
            "/orders/1?%5Fmethod=DELETE",
            "/orders/1?_method=%44ELETE",
            "/orders/1?_method=+DELETE+",
            "/orders/1?.method=DELETE",
            "/orders/1?[method=DELETE",
            "/orders/1?+_method=DELETE",
            "/orders/1?%20_method=DELETE",
            // The query of `/o??…` starts with `?`: `URLSearchParams`
            // drops it (found by the walk-around property).
            "/orders/1??_method=DELETE",
            // After the last `?`, as a server reading from it sees it.
            "/orders/1?/?_method=DELETE",
            "/orders/1?a=b?_method=DELETE",
            "/orders/1?_m%65thod=DELETE",
        ] {
            assert_eq!(
                named(&[], uri),
                Named::Methods(vec![Method::DELETE]),
                "{uri}"
            );
        }
        assert_eq!(
            named(
                &[
                    ("x-http-method-override", "PUT, DELETE"),
                    ("x-http-method", "put")
                ],
                "/o?_method=PATCH&_method=",
            ),
            Named::Methods(vec![Method::PUT, Method::DELETE, Method::PATCH])
        );
        assert_eq!(named(&[("x-http-method", "")], "/o?_method"), Named::None);
        // PHP drops leading spaces: ` method` is `method`, not `_method`.
        for uri in [
            "/o?method=DELETE",
            "/o?+method=DELETE",
            "/o?_methods=DELETE",
            "/o?x_method=DELETE",
            "/o?_method[]=DELETE",
        ] {
            assert_eq!(named(&[], uri), Named::None, "{uri}");
        }
    }

    #[test]
    fn what_is_not_a_method_is_unreadable() {
        assert_eq!(
            named(&[("x-http-method-override", "DEL ETE")], "/o"),
            Named::Unreadable
        );
        assert_eq!(
            named(&[("x-http-method-override", "DELETE")], "/o?_method=%zz"),
            Named::Unreadable
        );
        let many = (0..9)
            .map(|i| format!("M{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            named(&[("x-http-method-override", &many)], "/o"),
            Named::Unreadable
        );
    }

    #[cfg(feature = "server")]
    #[test]
    fn strip_removes_every_header_and_parameter_and_keeps_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert("x-http-method-override", "DELETE".parse().unwrap());
        headers.insert("x_method_override", "DELETE".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        let mut uri: Uri = "/orders/1?a=1&_method=DELETE;b=2&%5fMETHOD=PUT&.method=GET"
            .parse()
            .unwrap();
        assert!(strip(&mut headers, &mut uri));
        assert_eq!(headers.len(), 1);
        assert_eq!(uri, "/orders/1?a=1&b=2");
        let mut tail: Uri = "/orders/1?a=1?_method=DELETE".parse().unwrap();
        assert!(strip(&mut HeaderMap::new(), &mut tail));
        assert_eq!(tail, "/orders/1?a=1");
        let mut uri: Uri = "/orders/1?_method=DELETE".parse().unwrap();
        assert!(strip(&mut HeaderMap::new(), &mut uri));
        assert_eq!(uri, "/orders/1");
        let mut uri: Uri = "/orders/1?a=1".parse().unwrap();
        assert!(!strip(&mut HeaderMap::new(), &mut uri));
        assert_eq!(uri, "/orders/1?a=1");
    }
}
