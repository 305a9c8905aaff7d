//! The connection machinery of `tokengate serve`: worker threads, the
//! hand-off from the accept loops, and each connection's protocol, limits
//! and graceful end.
//!
//! The accept loops run on the main runtime and hand each connection to one
//! of `[server] workers` threads, each with its own single-threaded runtime
//! ([`Workers`]). The stack of a connection, outermost first, and why each
//! part is there:
//! - on a listener with a certificate, TLS (rustls), the handshake on the
//!   worker and bounded by `header_read_timeout` like the headers that
//!   follow it (the accept loop never waits for a client);
//! - hyper's HTTP/1.1 or HTTP/2 connection, told apart by ALPN over TLS
//!   and by the first bytes in cleartext (h2c): bounds header count and
//!   size (431) and the time to send headers (slowloris); for HTTP/2 also
//!   concurrent streams, idle connections and unfinished header blocks
//!   (`super::http2`);
//! - the listener's front door: proxy, forward-auth or admin.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::ServeError;
use super::http2::{Activity, guarded, watch_frames};
use crate::auth::Authenticator;
use crate::doors::admin::Admin;
use crate::doors::proxy::Proxy;
use crate::doors::{ClientConnection, forward_auth};
use crate::settings::{InvalidConfig, in_range, within};
use crate::telemetry::door::Telemetry;
use crate::telemetry::metrics::Metrics;
use crate::tls::ServerTls;
use crate::wire::Body;

/// hyper's default limit on the number of request headers.
const HYPER_MAX_HEADERS: usize = 100;

/// `[server]`: limits and timeouts shared by every listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM / SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "crate::settings::duration")]
    pub shutdown_grace: Duration,
    /// A client must send its request headers within this (slowloris).
    #[serde(with = "crate::settings::duration")]
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
    #[serde(with = "crate::settings::duration")]
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

impl ServerConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        within(
            "server.shutdown_grace",
            self.shutdown_grace,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        within(
            "server.header_read_timeout",
            self.header_read_timeout,
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?;
        in_range("server.max_headers", self.max_headers, 1, 1_000)?;
        in_range(
            "server.max_header_bytes",
            self.max_header_bytes,
            8_192,
            1_048_576,
        )?;
        in_range("server.max_connections", self.max_connections, 1, 1_000_000)?;
        within(
            "server.idle_timeout",
            self.idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        in_range(
            "server.http2_max_concurrent_streams",
            self.http2_max_concurrent_streams,
            1,
            10_000,
        )?;
        if let Some(workers) = self.workers {
            in_range("server.workers", workers, 1, 1_024)?;
        }
        Ok(())
    }

    /// `workers`, or one per CPU.
    pub(super) fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// What a listener serves.
#[derive(Clone)]
pub(super) enum Front {
    Proxy(Arc<Proxy>),
    ForwardAuth(Authenticator),
    Admin(Arc<Admin>),
    Metrics(Arc<Metrics>),
}

/// A listener's front door: what a connection's requests go to, and the
/// access log and metrics every request of it is recorded in.
#[derive(Clone)]
pub(super) struct Door {
    front: Front,
    telemetry: Arc<Telemetry>,
}

impl Door {
    pub(super) fn new(front: Front, telemetry: Arc<Telemetry>) -> Self {
        Self { front, telemetry }
    }

    // Kept beside the connection code that calls it on every request (the
    // same module, so the same codegen unit): in another module, the proxy
    // load benchmark showed more CPU per request (docs/design/measurements.md,
    // "The architecture change").
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        client: &ClientConnection,
    ) -> http::Response<Body> {
        let started = Instant::now();
        let (mut note, logged) = self.telemetry.start(&request);
        let response = match &self.front {
            Front::Proxy(proxy) => proxy.handle(request, client, &mut note).await,
            Front::ForwardAuth(auth) => {
                forward_auth::handle(auth, request, client.peer(), &mut note).await
            }
            Front::Admin(admin) => admin.handle(request, client.peer()).await,
            Front::Metrics(metrics) => metrics.handle(&request),
        };
        self.telemetry
            .finish(started, note, logged, response.status(), client.peer());
        response
    }
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
/// Shutdown has two steps. [`Workers::drain`]: the accept loops end, and
/// every worker lets its connections finish (up to the grace period,
/// then cuts them) and reports. [`Workers::release`]: the workers' runtimes
/// stop. In between, the last-accessed times are flushed: a Redis connection
/// re-established after an outage is driven by whichever runtime saw the
/// error, so no runtime may stop before the flush.
pub(super) struct Workers {
    handoffs: Vec<Handoff>,
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the accept loops to stop.
    stop_accepting: watch::Sender<bool>,
    max_connections: usize,
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
    /// The listener's certificate, if it terminates TLS.
    tls: Option<Arc<ServerTls>>,
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
    /// Starts `[server] workers` threads (one per CPU by default); returns
    /// once each has its runtime.
    pub(super) async fn start(server: &ServerConfig) -> Result<Self, ServeError> {
        let count = server.worker_count();
        let protocols = Arc::new(Protocols::new(server));
        let (drained_tx, drained) = mpsc::channel(1);
        let (release, released) = watch::channel(());
        let (started_tx, mut started) = mpsc::channel::<std::io::Result<()>>(count.max(1));
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
                    let _ = started_tx.try_send(match &runtime {
                        Ok(_) => Ok(()),
                        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                    });
                    drop(started_tx);
                    if let Ok(runtime) = runtime {
                        runtime.block_on(worker.run());
                    }
                })
                .map_err(ServeError::WorkerThread)?;
            handoffs.push(Handoff { connections, open });
            threads.push(thread);
        }
        drop(started_tx);
        for _ in 0..count {
            match started.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(ServeError::WorkerRuntime(e)),
                None => return Err(ServeError::WorkerStopped),
            }
        }
        let (stop_accepting, _) = watch::channel(false);
        Ok(Self {
            handoffs,
            accept_loops: Vec::new(),
            stop_accepting,
            max_connections: server.max_connections,
            drained,
            release,
            threads,
        })
    }

    /// How many worker threads run.
    pub(super) fn count(&self) -> usize {
        self.threads.len()
    }

    /// Accepts connections on `listener` (on the calling runtime) and hands
    /// each, with its front door and its certificate (`tls`: the worker
    /// does the handshake), to the least loaded worker.
    pub(super) fn accept(
        &mut self,
        listener: TcpListener,
        door: Door,
        tls: Option<Arc<ServerTls>>,
    ) {
        self.accept_loops.push(tokio::spawn(accept_loop(
            listener,
            door,
            tls,
            self.handoffs.clone(),
            self.max_connections,
            self.stop_accepting.subscribe(),
        )));
    }

    /// Stops accepting, then waits until every worker has let its
    /// connections finish (or cut them at the grace period).
    pub(super) async fn drain(&mut self) {
        let _ = self.stop_accepting.send(true);
        for task in self.accept_loops.drain(..) {
            let _ = task.await;
        }
        // The accept loops held the other senders.
        self.handoffs.clear();
        while self.drained.recv().await.is_some() {}
    }

    /// Stops the workers' runtimes and waits for their threads.
    pub(super) async fn release(self) {
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
    tls: Option<Arc<ServerTls>>,
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
            tls: tls.clone(),
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
        tls,
        permit: _permit,
    } = accepted;
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "could not serve a connection");
            return;
        }
    };
    let Some(tls) = tls else {
        let Some(protocol) = protocol_within(&stream, protocols.header_read_timeout).await else {
            tracing::debug!(%peer, "dropped a connection that sent no request in time");
            return;
        };
        let client = Arc::new(ClientConnection::new(peer, false));
        return serve_protocol(stream, protocol, door, client, protocols, stop).await;
    };
    // The certificate current now: a reload during the handshake does not
    // change it, and none touches an open connection.
    let handshake = tls.acceptor().accept(stream);
    let stream = match tokio::time::timeout(protocols.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "dropped a connection that did not finish its TLS handshake in time");
            return;
        }
    };
    // What the client and the listener agreed on; no ALPN: HTTP/1.1.
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let client = Arc::new(ClientConnection::new(peer, true));
    serve_protocol(stream, protocol, door, client, protocols, stop).await;
}

/// Serves `protocol` on `stream` (a TCP stream, or the TLS stream on top).
async fn serve_protocol<S>(
    stream: S,
    protocol: Protocol,
    door: Door,
    client: Arc<ClientConnection>,
    protocols: &Protocols,
    stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.peer();
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
            let activity = Activity::new();
            let streams = activity.clone();
            let service = service_fn(move |request| {
                let (door, client) = (door.clone(), client.clone());
                let open = streams.stream();
                async move {
                    let response = door.handle(request, &client).await;
                    Ok::<_, Infallible>(response.map(|body| guarded(body, open)))
                }
            });
            let io = watch_frames(stream, activity.clone());
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
    activity: Option<&Activity>,
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
/// `super::http2`'s limits apply.
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
