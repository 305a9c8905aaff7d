//! `tokengate serve`, top-down: open the store, build the service and the
//! one Authenticator, the metrics and the front doors the config enables,
//! bind every listener (reading its certificate, if it has one), start the
//! workers, serve until told to stop (re-reading certificates on SIGHUP or
//! when their files change), drain, and write the pending last-accessed
//! times.
//!
//! A listener gets TLS from two keys in its section, `tls_cert` and
//! `tls_key`, lent as a `crate::tls::ListenerTls` (with the section's key
//! names) to its `validate` and to `open` below, which reads the
//! certificate and binds the listener; the workers do the handshakes and
//! the reload task keeps the certificate current.
//!
//! The layers of a request, outermost first, and why each is there:
//! - the worker's connection (`workers`): TLS when the listener has a
//!   certificate (`crate::tls`), HTTP/1.1 or HTTP/2, its limits and its
//!   graceful end;
//! - the listener's front door: proxy, forward-auth or admin;
//! - the Authenticator shared by the proxy and forward-auth, so a token
//!   cached by one is cached for the other;
//! - a store wrapper that times every call (for `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{AuthConfig, Authenticator};
use crate::doors::admin::Admin;
use crate::doors::proxy::Proxy;
use crate::service::{SecurityConfig, TokenService};
use crate::settings::InvalidConfig;
use crate::store::{self, Observed, RedisConfig, StoreError, TokenStore, redact_url};
use crate::telemetry::access::{AccessLog, FLUSH_EVERY};
use crate::telemetry::log::{LogConfig, LogFormat};
use crate::telemetry::metrics::{Metrics, StoreLatency};
use crate::tls::{ListenerTls, Reload, ServerTls};

mod http2;
mod workers;

pub use self::workers::ServerConfig;
use self::workers::{Door, Front, Workers};
pub use crate::doors::admin::{AdminConfig, AdminKey};
pub use crate::doors::forward_auth::ForwardAuthConfig;
pub use crate::doors::proxy::{MethodOverride, ProxyConfig, Upstream};
use crate::telemetry::door::{DoorKind, Telemetry};
pub use crate::telemetry::metrics::MetricsConfig;

/// How often the listeners' certificate and key files are checked for a
/// change (SIGHUP reloads at once). A stat of two files: cheap enough to do
/// often, and a renewed certificate is rarely urgent to the second.
const TLS_POLL: Duration = Duration::from_secs(2);

/// What `serve` runs on: the config file's sections (of `[log]`, the
/// access log's keys).
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
    /// `[metrics]`: the metrics listener.
    pub metrics: MetricsConfig,
    /// `[log]`: `serve` reads the access log's keys (the format and level
    /// are the subscriber's, installed by the caller).
    pub log: LogConfig,
}

impl ServeConfig {
    /// Checks every section.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.security.validate()?;
        self.redis.validate()?;
        self.check_store_is_chosen()?;
        self.auth.validate()?;
        self.proxy.validate()?;
        self.forward_auth.validate()?;
        self.metrics.validate()?;
        self.log.validate()?;
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
            ("metrics.listen", self.metrics.listen),
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
    #[error(
        "nothing to serve: set [proxy] listen, [forward_auth] listen, [admin] listen or [metrics] listen"
    )]
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
/// returns. SIGHUP re-reads the listeners' certificates (and never stops
/// the process).
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    // First: from here on a SIGHUP reloads, where it would have killed.
    let hangup = Hangup::listen();
    run(config, shutdown_signal(), hangup).await
}

/// As [`serve`], stopping when `stop` completes instead of on a signal, and
/// leaving SIGHUP alone (certificates are still re-read when their files
/// change).
pub async fn serve_until(
    config: ServeConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    run(config, stop, Hangup::none()).await
}

async fn run(
    config: ServeConfig,
    stop: impl Future<Output = ()>,
    hangup: Hangup,
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
    let store: Arc<dyn TokenStore> = Arc::new(Observed::new(store, Arc::new(latency.clone())));
    let service = TokenService::from_config(store, &config.security);
    let auth = Authenticator::new(service.clone(), &config.auth)?;
    let metrics = Arc::new(Metrics::new(auth.clone(), latency));

    // Bind everything before serving anything: a port in use, or a
    // certificate that cannot be read, stops start-up.
    let mut doors = Vec::new();
    let upstream = config.proxy.upstream.as_ref();
    // Each door's access log and metrics.
    let access_log = Arc::new(AccessLog::new(config.log.format == LogFormat::Json));
    let telemetry = |kind| {
        let door = metrics.door(kind);
        Arc::new(Telemetry::new(kind, door, &config.log, access_log.clone()))
    };
    if let (Some(addr), Some(upstream)) = (config.proxy.listen, upstream) {
        let proxy = Proxy::new(auth.clone(), upstream, &config.proxy)?;
        let door = Door::new(Front::Proxy(Arc::new(proxy)), telemetry(DoorKind::Proxy));
        doors.push(open("proxy", addr, "[proxy] listen", door, config.proxy.tls()).await?);
    }
    if let Some(addr) = config.forward_auth.listen {
        let door = Door::new(
            Front::ForwardAuth(auth.clone()),
            telemetry(DoorKind::ForwardAuth),
        );
        let (key, tls) = ("[forward_auth] listen", config.forward_auth.tls());
        doors.push(open("forward_auth", addr, key, door, tls).await?);
    }
    if let Some(addr) = config.admin.listen {
        let admin = Admin::new(auth.clone(), metrics.clone(), config.admin.key.as_ref());
        let door = Door::new(Front::Admin(Arc::new(admin)), telemetry(DoorKind::Admin));
        doors.push(open("admin", addr, "[admin] listen", door, config.admin.tls()).await?);
    }
    if let Some(addr) = config.metrics.listen {
        let door = Door::new(
            Front::Metrics(metrics.clone()),
            telemetry(DoorKind::Metrics),
        );
        let tls = config.metrics.tls();
        doors.push(open("metrics", addr, "[metrics] listen", door, tls).await?);
    }
    if doors.is_empty() {
        return Err(ServeError::NothingToServe);
    }
    for door in &doors {
        let address = door.listener.local_addr().map_err(ServeError::Listener)?;
        let tls = door.tls.is_some();
        tracing::info!(front_door = door.name, %address, tls, "listening");
    }
    if let Some(upstream) = upstream {
        tracing::info!(%upstream, "proxying to upstream");
    }
    let certificates: Vec<_> = doors.iter().filter_map(|d| d.tls.clone()).collect();
    let reloads = tokio::spawn(reload_certificates(certificates, hangup));
    let flushes = tokio::spawn(flush_access_log(access_log.clone()));

    let mut workers = Workers::start(&config.server).await?;
    for door in doors {
        workers.accept(door.listener, door.door, door.tls);
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
    reloads.abort();
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    workers.drain().await;
    flushes.abort();
    access_log.flush();
    // Before the workers' runtimes stop: a Redis connection re-established
    // after an outage may be driven by one of them.
    auth.shutdown().await;
    workers.release().await;
    tracing::info!("stopped");
    Ok(())
}

/// A bound listener, its front door and its certificate.
struct Listening {
    name: &'static str,
    listener: TcpListener,
    door: Door,
    tls: Option<Arc<ServerTls>>,
}

/// Reads the listener's certificate (if `tls` names one) and binds
/// `address`: every listener goes through here, so a new one gets TLS by
/// passing its section's `tls_cert` / `tls_key`.
async fn open(
    name: &'static str,
    address: SocketAddr,
    key: &'static str,
    door: Door,
    tls: ListenerTls<'_>,
) -> Result<Listening, ServeError> {
    let tls = ServerTls::load(tls)?;
    let listener = bind(address, key).await?;
    Ok(Listening {
        name,
        listener,
        door,
        tls,
    })
}

/// Re-reads the listeners' certificates for as long as `serve` runs: all of
/// them on SIGHUP, and any whose files have changed every [`TLS_POLL`].
/// The files are read on the blocking pool, never on a worker.
async fn reload_certificates(certificates: Vec<Arc<ServerTls>>, mut hangup: Hangup) {
    let certificates: Arc<[Arc<ServerTls>]> = certificates.into();
    let mut ticks = tokio::time::interval(TLS_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let why = tokio::select! {
            () = hangup.recv() => Reload::Always,
            _ = ticks.tick(), if !certificates.is_empty() => Reload::IfChanged,
        };
        if why == Reload::Always {
            tracing::info!(
                certificates = certificates.len(),
                "SIGHUP: re-reading the listeners' TLS certificates"
            );
        }
        let certificates = certificates.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for certificate in certificates.iter() {
                certificate.reload(why);
            }
        })
        .await;
    }
}

/// SIGHUP, on unix, once `serve` listens for it.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Not listening (`serve_until`: the embedding program owns SIGHUP).
    fn none() -> Self {
        Self {
            #[cfg(unix)]
            signal: None,
        }
    }

    /// Handles SIGHUP from now on (it no longer ends the process).
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(signal) => Self {
                    signal: Some(signal),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP");
                    Self::none()
                }
            }
        }
        #[cfg(not(unix))]
        Self::none()
    }

    /// Completes on each SIGHUP; never without one.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending().await
    }
}

/// How many connections the kernel may hold for a listener before it takes
/// them: past `[server] max_connections`, new clients wait there until a
/// connection closes. The standard library's 128 turned every client past
/// that into seconds of SYN retransmits (a `connect` that stalls); the
/// kernel caps this at `net.core.somaxconn` (4096 on Linux 5.4 and later).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(address: SocketAddr, key: &'static str) -> Result<TcpListener, ServeError> {
    let listen = || {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As the standard library's bind does on Unix: a restart may bind
        // while the last run's connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| ServeError::Bind {
        address,
        key,
        source,
    })
}

/// Writes the access log's buffer out every [`FLUSH_EVERY`], for as long
/// as `serve` runs.
async fn flush_access_log(log: Arc<AccessLog>) {
    let mut ticks = tokio::time::interval(FLUSH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        log.flush();
    }
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
