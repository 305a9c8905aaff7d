//! The tower [`Layer`]: tokengate inside a Rust service (axum, hyper, tonic).
//!
//! `TokenGateLayer` → [`TokenGateService`] → [`ResponseFuture`], shaped like
//! tower-http's `AsyncRequireAuthorization`: the future first authorizes
//! (through the shared [`Authenticator`]), then calls the inner service. A
//! refusal is a response (401 / 400 / 429 / 503 with a JSON body), not an
//! error, so `Error = S::Error`; the [`Rejection`] rides in the response's
//! extensions. An admitted request reaches the inner service with its
//! identity headers stripped and set and an [`AuthContext`] extension.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tokengate::{AuthConfig, Authenticator, MemoryStore, TokenGateLayer, TokenService};
//!
//! let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
//! let auth = Authenticator::new(service, &AuthConfig::default()).unwrap();
//! let mut app = ServiceBuilder::new()
//!     .layer(TokenGateLayer::new(auth))
//!     .service_fn(|_req: Request<Full<bytes::Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::<bytes::Bytes>::default()))
//!     });
//! let response = app.ready().await.unwrap().call(Request::new(Full::default())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```
//!
//! [`AuthContext`]: crate::AuthContext

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

use crate::auth::{Authenticator, Rejection};
use crate::service::AuthContext;
use crate::token::{MAX_SCOPES, ScopeError, is_valid_scope};

/// The client's socket address, as a request extension. tokengate's own
/// servers insert it; in another server, insert it (or a plain
/// `SocketAddr`), or tell the layer where to find it with
/// [`TokenGateLayer::peer_addr_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

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

/// Requires scopes of the token [`TokenGateLayer`] admitted, for the routes
/// it wraps (docs/reference/http-contract.md, "Scopes"): the in-code counterpart of
/// `[[routes]]`. A request whose token lacks one gets 403
/// `insufficient_scope` with `WWW-Authenticate: Bearer realm="tokengate",
/// error="insufficient_scope", scope="…"`; one that reached it without an
/// admitted token (a public route, or the layer placed outside
/// `TokenGateLayer`) gets 401. With axum:
///
/// ```
/// use axum::{Router, routing::post};
/// use tokengate::{Authenticator, RequireScopes, ScopeError, TokenGateLayer};
///
/// async fn create_order() -> &'static str {
///     "created"
/// }
///
/// fn app(auth: Authenticator) -> Result<Router, ScopeError> {
///     Ok(Router::new()
///         .route(
///             "/orders",
///             post(create_order).route_layer(RequireScopes::new(["orders:write"])?),
///         )
///         .layer(TokenGateLayer::new(auth)))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RequireScopes {
    needed: Arc<[String]>,
    /// The `scope` of the refusal: the needed scopes, space-separated.
    spaced: Arc<str>,
}

impl RequireScopes {
    /// Requires every one of `scopes` (in the scope syntax, at most 32).
    pub fn new<I, S>(scopes: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut needed = Vec::new();
        for scope in scopes {
            let scope = scope.into();
            if !is_valid_scope(&scope) {
                return Err(ScopeError::Syntax(scope));
            }
            needed.push(scope);
        }
        if needed.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany(needed.len()));
        }
        let spaced = needed.join(" ").into();
        Ok(Self {
            needed: needed.into(),
            spaced,
        })
    }

    fn refusal<B>(&self, request: &Request<B>) -> Option<Rejection> {
        let Some(auth) = request.extensions().get::<AuthContext>() else {
            return Some(Rejection::MissingToken);
        };
        auth.scopes
            .first_missing(&self.needed)
            .map(|_| Rejection::InsufficientScope {
                scope: self.spaced.to_string(),
            })
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = RequireScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService {
            inner,
            scopes: self.clone(),
        }
    }
}

/// The service [`RequireScopes`] produces.
#[derive(Debug, Clone)]
pub struct RequireScopesService<S> {
    inner: S,
    scopes: RequireScopes,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopesService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = RequireScopesFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.scopes.refusal(&request) {
            Some(rejection) => RequireScopesFuture {
                state: RequireState::Refused {
                    response: Some(rejection.to_response()),
                },
            },
            None => RequireScopesFuture {
                state: RequireState::Calling {
                    future: self.inner.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// The future of [`RequireScopesService`].
    pub struct RequireScopesFuture<F> {
        #[pin]
        state: RequireState<F>,
    }
}

pin_project! {
    #[project = RequireProj]
    enum RequireState<F> {
        Refused { response: Option<Response<Full<Bytes>>> },
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<F, ResBody, E> Future for RequireScopesFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RequireProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("polled after completion")
                .map(Either::Right))),
            RequireProj::Calling { future } => future
                .poll(cx)
                .map_ok(|response| response.map(Either::Left)),
        }
    }
}
