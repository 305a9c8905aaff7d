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
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;

use crate::telemetry::access::Note;
use tokio::net::TcpStream;

use serde::{Deserialize, Serialize};

use crate::auth::{AuthRequest, Authenticator, Ended, Grant, TokenWatch};
use crate::settings::{self, InvalidConfig, invalid};
use crate::tls::{ListenerTls, TlsKeys, UpstreamConnector, UpstreamTls};
use crate::token::TokenId;
use crate::wire::{self, Body, BoxError};

/// The config keys of `[proxy]`'s listener certificate.
pub(crate) const TLS_KEYS: TlsKeys = TlsKeys {
    cert: "proxy.tls_cert",
    key: "proxy.tls_key",
};

/// How long to wait for a TCP connection to the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `[proxy]`: the sidecar reverse proxy (`tokengate serve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the proxy listens (`"127.0.0.1:8080"`); unset: no proxy.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// The API behind it: `http://host:port` or `https://host:port`.
    pub upstream: Option<Upstream>,
    /// For an `https://` upstream: the CA certificates (PEM) to verify it
    /// against, instead of the system's roots (nginx's
    /// `proxy_ssl_trusted_certificate`).
    pub upstream_ca_file: Option<PathBuf>,
    /// The listener's certificate chain (PEM): with `tls_key`, the proxy
    /// serves HTTPS (docs/guide/tls.md).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How long the upstream has to answer (response headers) once the
    /// request, body included, has been sent to it; then 504. While a body
    /// streams, the upstream not reading any of it for this long is 504 too;
    /// a response body the upstream stops sending for this long is cut.
    #[serde(with = "crate::settings::duration")]
    pub upstream_timeout: Duration,
    /// A client that sends no byte of its request body for this long gets
    /// 408 (nginx's `client_body_timeout`).
    #[serde(with = "crate::settings::duration")]
    pub client_body_timeout: Duration,
    /// Pass the client's `Authorization` header on to the upstream.
    pub forward_authorization: bool,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    #[serde(with = "crate::settings::duration")]
    pub tunnel_idle_timeout: Duration,
    /// A path (`"/ping"`) the proxy answers itself, for load balancers that
    /// see only the proxy's port: `GET` / `HEAD` get 200 without a token and
    /// are never forwarded. Unset: none.
    pub health_path: Option<String>,
    /// What to do with a request that names another method for the
    /// upstream to run (`X-HTTP-Method-Override`, `?_method=`):
    /// docs/reference/http-contract.md, "Method overrides".
    pub method_override: MethodOverride,
}

/// `[proxy] method_override`: what the proxy does with a request that names
/// another method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// Pass it on, after checking the scopes of its own method and of
    /// every method it names (the default: the upstream runs what the
    /// client asked for, or the request is refused).
    #[default]
    Check,
    /// Remove every override header and `_method` query parameter before
    /// the check, so the upstream runs the request's own method.
    Strip,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            upstream_ca_file: None,
            tls_cert: None,
            tls_key: None,
            upstream_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(60),
            forward_authorization: false,
            tunnel_idle_timeout: Duration::from_secs(600),
            health_path: None,
            method_override: MethodOverride::Check,
        }
    }
}

impl ProxyConfig {
    /// An upstream whenever there is a listener; timeouts in range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.listen.is_some() && self.upstream.is_none() {
            return Err(invalid(
                "proxy.upstream",
                "is required when proxy.listen is set",
            ));
        }
        if let Some(Err(message)) = self.upstream.as_ref().map(|u| &u.parsed) {
            return Err(invalid("proxy.upstream", message.clone()));
        }
        if self.upstream_ca_file.is_some()
            && !self.upstream.as_ref().is_some_and(Upstream::is_https)
        {
            return Err(invalid(
                "proxy.upstream_ca_file",
                "is for an https:// proxy.upstream only",
            ));
        }
        self.tls().validate()?;
        settings::within(
            "proxy.upstream_timeout",
            self.upstream_timeout,
            Duration::from_millis(10),
            Duration::from_secs(3_600),
        )?;
        settings::within(
            "proxy.client_body_timeout",
            self.client_body_timeout,
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        )?;
        settings::within(
            "proxy.tunnel_idle_timeout",
            self.tunnel_idle_timeout,
            Duration::from_millis(100),
            Duration::from_secs(86_400),
        )?;
        if let Some(path) = &self.health_path
            && (!path.starts_with('/')
                || path.len() > 256
                || !path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#'))
        {
            return Err(invalid(
                "proxy.health_path",
                "must be a path like \"/ping\": `/` first, at most 256 printable ASCII \
                 characters, no `?` or `#`",
            ));
        }
        Ok(())
    }
}

impl ProxyConfig {
    /// The listener's certificate settings.
    pub(crate) fn tls(&self) -> ListenerTls<'_> {
        ListenerTls {
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
            keys: TLS_KEYS,
        }
    }
}

/// The API behind the proxy: `http://host[:port]` or `https://host[:port]`,
/// with no path, query or credentials. Parsed when the config is read; a bad one is reported by
/// [`ProxyConfig::validate`] under its key, after the environment has had
/// its say (`TOKENGATE_PROXY_UPSTREAM` may replace the file's).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Upstream {
    /// As written.
    text: String,
    /// `host[:port]` and whether it is `https://`, or why the text is not a
    /// usable upstream.
    parsed: Result<(http::uri::Authority, bool), String>,
}

impl Upstream {
    /// `host[:port]`, sent as `Host` and used to connect; `None` for an
    /// upstream that [`ProxyConfig::validate`] refuses.
    pub fn authority(&self) -> Option<&http::uri::Authority> {
        self.parsed.as_ref().ok().map(|(authority, _)| authority)
    }

    /// Whether the proxy talks TLS to it (`https://`).
    pub fn is_https(&self) -> bool {
        self.parsed.as_ref().is_ok_and(|(_, https)| *https)
    }

    fn parse(upstream: &str) -> Result<(http::uri::Authority, bool), String> {
        let uri: Uri = upstream
            .parse()
            .map_err(|e| format!("{upstream:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{upstream:?}: only http:// and https:// upstreams are supported"
                ));
            }
        };
        let authority = match uri.authority() {
            Some(a) if !a.as_str().contains('@') => a.clone(),
            _ => return Err(format!("{upstream:?} needs a host, and no credentials")),
        };
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(format!(
                "{upstream:?}: no path or query (requests keep their own path)"
            ));
        }
        Ok((authority, https))
    }
}

impl From<String> for Upstream {
    fn from(text: String) -> Self {
        let parsed = Self::parse(&text);
        Self { text, parsed }
    }
}

impl From<Upstream> for String {
    fn from(upstream: Upstream) -> Self {
        upstream.text
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({:?})", self.text)
    }
}

/// What the front doors keep per client connection: the peer, its address
/// as a header value (formatted once, not per request), whether it came
/// over TLS, and the proxy's own upstream connection for it.
pub(crate) struct ClientConnection {
    peer: SocketAddr,
    peer_ip: Option<HeaderValue>,
    tls: bool,
    upstream: tokio::sync::Mutex<Option<http1::SendRequest<Body>>>,
}

impl ClientConnection {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            peer_ip: HeaderValue::from_str(&peer.ip().to_string()).ok(),
            tls,
            upstream: tokio::sync::Mutex::new(None),
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }
}

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
    upstream: http::uri::Authority,
    /// For an `https://` upstream.
    tls: Option<UpstreamTls>,
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
        if self
            .health_path
            .as_deref()
            .is_some_and(|path| request.uri().path() == path)
            && matches!(*request.method(), Method::GET | Method::HEAD)
        {
            note.outcome("health");
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
            let (mut parts, body) = request.into_parts();
            if crate::auth::strip_method_overrides(&mut parts.headers, &mut parts.uri) {
                tracing::debug!(%peer, "method override removed");
            }
            request = Request::from_parts(parts, body);
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

        // Only WebSocket: after a 101 nothing on the tunnel is checked, and an
        // `Upgrade: h2c` would let a client speak HTTP/2 to the upstream
        // past every header rule.
        let upgrade = wire::wants_upgrade(request.headers())
            && request
                .headers()
                .get(UPGRADE)
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
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
        let ids = self.auth.identity_headers();

        let (mut parts, body) = request.into_parts();
        let headers = &mut parts.headers;
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
        // HTTP/1.1 clients send one request at a time on a connection, so
        // each gets a connection of its own to the upstream (no pool lookup
        // per request); h2c clients multiplex and upgrades take their
        // connection over, so those go through the pooled client.
        let dedicated = !upgrade && client_version != http::Version::HTTP_2;
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
                Err(_) => {
                    return wire::error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Bad request target.",
                    );
                }
            };
        }
        // Always HTTP/1.1 to the upstream, whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        // A request with a body is watched as it streams: the upstream's
        // timeout starts once the body is sent, and a body the client stalls
        // or garbles is the client's fault, not the upstream's.
        let watch = (!body.is_end_stream()).then(|| Arc::new(BodyWatch::default()));
        let body = ClientBody {
            inner: body,
            auth: self.auth.clone(),
            watch: watch.clone(),
            idle: watch
                .is_some()
                .then(|| Box::pin(tokio::time::sleep(self.client_body_timeout))),
            idle_timeout: self.client_body_timeout,
        }
        .boxed();
        let upstream_request = Request::from_parts(parts, body);

        let timer = upstream_timer(self.timeout, watch.as_deref());
        tokio::pin!(timer);
        let sending = Instant::now();
        let sent = if dedicated {
            self.send_dedicated(client, upstream_request, timer.as_mut())
                .await
        } else {
            within(timer.as_mut(), self.client.request(upstream_request))
                .await
                .and_then(|result| result.map_err(|e| SendError::Failed(e.into())))
        };
        let response = match sent {
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
            holder: decision.auth().map(|auth| Holder {
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

    fn set_forwarded(&self, headers: &mut HeaderMap, client: &ClientConnection) {
        let trusted = self.auth.is_trusted_proxy(client.peer.ip());
        strip_forwarding(headers, trusted);
        // Append to a client's X-Forwarded-For only when a trusted proxy sent
        // it (all its lines, in order); anyone else's list is replaced by
        // what we saw, and their other forwarding headers are dropped.
        let existing: Vec<&str> = if trusted {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        let forwarded_for = if existing.is_empty() {
            client.peer_ip.clone()
        } else {
            HeaderValue::from_str(&format!("{}, {}", existing.join(", "), client.peer.ip())).ok()
        };
        match forwarded_for {
            Some(value) => {
                headers.insert("x-forwarded-for", value);
            }
            None => {
                headers.remove("x-forwarded-for");
            }
        }
        if !(trusted && headers.contains_key("x-forwarded-proto")) {
            let proto = if client.tls { "https" } else { "http" };
            headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        }
        if !(trusted && headers.contains_key("x-forwarded-host")) {
            match headers.get(HOST).cloned() {
                Some(host) => {
                    headers.insert("x-forwarded-host", host);
                }
                None => {
                    headers.remove("x-forwarded-host");
                }
            }
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

/// The forwarding headers, folded: tokengate sets the first three itself,
/// and none of them is believed from a client that is not a trusted proxy.
const FORWARDING: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "forwarded",
];

/// Removes every spelling of a forwarding header that a proxy or framework
/// may fold into the real one (`X_Forwarded_For`, `x.real.ip`: nginx,
/// CGI/WSGI and some Node frameworks read them as `X-Forwarded-For`), as
/// for identity headers; and, from a peer that is not a trusted proxy, the
/// real spellings too (docs/reference/http-contract.md, "Forwarding headers").
fn strip_forwarding(headers: &mut HeaderMap, trusted: bool) {
    // The common case, none present: one pass over the names, no allocation.
    if headers.keys().any(is_folded_forwarding) {
        let forged: Vec<http::HeaderName> = headers
            .keys()
            .filter(|n| is_folded_forwarding(n))
            .cloned()
            .collect();
        for name in forged {
            headers.remove(name);
        }
    }
    if !trusted {
        // X-Forwarded-For/-Proto/-Host are set afresh by the caller.
        for name in &FORWARDING[3..] {
            headers.remove(*name);
        }
    }
}

/// A name with `_` or `.` that folds into a forwarding header.
fn is_folded_forwarding(name: &http::HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.iter().any(|&b| b == b'_' || b == b'.')
        && FORWARDING
            .iter()
            .any(|f| crate::auth::folds_to(name, f.as_bytes()))
}

/// Answers 101 to the client and copies bytes both ways once both sides have
/// switched protocols, until either side closes, no byte has moved either
/// way for `idle` (checked four times per `idle`), or the token that opened
/// it no longer admits it (`watch`; docs/reference/http-contract.md, "Open
/// connections").
fn splice(
    client: hyper::upgrade::OnUpgrade,
    mut response: Response<hyper::body::Incoming>,
    idle: Duration,
    mut watch: Option<TokenWatch>,
) -> Response<Body> {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = wire::ReadHook {
            inner: TokioIo::new(client),
            hook: CountBytes(moved.clone()),
        };
        let mut upstream = wire::ReadHook {
            inner: TokioIo::new(upstream),
            hook: CountBytes(moved.clone()),
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let mut ticks = tokio::time::interval(idle / 4);
        let (mut seen, mut since) = (0, tokio::time::Instant::now());
        let revoked = async {
            match watch.as_mut() {
                Some(watch) => (watch.token_id(), watch.ended().await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(revoked);
        loop {
            tokio::select! {
                (token_id, why) = &mut revoked => {
                    tracing::info!(%token_id, reason = %why, "closed a tunnel: its token no longer admits it");
                    return;
                }
                ended = &mut copy => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                    return;
                }
                now = ticks.tick() => {
                    let total = moved.load(Ordering::Relaxed);
                    if total != seen {
                        (seen, since) = (total, now);
                    } else if now - since >= idle {
                        tracing::debug!(?idle, "closed an idle upgraded connection");
                        return;
                    }
                }
            }
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, wire::empty())
}

/// Counts the bytes read from a tunnel end (for the idle timeout).
struct CountBytes(Arc<AtomicU64>);

impl wire::OnRead for CountBytes {
    fn read(&mut self, data: &[u8]) {
        self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
}

/// `future`, unless `timer` completes first ([`SendError::TimedOut`]).
async fn within<F: Future>(
    timer: Pin<&mut impl Future<Output = ()>>,
    future: F,
) -> Result<F::Output, SendError> {
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = timer => Err(SendError::TimedOut),
    }
}

/// Completes when the upstream has had `timeout` to answer: counted from
/// when the request body has been sent, as nginx's `proxy_read_timeout` is
/// (at once for a request without one). While the body streams, the upstream
/// not reading any of it for one whole check window (so between one and two
/// `timeout`s) counts too; a client that stops
/// sending is [`ClientBody`]'s to time out.
async fn upstream_timer(timeout: Duration, watch: Option<&BodyWatch>) {
    if let Some(watch) = watch {
        let mut progress = watch.progress.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                () = watch.sent.notified() => break,
                () = tokio::time::sleep(timeout) => {
                    let now = watch.progress.load(Ordering::Relaxed);
                    if now == progress && !watch.client_pending.load(Ordering::Relaxed) {
                        return;
                    }
                    progress = now;
                }
            }
        }
    }
    tokio::time::sleep(timeout).await;
}

/// How a request body is doing, shared by the body and the proxy's send.
#[derive(Debug, Default)]
struct BodyWatch {
    /// Notified once the body has ended (or failed).
    sent: tokio::sync::Notify,
    /// Frames passed on so far.
    progress: AtomicU64,
    /// Whether the body is waiting for the client (not for the upstream).
    client_pending: AtomicBool,
    /// What the client did wrong, if it did.
    fault: OnceLock<ClientFault>,
}

#[derive(Debug, Clone, Copy)]
enum ClientFault {
    /// No byte for `[proxy] client_body_timeout`: 408.
    Stalled,
    /// Malformed (a bad chunk) or cut short: 400.
    Broken,
}

pin_project! {
    /// The client's request body on its way upstream: trailers lose any
    /// identity header (a client could otherwise send `X-Account-Id` as a
    /// trailer), and, when watched, the body reports its end, its faults,
    /// and times out when the client stops sending it.
    struct ClientBody<B> {
        #[pin]
        inner: B,
        auth: Authenticator,
        watch: Option<Arc<BodyWatch>>,
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
        idle_timeout: Duration,
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if let Some(watch) = this.watch.as_deref() {
            match &polled {
                Poll::Pending => {
                    let waiting = watch.client_pending.swap(true, Ordering::Relaxed);
                    if let Some(idle) = this.idle.as_mut() {
                        // Only time spent waiting for the client counts: the
                        // clock starts when it begins (not while hyper was
                        // connecting upstream or the upstream was not reading).
                        if !waiting {
                            idle.as_mut()
                                .reset(tokio::time::Instant::now() + *this.idle_timeout);
                        }
                        if idle.as_mut().poll(cx).is_ready() {
                            let _ = watch.fault.set(ClientFault::Stalled);
                            watch.sent.notify_one();
                            return Poll::Ready(Some(Err(
                                "the client stopped sending the body".into()
                            )));
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    let _ = watch.fault.set(ClientFault::Broken);
                }
                Poll::Ready(_) => {
                    watch.client_pending.store(false, Ordering::Relaxed);
                    watch.progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            if ended {
                watch.sent.notify_one();
            }
        }
        match std::task::ready!(polled) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    this.auth.identity_headers().strip(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a response must have been streaming before its token is
/// watched: shorter ones cost no registration, and a revocation still
/// reaches a long one (server-sent events, a big download) within about a
/// second (docs/reference/http-contract.md, "Open connections").
const WATCH_AFTER: Duration = Duration::from_secs(1);

/// What a response body needs to watch the token that admitted its
/// request, once it has streamed for [`WATCH_AFTER`].
struct Holder {
    auth: Authenticator,
    token_id: TokenId,
    grant: Grant,
    /// When the response began (its headers came).
    since: tokio::time::Instant,
    /// Frames passed on so far.
    frames: u32,
}

/// A body the upstream sends faster than the client reads never waits for
/// it: from this frame on, each frame looks at the clock instead (a short
/// response, of fewer frames, reads no clock).
const FRAMES_BEFORE_LOOKING: u32 = 4;

impl Holder {
    /// Starts watching the token: the watch, or why it already ended.
    fn watch(self, cx: &mut Context<'_>) -> Result<Watching, (TokenId, Ended)> {
        let watch = self.auth.watch_grant(self.token_id, &self.grant);
        let mut watching: Pin<Box<dyn Future<Output = (TokenId, Ended)> + Send>> =
            Box::pin(watch.into_ended());
        match watching.as_mut().poll(cx) {
            Poll::Ready(ended) => Err(ended),
            Poll::Pending => Ok(std::sync::Mutex::new(watching)),
        }
    }
}

/// The error that cuts a response whose token no longer admits it.
fn cut((token_id, why): (TokenId, Ended)) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    tracing::info!(%token_id, reason = %why, "cut a streaming response: its token no longer admits it");
    Poll::Ready(Some(Err("the token no longer admits this response".into())))
}

/// A watched token's end, as a body polls it. In a `Mutex` only because a
/// response body must be `Sync`; one task polls it.
type Watching = std::sync::Mutex<Pin<Box<dyn Future<Output = (TokenId, Ended)> + Send>>>;

pin_project! {
    /// The upstream's response body on its way to the client: fails once
    /// the upstream has sent nothing for `idle_timeout`. Only time spent
    /// waiting for the upstream counts (the clock starts when a poll finds
    /// nothing), not time the client took to read what came before. A body
    /// still streaming after [`WATCH_AFTER`] also ends, cut short as an
    /// idle one is, when its token no longer admits the request.
    struct UpstreamBody<B> {
        #[pin]
        inner: B,
        // Made on the first wait, so a body that is all there at once costs
        // no timer, and reset on each wait after.
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
        idle_timeout: Duration,
        waiting: bool,
        // When the current wait times out.
        idle_deadline: Option<tokio::time::Instant>,
        // The token to watch (`None` for a public route), until it is.
        holder: Option<Holder>,
        watch: Option<Watching>,
    }
}

impl<B> HttpBody for UpstreamBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(watch) = this.watch.as_mut() {
            let watch = watch
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Poll::Ready(ended) = watch.as_mut().poll(cx) {
                // Done: never polled again.
                *this.watch = None;
                return cut(ended);
            }
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.waiting = false;
            if let Some(holder) = this.holder.as_mut() {
                holder.frames = holder.frames.saturating_add(1);
                if holder.frames >= FRAMES_BEFORE_LOOKING
                    && holder.since.elapsed() >= WATCH_AFTER
                    && let Some(holder) = this.holder.take()
                {
                    match holder.watch(cx) {
                        Ok(watching) => *this.watch = Some(watching),
                        Err(ended) => return cut(ended),
                    }
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !*this.waiting {
            *this.waiting = true;
            let now = tokio::time::Instant::now();
            let idle_deadline = now + *this.idle_timeout;
            *this.idle_deadline = Some(idle_deadline);
            // While the token is not watched yet, the same timer also
            // wakes the body when it is time to.
            let deadline = match this.holder.as_ref() {
                Some(holder) => idle_deadline.min(holder.since + WATCH_AFTER),
                None => idle_deadline,
            };
            match this.idle.as_mut() {
                Some(idle) => idle.as_mut().reset(deadline),
                None => *this.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        loop {
            let Some(idle) = this.idle.as_mut() else {
                return Poll::Pending;
            };
            if idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(holder) = this.holder.take() else {
                tracing::warn!(idle = ?this.idle_timeout, "the upstream stopped sending its response body; cut it");
                return Poll::Ready(Some(Err(
                    "the upstream stopped sending the response body".into()
                )));
            };
            // Streaming for WATCH_AFTER: watch the token from now on, and
            // let the timer count the idle time again.
            match holder.watch(cx) {
                Ok(watching) => *this.watch = Some(watching),
                Err(ended) => return cut(ended),
            }
            if let Some(deadline) = *this.idle_deadline {
                idle.as_mut().reset(deadline);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn identity_trailers_are_stripped_and_data_passes() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-account-id", HeaderValue::from_static("evil"));
        trailers.insert("x_token_id", HeaderValue::from_static("evil"));
        trailers.insert("x-checksum", HeaderValue::from_static("kept"));
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::trailers(trailers)),
        ];
        let service = crate::service::TokenService::new(std::sync::Arc::new(
            crate::store::MemoryStore::new(),
        ));
        let auth = Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
        let body = ClientBody {
            inner: StreamBody::new(futures_util::stream::iter(frames)),
            auth,
            watch: None,
            idle: None,
            idle_timeout: Duration::ZERO,
        };
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers["x-checksum"], "kept");
        assert_eq!(collected.to_bytes(), "hello");
    }

    #[tokio::test(start_paused = true)]
    async fn only_time_spent_waiting_for_the_client_counts_as_a_stall() {
        let service = crate::service::TokenService::new(std::sync::Arc::new(
            crate::store::MemoryStore::new(),
        ));
        let auth = Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
        let timeout = Duration::from_secs(5);
        let watch = Arc::new(BodyWatch::default());
        let never =
            futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
        let body = ClientBody {
            inner: StreamBody::new(never),
            auth,
            watch: Some(watch.clone()),
            idle: Some(Box::pin(tokio::time::sleep(timeout))),
            idle_timeout: timeout,
        };
        let mut body = std::pin::pin!(body);
        macro_rules! poll {
            () => {
                std::future::poll_fn(|cx| {
                    Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
                })
                .await
            };
        }
        // Longer than the timeout before the body is first read (connecting
        // upstream, a 100-continue): not the client's stall.
        tokio::time::advance(timeout * 2).await;
        assert!(poll!().is_pending());
        assert!(watch.fault.get().is_none());
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert!(poll!().is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(poll!(), Poll::Ready(Some(true))));
        assert!(matches!(watch.fault.get(), Some(ClientFault::Stalled)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_the_upstream_stops_sending_is_cut_after_the_timeout() {
        let timeout = Duration::from_secs(30);
        let first = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"first"),
        ))]);
        let then_nothing = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        let body = UpstreamBody {
            inner: StreamBody::new(then_nothing),
            idle: None,
            idle_timeout: timeout,
            waiting: false,
            idle_deadline: None,
            holder: None,
            watch: None,
        };
        let mut body = std::pin::pin!(body);
        macro_rules! poll {
            () => {
                std::future::poll_fn(|cx| {
                    Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
                })
                .await
            };
        }
        // Longer than the timeout before the client reads: not the
        // upstream's silence.
        tokio::time::advance(timeout * 2).await;
        assert!(matches!(poll!(), Poll::Ready(Some(false))));
        assert!(poll!().is_pending());
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert!(poll!().is_pending());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(poll!(), Poll::Ready(Some(true))));
    }

    /// A body the upstream sends faster than the client reads never waits,
    /// yet it is watched once it has streamed for a second, and cut when
    /// its token is revoked.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_waits_is_still_watched_and_cut() {
        let service = crate::service::TokenService::new(std::sync::Arc::new(
            crate::store::MemoryStore::new(),
        ))
        .with_bcrypt_cost(4);
        let created = service
            .create_token(crate::service::CreateTokenParams {
                account_id: "acme".into(),
                name: "stream".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let auth =
            Authenticator::new(service.clone(), &crate::auth::AuthConfig::default()).unwrap();
        let always = futures_util::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x")))
        });
        let body = UpstreamBody {
            inner: StreamBody::new(always),
            idle: None,
            idle_timeout: Duration::from_secs(30),
            waiting: false,
            idle_deadline: None,
            holder: Some(Holder {
                auth,
                token_id: created.info.id,
                grant: Grant::default(),
                since: tokio::time::Instant::now(),
                frames: 0,
            }),
            watch: None,
        };
        let mut body = std::pin::pin!(body);
        macro_rules! poll {
            () => {
                std::future::poll_fn(|cx| {
                    Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
                })
                .await
            };
        }
        for _ in 0..10 {
            assert!(matches!(poll!(), Poll::Ready(Some(false))));
        }
        assert!(body.watch.is_none(), "watched before a second");
        tokio::time::advance(WATCH_AFTER).await;
        assert!(matches!(poll!(), Poll::Ready(Some(false))));
        assert!(body.watch.is_some(), "not watched after a second");
        service.revoke_token(created.info.id, "acme").await.unwrap();
        assert!(matches!(poll!(), Poll::Ready(Some(true))), "not cut");
        assert!(body.watch.is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        wire::remove_hop_by_hop(&mut headers, false);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }
}
