//! Scopes: what a token may do (docs/reference/token-format.md, "Scopes").
//!
//! A scope is 1–64 characters from `[a-z0-9:._*-]`, a `*` only at its end;
//! a token holds at most 32. A held scope grants a needed one when they are
//! equal, or when the held one ends in `*` and the needed one starts with
//! what comes before it: `orders:*` grants `orders:read`, `*` grants all.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest scope, in characters.
pub const MAX_SCOPE_LEN: usize = 64;
/// Most scopes one token (or one route) may name.
pub const MAX_SCOPES: usize = 32;

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// A scope breaks the syntax (the offending scope, escaped).
    #[error("{0:?} is not a scope: 1–64 characters from a-z 0-9 : . _ - and a * only at the end")]
    Syntax(String),
    /// More than [`MAX_SCOPES`].
    #[error("{0} scopes, at most 32")]
    TooMany(usize),
}

/// Whether `scope` follows the syntax.
pub fn is_valid_scope(scope: &str) -> bool {
    let bytes = scope.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SCOPE_LEN
        && bytes.iter().enumerate().all(|(i, &b)| {
            matches!(b, b'a'..=b'z' | b'0'..=b'9' | b':' | b'.' | b'_' | b'-')
                || (b == b'*' && i == bytes.len() - 1)
        })
}

/// A token's scopes: checked, sorted, without duplicates. Cheap to clone
/// (the list is shared), so a cached identity carries it at no cost.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Option<Arc<Inner>>);

#[derive(PartialEq, Eq, Hash)]
struct Inner {
    list: Box<[String]>,
    /// The space-separated form, made once: a request that sends it
    /// upstream copies no bytes.
    spaced: Bytes,
}

impl Scopes {
    /// Checks and normalizes a list of scopes.
    pub fn new<I, S>(scopes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = Vec::new();
        for scope in scopes {
            let scope = scope.into();
            if !is_valid_scope(&scope) {
                return Err(ScopeError::Syntax(scope.chars().take(80).collect()));
            }
            list.push(scope);
        }
        list.sort_unstable();
        list.dedup();
        if list.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany(list.len()));
        }
        if list.is_empty() {
            return Ok(Self(None));
        }
        let spaced = Bytes::from(list.join(" "));
        Ok(Self(Some(Arc::new(Inner {
            list: list.into(),
            spaced,
        }))))
    }

    /// From the space-separated form (a stored record, a header).
    pub fn parse_spaced(text: &str) -> Result<Self, ScopeError> {
        Self::new(text.split(' ').filter(|s| !s.is_empty()))
    }

    /// The scopes, sorted.
    pub fn as_slice(&self) -> &[String] {
        self.0.as_ref().map_or(&[], |inner| &inner.list)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether one of these scopes grants `needed`.
    pub fn grants(&self, needed: &str) -> bool {
        self.as_slice()
            .iter()
            .any(|held| match held.strip_suffix('*') {
                Some(prefix) => needed.starts_with(prefix),
                None => held == needed,
            })
    }

    /// The first of `needed` that these scopes do not grant.
    pub fn first_missing<'a>(&self, needed: &'a [String]) -> Option<&'a str> {
        needed
            .iter()
            .map(String::as_str)
            .find(|scope| !self.grants(scope))
    }

    /// Space-separated (RFC 6749 §3.3), as stored and sent upstream.
    pub fn to_spaced(&self) -> String {
        self.as_slice().join(" ")
    }

    /// The space-separated form, shared (empty for none).
    pub fn spaced_bytes(&self) -> Bytes {
        self.0
            .as_ref()
            .map_or_else(Bytes::new, |inner| inner.spaced.clone())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        Self::new(list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in [
            "orders:read",
            "a",
            "orders:*",
            "*",
            "x.y_z-1:2",
            &"a".repeat(64),
        ] {
            assert!(is_valid_scope(ok), "{ok}");
        }
        for bad in [
            "",
            "Orders",
            "orders read",
            "or*ders",
            "**",
            "orders/read",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_scope(bad), "{bad:?}");
        }
        let err = Scopes::new(["ok", "not\nok"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""not\nok" is not a scope: 1–64 characters from a-z 0-9 : . _ - and a * only at the end"#
        );
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert_eq!(Scopes::new(many).unwrap_err(), ScopeError::TooMany(33));
    }

    #[test]
    fn sorted_deduplicated_and_spaced() {
        let scopes = Scopes::new(["b", "a", "b"]).unwrap();
        assert_eq!(scopes.as_slice(), ["a", "b"]);
        assert_eq!(scopes.to_spaced(), "a b");
        assert_eq!(Scopes::parse_spaced("b  a").unwrap(), scopes);
        assert!(Scopes::parse_spaced("").unwrap().is_empty());
        assert_eq!(Scopes::default().to_spaced(), "");
        assert_eq!(serde_json::to_string(&scopes).unwrap(), r#"["a","b"]"#);
        assert!(serde_json::from_str::<Scopes>(r#"["A"]"#).is_err());
    }

    #[test]
    fn grants_exact_and_prefix() {
        let scopes = Scopes::new(["orders:*", "users:read"]).unwrap();
        assert!(scopes.grants("orders:read"));
        assert!(scopes.grants("orders:write"));
        assert!(scopes.grants("orders:*"));
        assert!(scopes.grants("users:read"));
        assert!(!scopes.grants("users:write"));
        assert!(!scopes.grants("users"));
        assert!(!scopes.grants("order"));
        assert!(Scopes::new(["*"]).unwrap().grants("anything:at.all"));
        assert!(!Scopes::default().grants("x"));
        let needed = ["orders:read".to_owned(), "users:write".to_owned()];
        assert_eq!(scopes.first_missing(&needed), Some("users:write"));
        assert_eq!(scopes.first_missing(&needed[..1]), None);
    }
}
