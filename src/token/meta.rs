//! A token's metadata (docs/reference/http-contract.md, "Metadata"): a JSON object
//! that tokengate stores, returns and can forward, but never interprets.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Serialize, Serializer};

/// Largest metadata, as compact JSON, in bytes.
pub const MAX_META_BYTES: usize = 4096;

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// Not a JSON object (what it was: `an array`, `a string`, …).
    #[error("must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// Larger than [`MAX_META_BYTES`] as compact JSON.
    #[error("must be at most 4096 bytes as compact JSON (got {0})")]
    TooLarge(usize),
}

/// A token's metadata: a JSON object of at most 4 KiB, kept with its
/// compact text and the base64url form of that text (for the header), both
/// made once. Cheap to clone (shared); empty when the token has none.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Meta(Option<Arc<Inner>>);

#[derive(PartialEq, Eq)]
struct Inner {
    object: serde_json::Map<String, serde_json::Value>,
    text: String,
    header: Bytes,
}

impl Meta {
    /// From a JSON value: an object of at most 4 KiB (an empty object is no
    /// metadata).
    pub fn new(value: serde_json::Value) -> Result<Self, MetaError> {
        let object = match value {
            serde_json::Value::Object(object) => object,
            serde_json::Value::Null => return Err(MetaError::NotAnObject("null")),
            serde_json::Value::Bool(_) => return Err(MetaError::NotAnObject("a boolean")),
            serde_json::Value::Number(_) => return Err(MetaError::NotAnObject("a number")),
            serde_json::Value::String(_) => return Err(MetaError::NotAnObject("a string")),
            serde_json::Value::Array(_) => return Err(MetaError::NotAnObject("an array")),
        };
        if object.is_empty() {
            return Ok(Self(None));
        }
        let text = serde_json::Value::Object(object.clone()).to_string();
        if text.len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge(text.len()));
        }
        let header = Bytes::from(base64url(text.as_bytes()));
        Ok(Self(Some(Arc::new(Inner {
            object,
            text,
            header,
        }))))
    }

    /// From its stored form (compact JSON).
    pub fn parse(text: &str) -> Result<Self, MetaError> {
        let value = serde_json::from_str(text).map_err(|_| MetaError::NotAnObject("JSON"))?;
        Self::new(value)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The compact JSON text, as stored (`{}` for none).
    pub fn as_json(&self) -> &str {
        self.0.as_ref().map_or("{}", |inner| &inner.text)
    }

    /// The object (empty for none).
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.as_ref().and_then(|inner| inner.object.get(key))
    }

    /// The base64url (no padding) form of the compact JSON, shared: what the
    /// `[headers] meta` header carries.
    pub fn header_bytes(&self) -> Bytes {
        self.0
            .as_ref()
            .map_or_else(Bytes::new, |inner| inner.header.clone())
    }
}

/// base64url without padding (RFC 4648 §5): header-safe, and what JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(inner) => inner.object.serialize(serializer),
            None => serializer.collect_map(std::iter::empty::<(&str, &str)>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_of_at_most_four_kib() {
        let meta = Meta::new(json!({"plan": "pro", "seats": 5})).unwrap();
        assert_eq!(meta.as_json(), r#"{"plan":"pro","seats":5}"#);
        assert_eq!(meta.get("plan"), Some(&json!("pro")));
        assert_eq!(Meta::parse(meta.as_json()).unwrap(), meta);
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            json!({"plan": "pro", "seats": 5})
        );
        assert!(Meta::new(json!({})).unwrap().is_empty());
        assert_eq!(serde_json::to_string(&Meta::default()).unwrap(), "{}");
        for (value, what) in [
            (json!([1]), "an array"),
            (json!("x"), "a string"),
            (json!(1), "a number"),
            (json!(null), "null"),
            (json!(true), "a boolean"),
        ] {
            assert_eq!(Meta::new(value), Err(MetaError::NotAnObject(what)));
        }
        // {"k":"…"} is 8 bytes around the string.
        assert!(Meta::new(json!({"k": "x".repeat(4088)})).is_ok());
        assert_eq!(
            Meta::new(json!({"k": "x".repeat(4089)})),
            Err(MetaError::TooLarge(4097))
        );
    }

    #[test]
    fn base64url_as_rfc_4648_says() {
        // RFC 4648 §10, in the URL-safe alphabet and without padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        let meta = Meta::new(json!({"a": 1})).unwrap();
        assert_eq!(meta.header_bytes(), "eyJhIjoxfQ");
    }
}
