//! Where a request's token and client IP come from.
//!
//! Token sources (docs/reference/http-contract.md, "Token sources"): `Authorization:
//! Bearer` always; `X-API-Key` and a query parameter when configured. A
//! request that carries a token in more than one place, or two
//! `Authorization` headers, is ambiguous and refused with 400 (RFC 6750 §2).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::AUTHORIZATION;
use http::{HeaderMap, Uri};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::Rejection;
use crate::settings::{InvalidConfig, invalid};

/// `[sources]`: `Authorization: Bearer <token>` is always read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// Also read the token from the `X-API-Key` header.
    pub api_key_header: bool,
    /// Also read the token from this query parameter (e.g. `"api_key"`); it is
    /// removed from the URI the service sees. Empty: off.
    pub query_param: String,
}

impl SourcesConfig {
    /// The query parameter's name is short and plain.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let q = &self.query_param;
        if q.len() > 64
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "sources.query_param",
                "must be empty (off) or up to 64 of A-Z a-z 0-9 - _ .",
            ));
        }
        Ok(())
    }
}

/// `[client_ip]`: which peers may say who the client is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientIpConfig {
    /// Peers whose `X-Forwarded-For` entries are believed (CIDR blocks). The
    /// client IP is the nearest address not in this list.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: ["127.0.0.0/8", "::1/128"]
                .iter()
                .map(|cidr| cidr.parse().expect("a valid CIDR literal"))
                .collect(),
        }
    }
}

const API_KEY_HEADER: &str = "x-api-key";
const MULTIPLE: Rejection = Rejection::InvalidRequest("The request carries more than one token.");

/// What a request presented.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No token in any enabled source.
    Nothing,
    /// A token (not yet checked in any way).
    Token(Cow<'a, str>),
    /// Something in a token source that cannot be a token (not visible
    /// ASCII, or `Bearer` with nothing after it).
    Garbage,
}

/// The enabled token sources.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    api_key_header: bool,
    query_param: Option<String>,
}

impl Sources {
    pub(crate) fn new(config: &SourcesConfig) -> Self {
        Self {
            api_key_header: config.api_key_header,
            query_param: (!config.query_param.is_empty()).then(|| config.query_param.clone()),
        }
    }

    pub(crate) fn api_key_header(&self) -> bool {
        self.api_key_header
    }

    pub(crate) fn query_param(&self) -> Option<&str> {
        self.query_param.as_deref()
    }

    /// The one token the request carries, if any.
    pub(crate) fn extract<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
    ) -> Result<Presented<'a>, Rejection> {
        let mut found: Vec<Presented<'a>> = Vec::new();
        let mut authorization = headers.get_all(AUTHORIZATION).iter();
        if let Some(value) = authorization.next() {
            if authorization.next().is_some() {
                return Err(MULTIPLE);
            }
            if let Some(presented) = bearer(value.as_bytes()) {
                found.push(presented);
            }
        }
        if self.api_key_header {
            let mut values = headers.get_all(API_KEY_HEADER).iter();
            if let Some(value) = values.next() {
                if values.next().is_some() {
                    return Err(MULTIPLE);
                }
                found.push(match value.to_str() {
                    Ok(v) if !v.trim().is_empty() => Presented::Token(Cow::Borrowed(v.trim())),
                    _ => Presented::Garbage,
                });
            }
        }
        if let Some(name) = &self.query_param {
            let mut values = query_values(uri, name);
            if let Some(value) = values.next() {
                if values.next().is_some() {
                    return Err(MULTIPLE);
                }
                found.push(value.map_or(Presented::Garbage, |v| Presented::Token(Cow::Owned(v))));
            }
        }
        match found.len() {
            0 => Ok(Presented::Nothing),
            1 => Ok(found.remove(0)),
            _ => Err(MULTIPLE),
        }
    }
}

/// `Bearer <token>`, scheme case-insensitive, one space or more. Another
/// scheme (`Basic …`) is not a bearer token: `None`.
fn bearer(value: &[u8]) -> Option<Presented<'_>> {
    let Ok(value) = std::str::from_utf8(value) else {
        return Some(Presented::Garbage);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ').trim_end();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(Presented::Garbage);
    }
    Some(Presented::Token(Cow::Borrowed(token)))
}

/// The values of `name` in the query, percent-decoded (`None`: undecodable).
fn query_values<'a>(uri: &'a Uri, name: &'a str) -> impl Iterator<Item = Option<String>> + 'a {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            key_names(key, name).then(|| decode_query_value(value))
        })
}

/// Whether a query key is `name` once decoded (`api%5Fkey` is `api_key`, as
/// the service's framework would read it).
fn key_names(key: &str, name: &str) -> bool {
    key == name || (key.contains('%') && decode_query_value(key).is_some_and(|k| k == name))
}

/// A query value decoded as forms encode it: `+` is a space (a literal `+`
/// arrives as `%2B`), then `%XX` escapes.
fn decode_query_value(value: &str) -> Option<String> {
    crate::wire::percent_decode(&value.replace('+', " "))
}

/// The URI without any `name=…` query pair, so the service never sees the
/// token. Other pairs keep their order and encoding.
pub(crate) fn remove_query_param(uri: &Uri, name: &str) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !key_names(pair.split_once('=').map_or(*pair, |(k, _)| k), name))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Who the client is, for rate limits: the socket peer, or, when the peer is
/// a trusted proxy, the nearest `X-Forwarded-For` entry that is not.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    pub(crate) fn new(config: &ClientIpConfig) -> Self {
        Self {
            trusted: config.trusted_proxies.clone(),
        }
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// `None` when the peer is unknown (an in-process service that was not
    /// told): then no per-IP limit applies, rather than one shared by all.
    pub(crate) fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        if !self.is_trusted(client) {
            return Some(client);
        }
        // Walk the chain from the nearest hop outwards: each trusted proxy
        // vouches for the entry before it.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = forwarded_ip(entry) else {
                break;
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: `ip`, or `ip:port` / `[v6]:port` / `[v6]`
/// as some load balancers write it (the port is not part of who the client
/// is). Anything else is `None`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let v6 = entry.strip_prefix('[')?.strip_suffix(']')?;
            v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })
}

/// `::ffff:1.2.3.4` is 1.2.3.4: one client, one rate-limit key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
