//! [`RequireScopes`]: a route's scopes, checked after [`TokenGateLayer`](super::TokenGateLayer)
//! (403 `insufficient_scope` without them). Layer, then Service, then Future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::auth::Rejection;
use crate::service::AuthContext;
use crate::token::{MAX_SCOPES, ScopeError, is_valid_scope};

/// Requires scopes of the token [`TokenGateLayer`](super::TokenGateLayer) admitted, for the routes
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
