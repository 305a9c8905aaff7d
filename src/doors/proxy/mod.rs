//! The sidecar reverse proxy: authenticate, then forward to one upstream.
//!
//! Per request, in this order (docs/reference/http-contract.md, "Order of the steps"):
//! 1. the shared Authenticator decides (401 / 400 / 429 / 503 stop here);
//! 2. client-sent identity headers are stripped (and, as the body streams,
//!    identity trailers);
//! 3. hop-by-hop headers go, with every header `Connection` names: after
//!    step 2 and before step 5, so `Connection: X-Account-Id` cannot remove
//!    the real one;
//! 4. `Authorization` (and `X-API-Key`) go unless configured otherwise;
//!    `X-Forwarded-For/-Proto/-Host` are set;
//! 5. the real identity headers are inserted;
//! 6. the request streams to the upstream (502 if it refuses, 504 past the
//!    timeout) and the response streams back. A WebSocket upgrade is spliced
//!    through after auth.
//!
//! To an `https://` upstream the same HTTP/1.1 goes over TLS (`crate::tls`,
//! docs/guide/tls.md): a certificate that does not verify is a 502 like a refused
//! connection, logged with the reason.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth::{AuthRequest, Authenticator, Decision, Grant, TokenWatch};
use crate::doors::ClientConnection;
use crate::doors::proxy::bodies::{
    BodyWatch, ClientBody, ClientFault, Holder, UpstreamBody, upstream_timer, within,
};
use crate::doors::proxy::tunnel::splice;
use crate::service::AuthContext;
use crate::settings::{InvalidConfig, invalid};
use crate::telemetry::access::Note;
use crate::telemetry::door::DoorOutcome;
use crate::tls::{UpstreamConnector, UpstreamTls};
use crate::wire::{self, Body, BoxError};

mod bodies;
mod config;
mod forwarding;
#[cfg(test)]
mod tests;
mod tunnel;

pub use self::config::{MethodOverride, ProxyConfig, Upstream};

/// How long to wait for a TCP connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum SendError {
    TimedOut,
    Failed(BoxError),
}

/// Spawns on one runtime, wherever it is called from. The pooled client's
/// connections are shared by every worker, so they run on the main runtime:
/// a worker's runtime stops at shutdown while the others may still use them.
#[derive(Clone)]
struct OnRuntime(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for OnRuntime
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

/// The proxy's state: one pooled client to one upstream.
pub(crate) struct Proxy {
    auth: Authenticator,
    client: Client<UpstreamConnector, Body>,
    pub(super) upstream: http::uri::Authority,
    /// For an `https://` upstream.
    pub(super) tls: Option<UpstreamTls>,
    timeout: Duration,
    forward_authorization: bool,
    drop_api_key: bool,
    tunnel_idle_timeout: Duration,
    client_body_timeout: Duration,
    health_path: Option<String>,
    strip_method_overrides: bool,
}

impl Proxy {
    /// The proxy to `upstream`; for an `https://` one, reads
    /// `[proxy] upstream_ca_file` (or the system's roots): a file that
    /// cannot be used is an error naming the key.
    pub(crate) fn new(
        auth: Authenticator,
        upstream: &Upstream,
        config: &ProxyConfig,
    ) -> Result<Self, InvalidConfig> {
        let Some(authority) = upstream.authority().cloned() else {
            return Err(invalid(
                "proxy.upstream",
                format!("{upstream} is not usable"),
            ));
        };
        let tls = upstream
            .is_https()
            .then(|| {
                UpstreamTls::new(
                    authority.host(),
                    config.upstream_ca_file.as_deref(),
                    "proxy.upstream_ca_file",
                )
            })
            .transpose()?;
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        // `https` URIs too: the TLS is ours, on top.
        tcp.enforce_http(false);
        let connector = UpstreamConnector {
            tcp,
            tls: tls.clone(),
        };
        let client = Client::builder(OnRuntime(tokio::runtime::Handle::current())).build(connector);
        Ok(Self {
            drop_api_key: auth.reads_api_key_header(),
            auth,
            client,
            upstream: authority,
            tls,
            timeout: config.upstream_timeout,
            forward_authorization: config.forward_authorization,
            tunnel_idle_timeout: config.tunnel_idle_timeout,
            client_body_timeout: config.client_body_timeout,
            health_path: config.health_path.clone(),
            strip_method_overrides: config.method_override == MethodOverride::Strip,
        })
    }

    pub(crate) async fn handle(
        &self,
        mut request: Request<hyper::body::Incoming>,
        client: &ClientConnection,
        note: &mut Note,
    ) -> Response<Body> {
        let peer = client.peer;
        // The load balancer's health check: answered here, before anything
        // else (it may name no host of ours), and never forwarded. It says
        // the proxy runs; the admin API's /readyz also checks the store.
        if self.is_health_check(&request) {
            note.outcome(DoorOutcome::Health);
            return wire::json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
        }
        // Before any token work: a request without one clear host is refused.
        let host = match wire::request_host(request.version(), request.uri(), request.headers()) {
            Ok(host) => host,
            Err(message) => {
                return wire::error(StatusCode::BAD_REQUEST, "invalid_request", message);
            }
        };
        note.client_ip(|| self.auth.client_ip(Some(peer.ip()), request.headers()));
        // Stripped before the check, so the scopes of the request's own
        // method are all it needs (docs/reference/http-contract.md, "Method
        // overrides").
        if self.strip_method_overrides {
            request = strip_method_overrides(request, peer);
        }
        let started = Instant::now();
        let checked = self
            .auth
            .check_granted(AuthRequest {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers(),
                peer: Some(peer.ip()),
            })
            .await;
        let (decision, grant) = match checked {
            Ok((decision, grant)) => {
                note.decided(Ok(&decision), started);
                (decision, grant)
            }
            Err(rejection) => {
                note.decided(Err(&rejection), started);
                return wire::boxed(rejection.to_response());
            }
        };
        self.auth.remove_query_token(request.uri_mut());

        let upgrade = is_websocket(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        // A tunnel ends when its token no longer admits it: watched from
        // before the request goes upstream, so a change made meanwhile is
        // not missed (docs/reference/http-contract.md, "Open connections").
        let tunnel_watch = upgrade
            .then(|| {
                decision
                    .auth()
                    .map(|auth| self.auth.watch_grant(auth.token_id, &grant))
            })
            .flatten();
        let protocol = upgrade
            .then(|| request.headers().get(UPGRADE).cloned())
            .flatten();
        let client_version = request.version();

        // HTTP/1.1 clients send one request at a time on a connection, so
        // each gets a connection of its own to the upstream (no pool lookup
        // per request); h2c clients multiplex and upgrades take their
        // connection over, so those go through the pooled client.
        let dedicated = !upgrade && client_version != http::Version::HTTP_2;
        let (mut parts, body) = request.into_parts();
        if let Err(message) =
            self.rewrite_for_upstream(&mut parts, host, client, &decision, protocol, dedicated)
        {
            return wire::error(StatusCode::BAD_REQUEST, "invalid_request", message);
        }
        // A request with a body is watched as it streams: the upstream's
        // timeout starts once the body is sent, and a body the client stalls
        // or garbles is the client's fault, not the upstream's.
        let watch = (!body.is_end_stream()).then(|| Arc::new(BodyWatch::default()));
        let upstream_request = Request::from_parts(parts, self.client_body(body, watch.clone()));

        let sending = Instant::now();
        let response = match self
            .send(client, upstream_request, dedicated, watch.as_deref())
            .await
        {
            Ok(response) => response,
            Err(e) => {
                // No answer: the upstream's doing, unless the client's body
                // broke or stalled (then it is the client's, 400 / 408).
                if watch.as_deref().and_then(|w| w.fault.get()).is_none() {
                    note.upstream(None, sending.elapsed());
                }
                return self.send_failed(e, watch.as_deref(), client.peer);
            }
        };
        let answered = Instant::now();
        note.upstream(Some(response.status()), answered - sending);

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            // Ended while the upstream answered: the client is told as a
            // new request would be, not given a tunnel that closes at once.
            if let Some(why) = tunnel_watch.as_ref().and_then(TokenWatch::has_ended) {
                let token_id = tunnel_watch.as_ref().map(TokenWatch::token_id);
                tracing::info!(token_id = token_id.map(tracing::field::display), reason = %why, "refused a tunnel: its token no longer admits it");
                return wire::boxed(self.auth.refusal(&grant, why).to_response());
            }
            return splice(
                client_upgrade,
                response,
                self.tunnel_idle_timeout,
                tunnel_watch,
            );
        }
        self.downstream(response, client_version, decision.auth(), grant, answered)
    }

    /// The client's request body, watched for stalls and bad framing.
    fn client_body(&self, body: hyper::body::Incoming, watch: Option<Arc<BodyWatch>>) -> Body {
        ClientBody {
            inner: body,
            auth: self.auth.clone(),
            idle: watch
                .is_some()
                .then(|| Box::pin(tokio::time::sleep(self.client_body_timeout))),
            watch,
            idle_timeout: self.client_body_timeout,
        }
        .boxed()
    }

    /// The load balancer's health check (`[proxy] health_path`): answered
    /// before anything else (it may name no host of ours), never forwarded.
    fn is_health_check<B>(&self, request: &Request<B>) -> bool {
        self.health_path
            .as_deref()
            .is_some_and(|path| request.uri().path() == path)
            && matches!(*request.method(), Method::GET | Method::HEAD)
    }

    /// Sends the request upstream within `[proxy] upstream_timeout` (which
    /// starts once the body is sent): on a connection of its own, or
    /// through the pooled client.
    async fn send(
        &self,
        client: &ClientConnection,
        request: Request<Body>,
        dedicated: bool,
        watch: Option<&BodyWatch>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let timer = upstream_timer(self.timeout, watch);
        tokio::pin!(timer);
        if dedicated {
            self.send_dedicated(client, request, timer.as_mut()).await
        } else {
            within(timer.as_mut(), self.client.request(request))
                .await
                .and_then(|result| result.map_err(|e| SendError::Failed(e.into())))
        }
    }

    /// The request as the upstream gets it: identity headers stripped and
    /// set, hop-by-hop and forwarding headers replaced, the host and the
    /// request target as the upstream connection needs them, HTTP/1.1.
    fn rewrite_for_upstream(
        &self,
        parts: &mut http::request::Parts,
        host: Option<HeaderValue>,
        client: &ClientConnection,
        decision: &Decision,
        protocol: Option<HeaderValue>,
        dedicated: bool,
    ) -> Result<(), &'static str> {
        let headers = &mut parts.headers;
        let ids = self.auth.identity_headers();
        ids.strip(headers);
        wire::remove_hop_by_hop(headers, false);
        if !self.forward_authorization {
            headers.remove(AUTHORIZATION);
        }
        if self.drop_api_key {
            headers.remove("x-api-key");
        }
        // The target's authority, when it has one, is the host (RFC 9112
        // §3.2.2, RFC 9113 §8.3.1), for the upstream and X-Forwarded-Host.
        if let Some(host) = host {
            headers.insert(HOST, host);
        }
        self.set_forwarded(headers, client);
        if let Some(auth) = decision.auth() {
            ids.insert(headers, auth);
        }
        if let Some(protocol) = protocol {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, protocol);
        }
        // An HTTP/1.0 request may have no host at all.
        if !headers.contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(self.upstream.as_str())
        {
            headers.insert(HOST, host);
        }
        // The dedicated connection takes the origin form (`/path?query`),
        // which is what an HTTP/1.1 client sends: kept as it is.
        let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
        if !(dedicated && origin_form) {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let mut uri = Uri::builder();
            if !dedicated {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                uri = uri.scheme(scheme).authority(self.upstream.clone());
            }
            parts.uri = match uri.path_and_query(path).build() {
                Ok(uri) => uri,
                Err(_) => return Err("Bad request target."),
            };
        }
        // Always HTTP/1.1 to the upstream, whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        Ok(())
    }

    /// The upstream's response as the client gets it: hop-by-hop headers
    /// gone, the client's own HTTP version, and a body that is cut when the
    /// upstream stalls or the token ends.
    fn downstream(
        &self,
        response: Response<hyper::body::Incoming>,
        client_version: http::Version,
        auth: Option<&AuthContext>,
        grant: Grant,
        answered: Instant,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        wire::remove_hop_by_hop(&mut parts.headers, false);
        // The client's protocol is its own connection's, as with nginx: an
        // HTTP/1.0 upstream must not turn the answer into HTTP/1.0 and cost
        // the client's HTTP/1.1 connection its keep-alive.
        parts.version = client_version;
        // A response body the upstream stops sending is cut after the same
        // timeout, as nginx's `proxy_read_timeout` cuts it: the status has
        // gone, so the client sees the body end short, not a hung request.
        let body = UpstreamBody {
            inner: body,
            idle: None,
            idle_timeout: self.timeout,
            waiting: false,
            idle_deadline: None,
            holder: auth.map(|auth| Holder {
                auth: self.auth.clone(),
                token_id: auth.token_id,
                grant,
                since: tokio::time::Instant::from_std(answered),
                frames: 0,
            }),
            watch: None,
        };
        Response::from_parts(parts, body.boxed())
    }

    /// The response to a request that got no upstream response: the
    /// client's fault when its body broke (400) or stalled (408), else 502,
    /// or 504 past the timeout (docs/reference/http-contract.md, "Connections").
    fn send_failed(
        &self,
        error: SendError,
        watch: Option<&BodyWatch>,
        peer: SocketAddr,
    ) -> Response<Body> {
        match watch.and_then(|w| w.fault.get()) {
            Some(ClientFault::Stalled) => {
                tracing::info!(%peer, "the client stopped sending its request body");
                return wire::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body stopped arriving.",
                );
            }
            Some(ClientFault::Broken) => {
                tracing::info!(%peer, "the client sent a malformed or incomplete request body");
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The request body is malformed or incomplete.",
                );
            }
            None => {}
        }
        match error {
            SendError::TimedOut => {
                tracing::warn!(upstream = %self.upstream, "upstream timed out");
                wire::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "The upstream did not answer in time.",
                )
            }
            SendError::Failed(e) => {
                // With its causes: the pooled client's error says only
                // "client error (Connect)", its source why (a certificate).
                let error = wire::error_chain(&*e);
                tracing::warn!(upstream = %self.upstream, %error, "upstream unreachable");
                wire::error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "The upstream could not be reached.",
                )
            }
        }
    }

    /// Sends on the client connection's own upstream connection, opening
    /// (or reopening) it as needed. A request the connection closed before
    /// sending is retried once on a new one; nothing sent is ever replayed.
    /// `timer` (see [`upstream_timer`]) bounds every step.
    async fn send_dedicated(
        &self,
        client: &ClientConnection,
        mut request: Request<Body>,
        mut timer: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        let mut sender = client.upstream.lock().await;
        for attempt in 0..2 {
            let reusable = match sender.as_mut() {
                Some(s) if !s.is_closed() => match within(timer.as_mut(), s.ready()).await {
                    Ok(ready) => ready.is_ok(),
                    Err(e) => {
                        *sender = None;
                        return Err(e);
                    }
                },
                _ => false,
            };
            if !reusable {
                *sender = None;
                let connected = within(timer.as_mut(), self.connect()).await?;
                *sender = Some(connected.map_err(SendError::Failed)?);
            }
            let Some(live) = sender.as_mut() else {
                continue;
            };
            match within(timer.as_mut(), live.try_send_request(request)).await {
                Err(e) => {
                    // A request is in flight on it: never reused.
                    *sender = None;
                    return Err(e);
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(mut e)) => {
                    *sender = None;
                    match e.take_message() {
                        Some(unsent) if attempt == 0 => request = unsent,
                        _ => return Err(SendError::Failed(e.into_error().into())),
                    }
                }
            }
        }
        Err(SendError::Failed(
            "the upstream closed the connection".into(),
        ))
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, BoxError> {
        let port = self
            .upstream
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.upstream.host(), port)),
        )
        .await
        .map_err(|_| "connecting to the upstream timed out")??;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => handshake(stream).await,
            Some(tls) => handshake(tls.connect(stream).await?).await,
        }
    }
}

/// An HTTP/1.1 client connection on `io`, driven by a task of its own.
async fn handshake<I>(io: I) -> Result<http1::SendRequest<Body>, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// `[proxy] method_override = "strip"`: the override headers and `_method`
/// removed before the check, so the scopes of the request's own method are
/// all it needs (docs/reference/http-contract.md, "Method overrides").
fn strip_method_overrides<B>(request: Request<B>, peer: SocketAddr) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if crate::auth::strip_method_overrides(&mut parts.headers, &mut parts.uri) {
        tracing::debug!(%peer, "method override removed");
    }
    Request::from_parts(parts, body)
}

/// A WebSocket upgrade, the only one that passes: after a 101 nothing on the
/// tunnel is checked, and an `Upgrade: h2c` would let a client speak HTTP/2
/// to the upstream past every header rule.
fn is_websocket(headers: &HeaderMap) -> bool {
    wire::wants_upgrade(headers)
        && headers
            .get(UPGRADE)
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"))
}
