//! `tokengate serve`, top-down: open the store, build the service and the
//! one Authenticator, the metrics and the front doors the config enables,
//! bind every listener, start the workers, serve until told to stop, drain,
//! and write the pending last-accessed times.
//!
//! The layers of a request, outermost first, and why each is there:
//! - the worker's connection (`workers`): HTTP/1.1 or HTTP/2, its limits
//!   and its graceful end;
//! - the listener's front door: proxy, forward-auth or admin;
//! - the Authenticator shared by the proxy and forward-auth, so a token
//!   cached by one is cached for the other;
//! - a store wrapper that times every call (for `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::auth::{AuthConfig, Authenticator};
use crate::metrics::{Metrics, StoreLatency, TimedStore};
use crate::proxy::Proxy;
use crate::service::{SecurityConfig, TokenService};
use crate::settings::InvalidConfig;
use crate::store::{self, RedisConfig, StoreError, TokenStore, redact_url};

mod http2;
mod workers;

pub use self::workers::ServerConfig;
use self::workers::{Door, Workers};
pub use crate::admin::{AdminConfig, AdminKey};
pub use crate::forward_auth::ForwardAuthConfig;
pub use crate::proxy::{ProxyConfig, Upstream};

/// What `serve` runs on: every section of the config file but `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeConfig {
    /// `[redis]`: the token store.
    pub redis: RedisConfig,
    /// `[security]`: hashing.
    pub security: SecurityConfig,
    /// The Authenticator's sections (`[cache]`, `[rate_limit]`, …).
    pub auth: AuthConfig,
    /// `[proxy]`: the sidecar reverse proxy.
    pub proxy: ProxyConfig,
    /// `[forward_auth]`: the forward-auth endpoint.
    pub forward_auth: ForwardAuthConfig,
    /// `[admin]`: the admin API, health and metrics (and the admin key).
    pub admin: AdminConfig,
    /// `[server]`: limits and timeouts shared by every listener.
    pub server: ServerConfig,
}

impl ServeConfig {
    /// Checks every section.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.security.validate()?;
        self.redis.validate()?;
        self.check_store_is_chosen()?;
        self.auth.validate()?;
        self.proxy.validate()?;
        self.server.validate()?;
        self.admin.validate()
    }
}

impl ServeConfig {
    /// Every listener the config enables, with the key that names it.
    fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> {
        [
            ("proxy.listen", self.proxy.listen),
            ("forward_auth.listen", self.forward_auth.listen),
            ("admin.listen", self.admin.listen),
        ]
        .into_iter()
        .filter_map(|(key, addr)| Some((key, addr?)))
    }

    /// No Redis URL from any source means the in-memory store. On
    /// loopback (a laptop, the quick start) that is the friendly default;
    /// anywhere else it is most likely a URL that got lost (a typo in a
    /// variable name, a missing Secret), and every token would vanish on
    /// the next restart: ask for `[redis] embedded = true` instead.
    fn check_store_is_chosen(&self) -> Result<(), InvalidConfig> {
        if self.redis.url.is_some() || self.redis.embedded {
            return Ok(());
        }
        match self.listeners().find(|(_, addr)| !addr.ip().is_loopback()) {
            Some((key, addr)) => Err(crate::settings::invalid(
                "redis.url",
                format!(
                    "no Redis URL is set (TOKENGATE_REDIS_URL or [redis] url) and {key} is \
                     {addr}, not a loopback address: tokens would live in this process's memory \
                     and vanish when it stops. Set the URL, or [redis] embedded = true \
                     (TOKENGATE_REDIS_EMBEDDED=true) to use the in-memory store on purpose"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// The token store did not answer.
    #[error("cannot connect to Redis at {url}: {source}")]
    Store {
        /// The store's URL, password redacted.
        url: String,
        /// Why.
        source: StoreError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {address} ({key}): {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The config key that names it (`[proxy] listen`).
        key: &'static str,
        /// Why (in use, not permitted, …).
        source: std::io::Error,
    },
    /// No listener is configured.
    #[error("nothing to serve: set [proxy] listen, [forward_auth] listen or [admin] listen")]
    NothingToServe,
    /// A bound listener cannot say its address.
    #[error("{0}")]
    Listener(std::io::Error),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    WorkerThread(std::io::Error),
    /// A worker thread could not build its runtime.
    #[error("cannot start a worker's runtime: {0}")]
    WorkerRuntime(std::io::Error),
    /// A worker thread ended before it was ready.
    #[error("a worker thread stopped during start-up")]
    WorkerStopped,
}

/// Runs the front doors `config` enables until SIGTERM or SIGINT, then
/// stops accepting, lets in-flight requests finish (up to
/// `[server] shutdown_grace`), writes pending last-accessed times and
/// returns.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    serve_until(config, shutdown_signal()).await
}

/// As [`serve`], stopping when `stop` completes instead of on a signal.
pub async fn serve_until(
    config: ServeConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    config.validate()?;
    let latency = StoreLatency::default();
    let store = store::open(&config.redis)
        .await
        .map_err(|source| ServeError::Store {
            url: redact_url(config.redis.url.as_deref().unwrap_or_default()),
            source,
        })?;
    let kind = store.kind();
    let store: Arc<dyn TokenStore> = Arc::new(TimedStore::new(store, latency.clone()));
    let service = TokenService::from_config(store, &config.security);
    let auth = Authenticator::new(service.clone(), &config.auth)?;
    let metrics = Arc::new(Metrics::new(auth.clone(), latency));

    // Bind everything before serving anything: a port in use stops start-up.
    let mut doors = Vec::new();
    let upstream = config.proxy.upstream.as_ref();
    if let (Some(addr), Some(authority)) =
        (config.proxy.listen, upstream.and_then(|u| u.authority()))
    {
        let proxy = Proxy::new(auth.clone(), authority.clone(), &config.proxy);
        let listener = bind(addr, "[proxy] listen").await?;
        doors.push(("proxy", listener, Door::Proxy(Arc::new(proxy))));
    }
    if let Some(addr) = config.forward_auth.listen {
        let listener = bind(addr, "[forward_auth] listen").await?;
        doors.push(("forward_auth", listener, Door::ForwardAuth(auth.clone())));
    }
    if let Some(addr) = config.admin.listen {
        let admin = Admin::new(service.clone(), metrics.clone(), config.admin.key.as_ref());
        let listener = bind(addr, "[admin] listen").await?;
        doors.push(("admin", listener, Door::Admin(Arc::new(admin))));
    }
    if doors.is_empty() {
        return Err(ServeError::NothingToServe);
    }
    for (name, listener, _) in &doors {
        let address = listener.local_addr().map_err(ServeError::Listener)?;
        tracing::info!(front_door = name, %address, "listening");
    }
    if let Some(upstream) = upstream {
        tracing::info!(%upstream, "proxying to upstream");
    }

    let mut workers = Workers::start(&config.server).await?;
    for (_, listener, door) in doors {
        workers.accept(listener, door);
    }
    tracing::info!(store = kind, workers = workers.count(), "tokengate started");
    // Warnings about a running server, once it runs: a start-up error
    // comes alone.
    if let (Some(addr), None) = (config.admin.listen, &config.admin.key) {
        tracing::warn!(%addr, "the admin API needs no key: [admin] allow_unauthenticated_loopback is set");
    }
    if kind == "memory" {
        tracing::warn!(
            "using the embedded in-memory token store: single process only, \
             every token is lost when this process stops; set [redis] url \
             (or TOKENGATE_REDIS_URL) for production"
        );
    }

    stop.await;
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    workers.drain().await;
    // Before the workers' runtimes stop: a Redis connection re-established
    // after an outage may be driven by one of them.
    auth.shutdown().await;
    workers.release().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(address: SocketAddr, key: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            address,
            key,
            source,
        })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
