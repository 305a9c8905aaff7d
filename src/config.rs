//! Configuration: one TOML file, then `TOKENGATE_<SECTION>_<KEY>` environment
//! variables, then command-line flags (applied by the caller), then checks.
//!
//! Parsing is strict: an unknown key or a value of the wrong type stops
//! start-up with a one-line message naming the key. config/tokengate.toml is
//! the commented reference.
//!
//! ```
//! use tokengate::Config;
//!
//! let config = Config::from_toml_str("[security]\nbcrypt_cost = 12\n").unwrap();
//! assert_eq!(config.security.bcrypt_cost, 12);
//! assert_eq!(config.redis.key_prefix, "tokengate:");
//! assert!(Config::from_toml_str("[security]\nbcrypt_cots = 12\n").is_err());
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::service::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};

/// Key prefix used unless configured otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "tokengate:";
/// Longest key prefix accepted.
pub const MAX_KEY_PREFIX_LEN: usize = 64;
/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "TOKENGATE_";
/// `TOKENGATE_*` variables that are not config keys: the config file's path,
/// and the admin key (a secret, kept out of files on purpose).
pub const NOT_CONFIG_KEYS: [&str; 2] = ["TOKENGATE_CONFIG", "TOKENGATE_ADMIN_KEY"];

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[redis]`: the production token store.
    pub redis: RedisConfig,
    /// `[security]`: hashing.
    pub security: SecurityConfig,
    /// `[cache]`: the validation cache.
    pub cache: CacheConfig,
    /// `[rate_limit]`: per-token and per-client-IP limits.
    pub rate_limit: RateLimitConfig,
    /// `[headers]`: names of the identity headers.
    pub headers: HeadersConfig,
    /// `[last_accessed]`: batching of last-accessed writes.
    pub last_accessed: LastAccessedConfig,
    /// `[sources]`: where tokens are read from, besides `Authorization: Bearer`.
    pub sources: SourcesConfig,
    /// `[client_ip]`: which peers may say who the client is.
    pub client_ip: ClientIpConfig,
    /// `[[public_routes]]`: requests that skip authentication.
    pub public_routes: Vec<PublicRoute>,
    /// `[proxy]`: the sidecar reverse proxy (`tokengate serve`).
    pub proxy: ProxyConfig,
    /// `[forward_auth]`: the forward-auth endpoint (`tokengate serve`).
    pub forward_auth: ForwardAuthConfig,
    /// `[admin]`: the admin API, health and metrics (`tokengate serve`).
    pub admin: AdminConfig,
    /// `[server]`: limits and timeouts shared by every listener.
    pub server: ServerConfig,
    /// `[log]`: log format and level.
    pub log: LogConfig,
}

/// `[proxy]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the proxy listens (`"127.0.0.1:8080"`); unset: no proxy.
    pub listen: Option<SocketAddr>,
    /// The API behind it: `http://host:port`.
    pub upstream: Option<String>,
    /// How long the upstream has to answer (response headers) once the
    /// request, body included, has been sent to it; then 504. While a body
    /// streams, the upstream not reading any of it for this long is 504 too.
    #[serde(with = "duration")]
    pub upstream_timeout: Duration,
    /// A client that sends no byte of its request body for this long gets
    /// 408 (nginx's `client_body_timeout`).
    #[serde(with = "duration")]
    pub client_body_timeout: Duration,
    /// Pass the client's `Authorization` header on to the upstream.
    pub forward_authorization: bool,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    #[serde(with = "duration")]
    pub tunnel_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            upstream_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(60),
            forward_authorization: false,
            tunnel_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// `[forward_auth]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Where the forward-auth endpoint listens; unset: off.
    pub listen: Option<SocketAddr>,
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; unset: off.
    pub listen: Option<SocketAddr>,
    /// Serve the token routes without `TOKENGATE_ADMIN_KEY`, allowed only on
    /// a loopback address (for trying tokengate on a laptop).
    pub allow_unauthenticated_loopback: bool,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM / SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// A client must send its request headers within this (slowloris).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Most headers in a request; more gets 431.
    pub max_headers: usize,
    /// Most bytes of request line and headers; more gets 431.
    pub max_header_bytes: usize,
    /// Most open client connections per listener; past it, new connections
    /// wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// An HTTP/2 connection with no open stream for this long is closed
    /// (GOAWAY). HTTP/1.1 connections between requests are closed by
    /// `header_read_timeout`, which also bounds each HTTP/2 stream's headers.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Most concurrent streams (requests) per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Threads serving client connections, each with its own event loop
    /// (thread per core, as nginx's `worker_processes`); unset: one per CPU.
    pub workers: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            http2_max_concurrent_streams: 128,
            workers: None,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"human"` or `"json"` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter: `"info"`, `"debug"`, `"tokengate=debug,info"`.
    /// `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a valid token is trusted without asking the store: the
    /// longest a revocation can go unnoticed by a replica that missed the
    /// pub/sub message. Never past the token's own expiry.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// How long a bad token (unknown, wrong secret, revoked, expired) is
    /// remembered, so repeats cost neither a store read nor bcrypt.
    #[serde(with = "duration")]
    pub negative_ttl: Duration,
    /// How long a valid token is trusted while the revocation channel
    /// (Redis pub/sub) is down or not answering its pings: revocations made
    /// by other processes cannot arrive then. Capped by `ttl`.
    #[serde(with = "duration")]
    pub degraded_ttl: Duration,
    /// Most entries kept (positive and negative together).
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            degraded_ttl: Duration::from_secs(5),
            max_entries: 100_000,
        }
    }
}

/// `[rate_limit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests each token may make per `per_token_period` (0: no limit).
    pub per_token_requests: u32,
    /// The period of `per_token_requests`.
    #[serde(with = "duration")]
    pub per_token_period: Duration,
    /// Requests a token may make at once after being idle.
    pub per_token_burst: u32,
    /// Failed authentications a client IP may make per `failed_auth_period`
    /// before its requests get 429 (0: no limit).
    pub failed_auth_per_ip: u32,
    /// The period of `failed_auth_per_ip`.
    #[serde(with = "duration")]
    pub failed_auth_period: Duration,
    /// IPv6 clients share one failure bucket per network of this prefix
    /// length (64: one per /64, what one host usually holds; 128: per
    /// address). IPv4 clients are counted per address.
    pub failed_auth_ipv6_prefix: u8,
    /// Most tokens and IPs tracked by each limiter; idle ones are dropped.
    pub max_keys: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_token_requests: 100,
            per_token_period: Duration::from_secs(1),
            per_token_burst: 200,
            failed_auth_per_ip: 10,
            failed_auth_period: Duration::from_secs(60),
            failed_auth_ipv6_prefix: 64,
            max_keys: 100_000,
        }
    }
}

/// `[headers]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    /// Carries the authenticated account id to the service.
    pub account_id: String,
    /// Carries the authenticated token id to the service.
    pub token_id: String,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        Self {
            account_id: "X-Account-Id".to_owned(),
            token_id: "X-Token-Id".to_owned(),
        }
    }
}

/// `[last_accessed]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LastAccessedConfig {
    /// How often pending last-accessed times are written, in one round trip.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Flush early once this many token ids wait; past twice this, new ids
    /// are dropped until a flush succeeds (memory stays bounded while the
    /// store is down).
    pub max_pending: usize,
}

impl Default for LastAccessedConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(10),
            max_pending: 10_000,
        }
    }
}

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

/// `[client_ip]`
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

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`. Unset: the embedded in-memory
    /// store (single process, tokens lost on restart).
    pub url: Option<String>,
    /// Prepended to every key and channel name, so several deployments can
    /// share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// bcrypt cost for new tokens, 4–15. Each step doubles the time of every
    /// hash and of every cache-miss verification.
    pub bcrypt_cost: u32,
    /// bcrypt verifications run at once (0: the number of CPUs). More cannot
    /// go faster, only starve the rest of the process.
    pub bcrypt_concurrency: usize,
    /// Cache misses that may wait for a bcrypt slot; past this they get 503
    /// at once instead of queueing without bound.
    pub bcrypt_queue: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            bcrypt_concurrency: 0,
            bcrypt_queue: 1_000,
        }
    }
}

/// Why the configuration cannot be used. Whose fault: the operator's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a wrong type.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and the key.
        message: String,
    },
    /// An environment variable names an unknown key or has a wrong value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("config key {key}: {message}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The configuration from `path` (or the defaults when `None`), with the
    /// process environment's `TOKENGATE_*` overrides, checked.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            None => Self::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                parse_toml(&text).map_err(|message| ConfigError::File {
                    path: path.to_owned(),
                    message,
                })?
            }
        };
        let mut vars: Vec<_> = vars.into_iter().collect();
        vars.sort(); // apply in a fixed order, whatever the environment's
        for (var, value) in vars {
            config.apply_env(&var, &value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks TOML text, without environment overrides.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = parse_toml(text).map_err(|message| ConfigError::File {
            path: PathBuf::from("<string>"),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `TOKENGATE_<SECTION>_<KEY>=value` if `var` names a section of
    /// this file; other variables (`TOKENGATE_CONFIG`, …) are not config keys
    /// and are left alone. An empty value counts as unset.
    fn apply_env(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        if value.is_empty() || NOT_CONFIG_KEYS.contains(&var) {
            return Ok(());
        }
        let env_error = |message: String| ConfigError::Env {
            var: var.to_owned(),
            message,
        };
        let mut table = toml::Table::try_from(&*self).map_err(|e| env_error(e.to_string()))?;
        let Some((section, key)) = table.keys().find_map(|section| {
            let upper = section.to_ascii_uppercase();
            let key = rest.strip_prefix(&upper)?.strip_prefix('_')?;
            Some((section.clone(), key.to_ascii_lowercase()))
        }) else {
            return Ok(());
        };
        if let Some(toml::Value::Table(entries)) = table.get_mut(&section) {
            // A list key takes a comma-separated value.
            let parsed = match entries.get(&key) {
                Some(toml::Value::Array(_)) => toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(env_value)
                        .collect(),
                ),
                _ => env_value(value),
            };
            entries.insert(key, parsed);
        }
        *self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| env_error(e.message().to_owned()))?;
        Ok(())
    }

    /// Range and shape checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cost = self.security.bcrypt_cost;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(ConfigError::Invalid {
                key: "security.bcrypt_cost",
                message: format!("{cost} is outside {MIN_BCRYPT_COST}–{MAX_BCRYPT_COST}"),
            });
        }
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty()
            || prefix.len() > MAX_KEY_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::Invalid {
                key: "redis.key_prefix",
                message: format!(
                    "must be 1–{MAX_KEY_PREFIX_LEN} printable ASCII characters without spaces"
                ),
            });
        }
        if let Some(url) = &self.redis.url {
            check_redis_url(url).map_err(|message| ConfigError::Invalid {
                key: "redis.url",
                message,
            })?;
        }
        let s = &self.security;
        in_range(
            "security.bcrypt_concurrency",
            s.bcrypt_concurrency,
            0,
            1_024,
        )?;
        in_range("security.bcrypt_queue", s.bcrypt_queue, 0, 1_000_000)?;

        let c = &self.cache;
        within(
            "cache.ttl",
            c.ttl,
            Duration::from_secs(1),
            Duration::from_secs(3_600),
        )?;
        within("cache.negative_ttl", c.negative_ttl, Duration::ZERO, c.ttl)?;
        within(
            "cache.degraded_ttl",
            c.degraded_ttl,
            Duration::ZERO,
            Duration::from_secs(3_600),
        )?;
        in_range("cache.max_entries", c.max_entries, 1, 100_000_000)?;

        let r = &self.rate_limit;
        let day = Duration::from_secs(86_400);
        in_range(
            "rate_limit.per_token_requests",
            r.per_token_requests,
            0,
            1_000_000,
        )?;
        within(
            "rate_limit.per_token_period",
            r.per_token_period,
            Duration::from_millis(1),
            day,
        )?;
        in_range(
            "rate_limit.per_token_burst",
            r.per_token_burst,
            1,
            10_000_000,
        )?;
        in_range(
            "rate_limit.failed_auth_per_ip",
            r.failed_auth_per_ip,
            0,
            1_000_000,
        )?;
        within(
            "rate_limit.failed_auth_period",
            r.failed_auth_period,
            Duration::from_millis(1),
            day,
        )?;
        in_range(
            "rate_limit.failed_auth_ipv6_prefix",
            r.failed_auth_ipv6_prefix,
            32,
            128,
        )?;
        in_range("rate_limit.max_keys", r.max_keys, 1, 100_000_000)?;

        for (key, name) in [
            ("headers.account_id", &self.headers.account_id),
            ("headers.token_id", &self.headers.token_id),
        ] {
            check_identity_header(name).map_err(|message| ConfigError::Invalid { key, message })?;
        }
        if crate::auth::fold_header_name(&self.headers.account_id)
            == crate::auth::fold_header_name(&self.headers.token_id)
        {
            return Err(ConfigError::Invalid {
                key: "headers.token_id",
                message: "must differ from headers.account_id".to_owned(),
            });
        }

        let l = &self.last_accessed;
        within(
            "last_accessed.flush_interval",
            l.flush_interval,
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        )?;
        in_range("last_accessed.max_pending", l.max_pending, 1, 10_000_000)?;

        let q = &self.sources.query_param;
        if q.len() > 64
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::Invalid {
                key: "sources.query_param",
                message: "must be empty (off) or up to 64 of A-Z a-z 0-9 - _ .".to_owned(),
            });
        }
        let p = &self.proxy;
        if p.listen.is_some() && p.upstream.is_none() {
            return Err(ConfigError::Invalid {
                key: "proxy.upstream",
                message: "is required when proxy.listen is set".to_owned(),
            });
        }
        if let Some(upstream) = &p.upstream {
            check_upstream(upstream).map_err(|message| ConfigError::Invalid {
                key: "proxy.upstream",
                message,
            })?;
        }
        within(
            "proxy.upstream_timeout",
            p.upstream_timeout,
            Duration::from_millis(10),
            Duration::from_secs(3_600),
        )?;
        within(
            "proxy.client_body_timeout",
            p.client_body_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        )?;
        within(
            "proxy.tunnel_idle_timeout",
            p.tunnel_idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        let srv = &self.server;
        within(
            "server.shutdown_grace",
            srv.shutdown_grace,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        within(
            "server.header_read_timeout",
            srv.header_read_timeout,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?;
        in_range("server.max_headers", srv.max_headers, 1, 1_000)?;
        in_range(
            "server.max_header_bytes",
            srv.max_header_bytes,
            8_192,
            1_048_576,
        )?;
        in_range("server.max_connections", srv.max_connections, 1, 1_000_000)?;
        within(
            "server.idle_timeout",
            srv.idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        in_range(
            "server.http2_max_concurrent_streams",
            srv.http2_max_concurrent_streams,
            1,
            10_000,
        )?;
        if let Some(workers) = srv.workers {
            in_range("server.workers", workers, 1, 1_024)?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!(
                    "{:?} is not a log filter like \"info\" or \"tokengate=debug\"",
                    self.log.level
                ),
            });
        }
        if self.admin.allow_unauthenticated_loopback
            && self.admin.listen.is_some_and(|a| !a.ip().is_loopback())
        {
            return Err(ConfigError::Invalid {
                key: "admin.allow_unauthenticated_loopback",
                message: "only allowed when admin.listen is a loopback address".to_owned(),
            });
        }
        for route in &self.public_routes {
            let invalid = |message: String| ConfigError::Invalid {
                key: "public_routes.path_prefix",
                message,
            };
            if !route.path_prefix.starts_with('/')
                || route.path_prefix.contains('%')
                || crate::auth::normalize_path(&route.path_prefix).is_none()
            {
                return Err(invalid(format!(
                    "{:?} must be an absolute, normalized path (no //, . or .. segments, no %-escapes)",
                    route.path_prefix
                )));
            }
            for method in &route.methods {
                Method::from_bytes(method.as_bytes()).map_err(|_| ConfigError::Invalid {
                    key: "public_routes.methods",
                    message: format!("{method:?} is not an HTTP method"),
                })?;
            }
        }
        Ok(())
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            message: format!("{value} is outside {min}–{max}"),
        });
    }
    Ok(())
}

fn within(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            message: format!(
                "{} is outside {}–{}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(())
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

/// Serde for durations as humantime strings: `"30s"`, `"5m"`, `"1h 30m"`,
/// `"250ms"`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"30s\" or \"5m\": {e}"
            ))
        })
    }
}

/// An upstream is `http://host[:port]`, with no path, query or credentials.
fn check_upstream(upstream: &str) -> Result<(), String> {
    let uri: http::Uri = upstream
        .parse()
        .map_err(|e| format!("{upstream:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{upstream:?}: only http:// upstreams are supported"
        ));
    }
    match uri.authority() {
        Some(a) if !a.as_str().contains('@') => {}
        _ => return Err(format!("{upstream:?} needs a host, and no credentials")),
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(format!(
            "{upstream:?}: no path or query (requests keep their own path)"
        ));
    }
    Ok(())
}

/// Checks a Redis URL without connecting.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("not a usable Redis URL ({}): {e}", redact_url(url)))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

/// Deserializes TOML text, turning the error into one line that names the
/// line and the key: `line 2, key security.bcrypt_cost: invalid type …`.
fn parse_toml(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => format!("{}: {message}", locate(text, span.start)),
            None => message,
        }
    })
}

/// `line N`, plus `key section.key` when that line assigns a key.
fn locate(text: &str, offset: usize) -> String {
    let line_no = text[..offset.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let section = text
        .lines()
        .take(line_no)
        .filter_map(|l| l.trim().strip_prefix('[')?.split(']').next())
        .last();
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            let key = key.trim();
            match section {
                Some(section) => format!("line {line_no}, key {section}.{key}"),
                None => format!("line {line_no}, key {key}"),
            }
        }
        _ => format!("line {line_no}"),
    }
}

/// An environment value as TOML would read it: a number or boolean when it
/// is one, else the string as given (no quoting needed).
fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => match table.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("tokengate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", crc32fast::hash(text.as_bytes())));
        std::fs::write(&path, text).unwrap();
        let result = Config::load_with_env(Some(&path), env(vars));
        std::fs::remove_file(&path).unwrap();
        result
    }

    #[test]
    fn defaults_without_a_file() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.redis.url, None);
        assert_eq!(config.security.bcrypt_cost, 10);
    }

    #[test]
    fn the_shipped_examples_parse() {
        for name in ["tokengate.toml", "quickstart.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name);
            Config::load_with_env(Some(&path), env(&[])).unwrap();
        }
        // The reference file sets every key it shows to its default.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokengate.toml");
        let reference = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(reference, Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = load("[redis]\nurll = \"redis://x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, key redis.urll"), "{err}");
        let err = load("[reddis]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("reddis"), "{err}");
        let err = load("[security]\nbcrypt_cost = \"ten\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, key security.bcrypt_cost"), "{err}");
        let err = load("[security]\nbcrypt_cost = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.bcrypt_cost"), "{err}");
        let err = load("[redis]\nkey_prefix = \"a b\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.key_prefix"), "{err}");
        let err = load("[redis]\nurl = \"http://nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.url"), "{err}");
        let err = load("not toml at all", &[]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let text = "[redis]\nurl = \"redis://file:6379\"\n[security]\nbcrypt_cost = 11\n";
        let config = load(
            text,
            &[
                ("TOKENGATE_REDIS_URL", "redis://env:6379"),
                ("TOKENGATE_SECURITY_BCRYPT_COST", "12"),
                ("TOKENGATE_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(config.redis.url.as_deref(), Some("redis://env:6379"));
        assert_eq!(config.security.bcrypt_cost, 12);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let err = load("", &[("TOKENGATE_REDIS_PASSWORD", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKENGATE_REDIS_PASSWORD"), "{err}");
        let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "lots")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKENGATE_SECURITY_BCRYPT_COST"), "{err}");
        let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "99")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("security.bcrypt_cost"), "{err}");
    }

    #[test]
    fn durations_lists_and_ranges() {
        let config = load(
            "[cache]\nttl = \"1m\"\nnegative_ttl = \"500ms\"\n",
            &[(
                "TOKENGATE_CLIENT_IP_TRUSTED_PROXIES",
                "10.0.0.0/8, 192.168.0.0/16",
            )],
        )
        .unwrap();
        assert_eq!(config.cache.ttl, Duration::from_secs(60));
        assert_eq!(config.cache.negative_ttl, Duration::from_millis(500));
        let nets: Vec<String> = config
            .client_ip
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.0.0/16"]);

        for (text, key) in [
            ("[cache]\nttl = \"soon\"\n", "line 2, key cache.ttl"),
            ("[cache]\nttl = \"2h\"\n", "cache.ttl"),
            ("[cache]\nnegative_ttl = \"1m\"\n", "cache.negative_ttl"),
            ("[cache]\ndegraded_ttl = \"2h\"\n", "cache.degraded_ttl"),
            (
                "[rate_limit]\nfailed_auth_ipv6_prefix = 16\n",
                "rate_limit.failed_auth_ipv6_prefix",
            ),
            ("[server]\nidle_timeout = \"1ms\"\n", "server.idle_timeout"),
            (
                "[server]\nhttp2_max_concurrent_streams = 0\n",
                "server.http2_max_concurrent_streams",
            ),
            (
                "[proxy]\nclient_body_timeout = \"0s\"\n",
                "proxy.client_body_timeout",
            ),
            (
                "[rate_limit]\nper_token_burst = 0\n",
                "rate_limit.per_token_burst",
            ),
            (
                "[headers]\naccount_id = \"Authorization\"\n",
                "headers.account_id",
            ),
            (
                "[headers]\ntoken_id = \"x_account.id\"\n",
                "headers.token_id",
            ),
            ("[sources]\nquery_param = \"a b\"\n", "sources.query_param"),
            (
                "[client_ip]\ntrusted_proxies = [\"nope\"]\n",
                "client_ip.trusted_proxies",
            ),
            (
                "[[public_routes]]\npath_prefix = \"/a/../b\"\n",
                "public_routes.path_prefix",
            ),
            (
                "[[public_routes]]\npath_prefix = \"/a\"\nmethods = [\"G T\"]\n",
                "public_routes.methods",
            ),
            (
                "[last_accessed]\nflush_interval = \"1ms\"\n",
                "last_accessed.flush_interval",
            ),
            ("[server]\nworkers = 0\n", "server.workers"),
            (
                "[proxy]\ntunnel_idle_timeout = \"2d\"\n",
                "proxy.tunnel_idle_timeout",
            ),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host"),
            "redis://user:***@host"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }
}
