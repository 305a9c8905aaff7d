//! The identity headers: strip every client-sent copy, then insert the real
//! values. One helper, used by the Layer and the proxy alike.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::service::AuthContext;
use crate::settings::{InvalidConfig, invalid};

/// `[headers]`: names of the identity headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    /// Carries the authenticated account id to the service.
    pub account_id: String,
    /// Carries the authenticated token id to the service.
    pub token_id: String,
    /// Carries the token's scopes, space-separated (absent when it has
    /// none).
    pub scopes: String,
    /// Carries the token's metadata, base64url of its JSON (absent when
    /// it has none); empty (the default): not sent.
    pub meta: String,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            account_id: "X-Account-Id".to_owned(),
            token_id: "X-Token-Id".to_owned(),
            scopes: "X-Token-Scopes".to_owned(),
            meta: String::new(),
        }
    }
}

impl HeadersConfig {
    /// Each name is a valid header that means nothing else to HTTP or a
    /// proxy, and they differ however they are folded.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut named = vec![
            ("headers.account_id", &self.account_id),
            ("headers.token_id", &self.token_id),
            ("headers.scopes", &self.scopes),
        ];
        if !self.meta.is_empty() {
            named.push(("headers.meta", &self.meta));
        }
        for (i, (key, name)) in named.iter().enumerate() {
            check_identity_header(name).map_err(|message| invalid(key, message))?;
            if let Some((other, _)) = named[..i]
                .iter()
                .find(|(_, earlier)| fold_header_name(earlier) == fold_header_name(name))
            {
                return Err(invalid(key, format!("must differ from {other}")));
            }
        }
        Ok(())
    }
}

/// An identity header must be a valid name, and not one that proxies or
/// HTTP itself give a meaning to.
fn check_identity_header(name: &str) -> Result<(), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    const RESERVED: &[&str] = &[
        "authorization",
        "host",
        "connection",
        "content-length",
        "content-type",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-api-key",
    ];
    if RESERVED.contains(&parsed.as_str()) {
        return Err(format!("{name:?} is a reserved header"));
    }
    Ok(())
}

/// A header name as proxies and frameworks may fold it: lowercase, with `_`
/// and `.` read as `-` (nginx, CGI/WSGI and some Node frameworks map
/// `X_Account_Id` and `X-Account-Id` to the same variable).
pub fn fold_header_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii() {
                char::from(fold_byte(c as u8))
            } else {
                c
            }
        })
        .collect()
}

fn fold_byte(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Whether `name` folds to `folded` (already folded), without allocating:
/// this runs for every header of every request.
pub(crate) fn folds_to(name: &[u8], folded: &[u8]) -> bool {
    name.len() == folded.len() && name.iter().zip(folded).all(|(&a, &b)| fold_byte(a) == b)
}

/// The names of the identity headers (default `X-Account-Id`, `X-Token-Id`,
/// `X-Token-Scopes`, and the metadata header when configured).
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    account_id: HeaderName,
    token_id: HeaderName,
    scopes: HeaderName,
    meta: Option<HeaderName>,
    folded: Vec<String>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self::new("X-Account-Id", "X-Token-Id", "X-Token-Scopes")
            .expect("valid default header names")
    }
}

impl IdentityHeaders {
    /// The headers `[headers]` names (checked by [`HeadersConfig::validate`]).
    pub fn from_config(config: &HeadersConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let headers = Self::new(&config.account_id, &config.token_id, &config.scopes)
            .map_err(|e| invalid("headers", e.to_string()))?;
        if config.meta.is_empty() {
            return Ok(headers);
        }
        headers
            .with_meta(&config.meta)
            .map_err(|e| invalid("headers.meta", e.to_string()))
    }

    /// Also sends the token's metadata in `name` (base64url of its JSON).
    pub fn with_meta(mut self, name: &str) -> Result<Self, http::header::InvalidHeaderName> {
        self.meta = Some(HeaderName::from_bytes(name.as_bytes())?);
        self.folded.push(fold_header_name(name));
        Ok(self)
    }

    /// Identity headers with these names.
    pub fn new(
        account_id: &str,
        token_id: &str,
        scopes: &str,
    ) -> Result<Self, http::header::InvalidHeaderName> {
        Ok(Self {
            account_id: HeaderName::from_bytes(account_id.as_bytes())?,
            token_id: HeaderName::from_bytes(token_id.as_bytes())?,
            scopes: HeaderName::from_bytes(scopes.as_bytes())?,
            meta: None,
            folded: vec![
                fold_header_name(account_id),
                fold_header_name(token_id),
                fold_header_name(scopes),
            ],
        })
    }

    /// The account-id header's name.
    pub fn account_id_name(&self) -> &HeaderName {
        &self.account_id
    }

    /// The token-id header's name.
    pub fn token_id_name(&self) -> &HeaderName {
        &self.token_id
    }

    /// The scopes header's name.
    pub fn scopes_name(&self) -> &HeaderName {
        &self.scopes
    }

    /// Whether `name` is, or folds into, an identity header.
    pub fn is_identity(&self, name: &str) -> bool {
        self.folded
            .iter()
            .any(|f| folds_to(name.as_bytes(), f.as_bytes()))
    }

    /// Removes every header (or trailer) that is, or folds into, an identity
    /// header. Returns how many values were removed.
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        // The common case, nothing forged: one pass, no allocation.
        if !headers.keys().any(|name| self.is_identity(name.as_str())) {
            return 0;
        }
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.is_identity(name.as_str()))
            .cloned()
            .collect();
        let mut removed = 0;
        for name in forged {
            if let http::header::Entry::Occupied(entry) = headers.entry(name) {
                removed += entry.remove_entry_mult().1.count();
            }
        }
        if removed > 0 {
            tracing::debug!(removed, "removed client-sent identity headers");
        }
        removed
    }

    /// Strips client-sent copies, then inserts the real values when a token
    /// was authenticated (a public route gets none).
    pub fn apply(&self, headers: &mut HeaderMap, auth: Option<&AuthContext>) {
        self.strip(headers);
        if let Some(auth) = auth {
            self.insert(headers, auth);
        }
    }

    /// Sets the real values (after [`IdentityHeaders::strip`]).
    pub fn insert(&self, headers: &mut HeaderMap, auth: &AuthContext) {
        // Account ids hold no control characters (TokenService checks), so
        // they are always valid header bytes.
        if let Ok(value) = HeaderValue::from_bytes(auth.account_id.as_bytes()) {
            headers.insert(self.account_id.clone(), value);
        }
        // Encoded on the stack: no `fmt` machinery, no String.
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = auth.token_id.as_uuid().hyphenated().encode_lower(&mut id);
        if let Ok(value) = HeaderValue::from_str(id) {
            headers.insert(self.token_id.clone(), value);
        }
        // Scopes are checked to `[a-z0-9:._*-]`: valid header bytes.
        if !auth.scopes.is_empty()
            && let Ok(value) = HeaderValue::from_maybe_shared(auth.scopes.spaced_bytes())
        {
            headers.insert(self.scopes.clone(), value);
        }
        if let Some(name) = &self.meta
            && !auth.meta.is_empty()
            && let Ok(value) = HeaderValue::from_maybe_shared(auth.meta.header_bytes())
        {
            headers.insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Scopes, TokenId};

    #[test]
    fn strips_every_spelling_then_inserts_the_real_values() {
        let ids = IdentityHeaders::default();
        let mut headers = HeaderMap::new();
        for name in [
            "x-account-id",
            "X_Account_Id",
            "x.account.id",
            "X-TOKEN-ID",
            "x_token.id",
            "X-Token-Scopes",
            "x_token_scopes",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("evil"),
            );
        }
        headers.append("x-account-id", HeaderValue::from_static("evil2"));
        headers.insert("x-account", HeaderValue::from_static("kept"));
        let auth = AuthContext {
            account_id: "acme".into(),
            token_id: TokenId::from_uuid(uuid::Uuid::nil()),
            scopes: Scopes::new(["orders:read", "admin:*"]).unwrap(),
            meta: Default::default(),
        };
        ids.apply(&mut headers, Some(&auth));
        let values: Vec<_> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert!(
            values.iter().all(|(_, v)| !v.starts_with("evil")),
            "{values:?}"
        );
        assert_eq!(headers["x-account-id"], "acme");
        assert_eq!(
            headers["x-token-id"],
            "00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(headers["x-token-scopes"], "admin:* orders:read");
        assert_eq!(headers["x-account"], "kept");
        assert_eq!(headers.len(), 4);

        // No scopes: no header (and the forged ones are gone).
        let mut headers = HeaderMap::new();
        headers.insert("x-token-scopes", HeaderValue::from_static("*"));
        let auth = AuthContext {
            scopes: Scopes::default(),
            ..auth
        };
        ids.apply(&mut headers, Some(&auth));
        assert!(!headers.contains_key("x-token-scopes"));
    }
}
