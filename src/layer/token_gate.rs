//! [`TokenGateLayer`]: every request authenticated, the identity headers
//! set and the [`AuthContext`] in its extensions; a refusal answered with
//! its status and JSON body. Layer, then Service, then Future.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::PeerAddr;
use crate::auth::{Authenticator, Rejection};

type PeerFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;

fn default_peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

/// Wraps a service with token authentication.
#[derive(Clone)]
pub struct TokenGateLayer {
    auth: Authenticator,
    peer: PeerFn,
}

impl std::fmt::Debug for TokenGateLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGateLayer")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl TokenGateLayer {
    /// A layer authenticating through `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth,
            peer: Arc::new(default_peer),
        }
    }

    /// Where to find the client's IP in the request extensions, e.g. with
    /// axum: `|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())`.
    /// Without one, the per-IP failure limit does not apply.
    pub fn peer_addr_with(
        mut self,
        f: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(f);
        self
    }
}

impl<S> Layer<S> for TokenGateLayer {
    type Service = TokenGateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenGateService {
            inner,
            auth: self.auth.clone(),
            peer: self.peer.clone(),
        }
    }
}

/// The service [`TokenGateLayer`] produces.
#[derive(Clone)]
pub struct TokenGateService<S> {
    inner: S,
    auth: Authenticator,
    peer: PeerFn,
}

impl<S> std::fmt::Debug for TokenGateService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGateService").finish_non_exhaustive()
    }
}

type Authorizing<B> = Pin<Box<dyn Future<Output = Result<Request<B>, Rejection>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TokenGateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was driven to readiness goes into the future; a
        // fresh clone stays behind for the next call (tower's "be careful
        // when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let peer = (self.peer)(request.extensions());
        ResponseFuture {
            state: State::Authorizing {
                future: Box::pin(async move { auth.authorize(request, peer).await }),
                inner: Some(inner),
            },
        }
    }
}

pin_project! {
    /// The future of [`TokenGateService`]: authorizing, then calling the
    /// inner service.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Authorizing {
            future: Authorizing<B>,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authorizing { future, inner } => {
                    match ready!(future.as_mut().poll(cx)) {
                        Ok(request) => {
                            let mut inner = inner
                                .take()
                                .expect("polled after the inner service was taken");
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(rejection) => {
                            return Poll::Ready(Ok(rejection.to_response().map(Either::Right)));
                        }
                    }
                }
                StateProj::Calling { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(Either::Left));
                }
            }
        }
    }
}
