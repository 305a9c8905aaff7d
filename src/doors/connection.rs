//! The client connection every front door serves a request on: who is
//! calling (the peer address) and whether over TLS.

use std::net::SocketAddr;

use http::HeaderValue;
use hyper::client::conn::http1;

use crate::wire::Body;

/// What the front doors keep per client connection: the peer, its address
/// as a header value (formatted once, not per request), whether it came
/// over TLS, and the proxy's own upstream connection for it.
pub(crate) struct ClientConnection {
    pub(super) peer: SocketAddr,
    pub(super) peer_ip: Option<HeaderValue>,
    pub(super) tls: bool,
    pub(super) upstream: tokio::sync::Mutex<Option<http1::SendRequest<Body>>>,
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
