//! `[redis]`: where the Redis store connects, and how its URLs are
//! checked and shown (docs/guide/configuration.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{cluster, connection};
use crate::settings::{InvalidConfig, invalid};

/// Key prefix used unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "tokengate:";
/// Longest key prefix accepted.
pub const MAX_KEY_PREFIX_LEN: usize = 64;

/// `[redis]`: the production token store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS,
    /// or `redis+sentinel://[user:password@]host:26379[,host:26379…]/master[/db]`
    /// to follow a master through Redis Sentinel. Unset: the embedded
    /// in-memory store (single process, tokens lost on restart).
    pub url: Option<String>,
    /// Prepended to every key and channel name, so several deployments can
    /// share one Redis.
    pub key_prefix: String,
    /// With `rediss://`: the CA certificate (PEM) Redis's certificate must
    /// chain to. Unset: the system's trusted roots.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: a client certificate (PEM), for a Redis with
    /// `tls-auth-clients yes`; needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Without a URL, `tokengate serve` keeps tokens in memory; on a
    /// listener other than loopback it asks for this to be `true` first,
    /// so a lost URL never becomes a memory store silently.
    pub embedded: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            embedded: false,
        }
    }
}

impl RedisConfig {
    /// The prefix is short printable ASCII; the URL parses (nothing is
    /// connected to).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_KEY_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "redis.key_prefix",
                format!("must be 1–{MAX_KEY_PREFIX_LEN} printable ASCII characters without spaces"),
            ));
        }
        if let Some(url) = &self.url {
            check_redis_url(url).map_err(|message| invalid("redis.url", message))?;
            if cluster::is_cluster_url(url) && prefix.contains(['{', '}']) {
                return Err(invalid(
                    "redis.key_prefix",
                    "on a Redis Cluster it is a hash tag: no `{` or `}` in it",
                ));
            }
        }
        if self.embedded && self.url.is_some() {
            return Err(invalid(
                "redis.embedded",
                "true asks for the in-memory store, but a Redis URL is set too: keep one",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "redis.tls_key_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        let files = [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ];
        for (key, file) in files {
            let Some(file) = file else { continue };
            if !self
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
            {
                return Err(invalid(key, "only with a rediss:// url"));
            }
            if !cfg!(feature = "redis-tls") {
                return Err(invalid(
                    key,
                    "this build has no TLS (cargo feature redis-tls)",
                ));
            }
            std::fs::metadata(file)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", file.display())))?;
        }
        Ok(())
    }
}

/// Checks a Redis URL without connecting.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if cluster::is_cluster_url(url) {
        return cluster::ClusterUrl::parse(url)
            .map(drop)
            .map_err(|e| format!("not a usable Redis Cluster URL ({}): {e}", redact_url(url)));
    }
    if connection::is_sentinel_url(url) {
        return connection::SentinelUrl::parse(url)
            .map(drop)
            .map_err(|e| format!("not a usable Sentinel URL ({}): {e}", redact_url(url)));
    }
    ::redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a usable Redis URL ({}): {e}", redact_url(url)))
}

/// The URL with any password replaced by `***`, for messages and logs:
/// in the credentials (`redis://`, `rediss://`, `redis+sentinel://`) and in
/// a `pass=` query parameter (`redis+unix://`, `unix://`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => rest.to_owned(),
    };
    let Some((path, query)) = rest.split_once('?') else {
        return format!("{scheme}://{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == "pass" || key == "password" => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}://{path}?{}", query.join("&"))
}
