//! `tokengate serve`: builds the store, the service and the one
//! Authenticator, binds the listeners the config enables, serves until
//! SIGTERM / SIGINT, then shuts down gracefully.
//!
//! The accept loops run on the main runtime and hand each connection to one
//! of `[server] workers` threads, each with its own single-threaded runtime
//! (`Workers`). The stack of a connection, outermost first, and why each
//! part is there:
//! - hyper's HTTP/1.1 or HTTP/2 (h2c) connection, told apart by the first
//!   bytes: bounds header count and size (431) and the time to send headers
//!   (slowloris); for HTTP/2 also concurrent streams, idle connections and
//!   unfinished header blocks (`crate::http2`);
//! - the listener's front door: proxy, forward-auth or admin;
//! - the Authenticator shared by the proxy and forward-auth, so a token
//!   cached by one is cached for the other;
//! - a store wrapper that times every call (for `/metrics`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::admin::Admin;
use crate::auth::Authenticator;
use crate::config::{Config, ServerConfig, redact_url};
use crate::http_util::Body;
use crate::metrics::{Metrics, StoreLatency, TimedStore};
use crate::proxy::{ClientConnection, Proxy};
use crate::service::TokenService;
use crate::store::{self, TokenStore};

/// The environment variable holding the admin API's bearer key.
pub const ADMIN_KEY_ENV: &str = "TOKENGATE_ADMIN_KEY";
/// hyper's default limit on the number of request headers.
const HYPER_MAX_HEADERS: usize = 100;

/// Shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// Why `serve` could not start (one line, naming the cause).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

impl From<String> for ServeError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

#[derive(Clone)]
enum Door {
    Proxy(Arc<Proxy>),
    ForwardAuth(Authenticator),
    Admin(Arc<Admin>),
}

impl Door {
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        client: &ClientConnection,
    ) -> http::Response<Body> {
        match self {
            Self::Proxy(proxy) => proxy.handle(request, client).await,
            Self::ForwardAuth(auth) => {
                crate::forward_auth::handle(auth, request, client.peer()).await
            }
            Self::Admin(admin) => admin.handle(request).await,
        }
    }
}

/// Runs the front doors `config` enables until SIGTERM or SIGINT, then
/// stops accepting, lets in-flight requests finish (up to
/// `[server] shutdown_grace`), writes pending last-accessed times and
/// returns.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    serve_until(config, shutdown_signal()).await
}

/// As [`serve`], stopping when `stop` completes instead of on a signal.
pub async fn serve_until(config: Config, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    config.validate().map_err(|e| e.to_string())?;
    let latency = StoreLatency::default();
    let store = store::open(&config.redis).await.map_err(|e| {
        format!(
            "cannot connect to Redis at {}: {e}",
            redact_url(config.redis.url.as_deref().unwrap_or_default())
        )
    })?;
    let kind = store.kind();
    let store: Arc<dyn TokenStore> = Arc::new(TimedStore::new(store, latency.clone()));
    let service = TokenService::from_config(store, &config);
    let auth = Authenticator::new(service.clone(), &config).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new(auth.clone(), latency));

    let admin_key = std::env::var(ADMIN_KEY_ENV).ok().filter(|k| !k.is_empty());
    if let Some(addr) = config.admin.listen {
        match &admin_key {
            Some(key) if key.len() < MIN_ADMIN_KEY_LEN => {
                return Err(format!(
                    "{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_LEN} characters"
                )
                .into());
            }
            Some(_) => {}
            None if config.admin.allow_unauthenticated_loopback && addr.ip().is_loopback() => {
                tracing::warn!(%addr, "the admin API needs no key: [admin] allow_unauthenticated_loopback is set");
            }
            None => {
                return Err(format!(
                    "the admin listener ({addr}) needs {ADMIN_KEY_ENV}, or a loopback address with \
                     [admin] allow_unauthenticated_loopback = true"
                )
                .into());
            }
        }
    }

    // Bind everything before serving anything: a port in use stops start-up.
    let mut doors = Vec::new();
    if let Some(addr) = config.proxy.listen {
        let proxy = Proxy::new(auth.clone(), &config)?;
        doors.push((
            "proxy",
            bind(addr, "[proxy] listen").await?,
            Door::Proxy(Arc::new(proxy)),
        ));
    }
    if let Some(addr) = config.forward_auth.listen {
        doors.push((
            "forward_auth",
            bind(addr, "[forward_auth] listen").await?,
            Door::ForwardAuth(auth.clone()),
        ));
    }
    if let Some(addr) = config.admin.listen {
        let admin = Admin::new(service.clone(), metrics.clone(), admin_key.as_deref());
        doors.push((
            "admin",
            bind(addr, "[admin] listen").await?,
            Door::Admin(Arc::new(admin)),
        ));
    }
    if doors.is_empty() {
        return Err(
            "nothing to serve: set [proxy] listen, [forward_auth] listen or [admin] listen"
                .to_owned()
                .into(),
        );
    }
    for (name, listener, _) in &doors {
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(front_door = name, %address, "listening");
    }
    if let Some(upstream) = &config.proxy.upstream {
        tracing::info!(%upstream, "proxying to upstream");
    }
    let workers = config.server.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut running = Workers::start(workers, &config.server).await?;
    let (stop_accepting, accepting) = watch::channel(false);
    let accept_loops: Vec<_> = doors
        .into_iter()
        .map(|(_, listener, door)| {
            tokio::spawn(accept_loop(
                listener,
                door,
                running.handoffs.clone(),
                config.server.max_connections,
                accepting.clone(),
            ))
        })
        .collect();
    tracing::info!(store = kind, workers, "tokengate started");

    stop.await;
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    let _ = stop_accepting.send(true);
    for task in accept_loops {
        let _ = task.await;
    }
    running.drained().await;
    auth.shutdown().await;
    running.release().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {addr} ({key}): {e}")))
}

/// How a worker serves a connection: one builder per protocol, and the
/// limits hyper does not apply by itself.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Protocols {
    fn new(config: &ServerConfig) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes);
        // hyper's own limit is 100, parsed into a fixed array; any other limit
        // costs it a buffer built on every request, so set only another one.
        if config.max_headers != HYPER_MAX_HEADERS {
            http1.max_headers(config.max_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            // Pings find dead HTTP/2 peers, which no read timeout covers.
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            http1,
            http2,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// The worker threads that serve client connections, and how to stop them.
///
/// Each worker is a thread with its own single-threaded Tokio runtime: a
/// connection, its requests and its upstream connection all stay on one
/// thread (no work stealing, no cross-thread wake-ups per request), as
/// nginx's worker processes do. The accept loops run on the main runtime and
/// hand each new connection to the worker with the fewest open ones, so
/// connections spread evenly whoever wins a race to `accept`.
///
/// Shutdown has two steps. [`Workers::drained`]: once the accept loops have
/// ended, every worker lets its connections finish (up to the grace period,
/// then cuts them) and reports. [`Workers::release`]: the workers' runtimes
/// stop. In between, the last-accessed times are flushed: a Redis connection
/// re-established after an outage is driven by whichever runtime saw the
/// error, so no runtime may stop before the flush.
struct Workers {
    handoffs: Vec<Handoff>,
    /// Closed when every worker has drained: each holds a sender.
    drained: mpsc::Receiver<()>,
    /// Dropped to let the workers' runtimes stop.
    release: watch::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The way to one worker.
#[derive(Clone)]
struct Handoff {
    connections: mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
}

/// A connection accepted on the main runtime, for a worker to serve.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    door: Door,
    /// The listener's `max_connections` budget, held while it is open.
    permit: OwnedSemaphorePermit,
}

/// One worker thread's side.
struct Worker {
    index: usize,
    incoming: mpsc::UnboundedReceiver<Accepted>,
    open: Arc<AtomicUsize>,
    protocols: Arc<Protocols>,
    grace: Duration,
    drained: mpsc::Sender<()>,
    released: watch::Receiver<()>,
}

impl Workers {
    /// Starts `count` worker threads; returns once each has its runtime.
    async fn start(count: usize, server: &ServerConfig) -> Result<Self, ServeError> {
        let protocols = Arc::new(Protocols::new(server));
        let (drained_tx, drained) = mpsc::channel(1);
        let (release, released) = watch::channel(());
        let (started_tx, mut started) = mpsc::channel::<Result<(), String>>(count.max(1));
        let mut handoffs = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (connections, incoming) = mpsc::unbounded_channel();
            let open = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                index,
                incoming,
                open: open.clone(),
                protocols: protocols.clone(),
                grace: server.shutdown_grace,
                drained: drained_tx.clone(),
                released: released.clone(),
            };
            let started_tx = started_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tokengate-worker-{index}"))
                .spawn(move || {
                    // Built on its own thread: a runtime must not be dropped
                    // (as on a failed start) inside another runtime.
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    let _ = started_tx.try_send(
                        runtime
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| format!("cannot start a worker's runtime: {e}")),
                    );
                    drop(started_tx);
                    if let Ok(runtime) = runtime {
                        runtime.block_on(worker.run());
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            handoffs.push(Handoff { connections, open });
            threads.push(thread);
        }
        drop(started_tx);
        for _ in 0..count {
            match started.recv().await {
                Some(Ok(())) => {}
                Some(Err(message)) => return Err(message.into()),
                None => return Err("a worker thread stopped during start-up".to_owned().into()),
            }
        }
        Ok(Self {
            handoffs,
            drained,
            release,
            threads,
        })
    }

    /// Waits until every worker has let its connections finish (or cut them
    /// at the grace period): call after the accept loops ended (they hold
    /// the other senders).
    async fn drained(&mut self) {
        self.handoffs.clear();
        while self.drained.recv().await.is_some() {}
    }

    /// Stops the workers' runtimes and waits for their threads.
    async fn release(self) {
        drop(self.release);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Worker {
    async fn run(mut self) {
        // Every connection task holds a receiver: `stopping` tells them to
        // finish, and is closed once the last is gone.
        let (stopping, stop) = watch::channel(false);
        // The connection tasks, to cut those still open past the grace
        // period (finished ones are pruned as connections come and go).
        let mut tasks: Vec<tokio::task::AbortHandle> = Vec::new();
        while let Some(accepted) = self.incoming.recv().await {
            let open = OpenConnection(self.open.clone());
            let protocols = self.protocols.clone();
            let stop = stop.clone();
            let task = tokio::spawn(async move {
                let _open = open;
                serve_connection(accepted, &protocols, stop).await;
            });
            if tasks.len() >= 64 && tasks.len() >= 2 * self.open.load(Ordering::Relaxed) {
                tasks.retain(|task| !task.is_finished());
            }
            tasks.push(task.abort_handle());
        }
        // The accept loops are gone: let this worker's connections finish.
        let _ = stopping.send(true);
        drop(stop);
        if tokio::time::timeout(self.grace, stopping.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = self.index,
                grace = ?self.grace,
                "grace period over; dropping the remaining connections"
            );
            for task in &tasks {
                task.abort();
            }
        }
        drop(self.drained);
        let _ = self.released.changed().await;
    }
}

/// Counts one open connection of a worker until dropped (even by a panic).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handoff {
    /// The running worker with the fewest open connections.
    fn least_loaded(handoffs: &[Handoff]) -> Option<&Handoff> {
        handoffs
            .iter()
            .filter(|h| !h.connections.is_closed())
            .min_by_key(|h| h.open.load(Ordering::Relaxed))
    }
}

async fn accept_loop(
    listener: TcpListener,
    door: Door,
    handoffs: Vec<Handoff>,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    // Bounds open connections (and their tasks and buffers): past the limit
    // this loop stops accepting and new clients wait in the kernel's queue.
    let open = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "could not hand a connection over");
                continue;
            }
        };
        let mut accepted = Accepted {
            stream,
            peer,
            door: door.clone(),
            permit,
        };
        // A worker whose thread has stopped (it should not) is skipped, and
        // the connection goes to the next one.
        loop {
            let Some(worker) = Handoff::least_loaded(&handoffs) else {
                tracing::error!(%peer, "no worker thread is running; dropped a connection");
                break;
            };
            worker.open.fetch_add(1, Ordering::Relaxed);
            match worker.connections.send(accepted) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    worker.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!("a worker thread has stopped");
                    accepted = back;
                }
            }
        }
    }
}

/// Serves one client connection on the current worker, until it ends or,
/// once `stop` says so, it has finished what it was doing. The task holds
/// `stop` until then: the worker waits for every receiver to go.
async fn serve_connection(accepted: Accepted, protocols: &Protocols, stop: watch::Receiver<bool>) {
    let Accepted {
        stream,
        peer,
        door,
        permit: _permit,
    } = accepted;
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "could not serve a connection");
            return;
        }
    };
    let Some(protocol) = protocol_within(&stream, protocols.header_read_timeout).await else {
        tracing::debug!(%peer, "dropped a connection that sent no request in time");
        return;
    };
    let client = Arc::new(ClientConnection::new(peer));
    let ended = match protocol {
        Protocol::Http1 => {
            let service = service_fn(move |request| {
                let (door, client) = (door.clone(), client.clone());
                async move { Ok::<_, Infallible>(door.handle(request, &client).await) }
            });
            let connection = protocols
                .http1
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            drive(connection, None, protocols, stop).await
        }
        Protocol::Http2 => {
            let activity = crate::http2::Activity::new();
            let streams = activity.clone();
            let service = service_fn(move |request| {
                let (door, client) = (door.clone(), client.clone());
                let open = streams.stream();
                async move {
                    let response = door.handle(request, &client).await;
                    Ok::<_, Infallible>(response.map(|body| crate::http2::guarded(body, open)))
                }
            });
            let io = crate::http2::watch_frames(stream, activity.clone());
            let connection = protocols.http2.serve_connection(TokioIo::new(io), service);
            drive(connection, Some(&activity), protocols, stop).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Drives a connection until it ends, shutting it down gracefully (HTTP/1.1:
/// after the current response; HTTP/2: GOAWAY, open streams finish) when
/// the server stops. With `activity` (HTTP/2), also when it has had no open
/// stream for `idle_timeout` or a header block has been pending for
/// `header_read_timeout`; then it is closed if it has not ended one
/// `header_read_timeout` later and the reason still holds.
async fn drive<C>(
    connection: C,
    activity: Option<&crate::http2::Activity>,
    protocols: &Protocols,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>> + Graceful,
{
    let (idle, header_read) = (protocols.idle_timeout, protocols.header_read_timeout);
    tokio::pin!(connection);
    // Only HTTP/2 connections are checked (and pay for a timer).
    let mut ticks = activity.map(|_| {
        let mut ticks =
            tokio::time::interval((idle.min(header_read) / 4).max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut stopping = false;
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        // Biased: no random branch order to draw on every wake-up.
        tokio::select! {
            biased;
            ended = connection.as_mut() => return ended,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().shut_down();
            }
            now = tick(ticks.as_mut()) => match closing {
                // Cut only if the reason still holds: a request the client
                // sent before it saw the GOAWAY is let finish.
                Some(since)
                    if now - since >= header_read
                        && activity.and_then(|a| a.overdue(idle, header_read)).is_some() =>
                {
                    tracing::debug!("closed an HTTP/2 connection that did not end after GOAWAY");
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    if let Some(reason) = activity.and_then(|a| a.overdue(idle, header_read)) {
                        tracing::debug!(reason, "closing an HTTP/2 connection");
                        closing = Some(now);
                        if !stopping {
                            connection.as_mut().shut_down();
                        }
                    }
                }
            }
        }
    }
}

/// The next tick, or never without an interval.
async fn tick(ticks: Option<&mut tokio::time::Interval>) -> tokio::time::Instant {
    match ticks {
        Some(ticks) => ticks.tick().await,
        None => std::future::pending().await,
    }
}

/// A hyper server connection that can be asked to finish.
trait Graceful {
    fn shut_down(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E, B> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The protocol a client speaks, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// Prior knowledge (h2c): the connection preface.
    Http2,
}

/// Waits (at most `limit`) until the client has sent enough to tell HTTP/1
/// from HTTP/2 (`None` if it has not). A client that connects and sends
/// nothing, or half an HTTP/2 preface, would otherwise hold a connection
/// forever; from there on hyper's header read timeout (HTTP/1) and
/// `crate::http2`'s limits apply.
async fn protocol_within(stream: &tokio::net::TcpStream, limit: Duration) -> Option<Protocol> {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    let known = async {
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            if !H2_PREFACE.starts_with(&buf[..n]) {
                return Ok(Some(Protocol::Http1));
            }
            if n >= H2_PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
            // Part of the preface so far: look again shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    match tokio::time::timeout(limit, known).await {
        Ok(Ok::<_, std::io::Error>(protocol)) => protocol,
        _ => None,
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
