//! The tower [`Layer`](tower::Layer): tokengate inside a Rust service (axum, hyper, tonic).
//!
//! `TokenGateLayer` → [`TokenGateService`] → [`ResponseFuture`], shaped like
//! tower-http's `AsyncRequireAuthorization`: the future first authorizes
//! (through the shared [`Authenticator`](crate::auth::Authenticator)), then calls the inner service. A
//! refusal is a response (401 / 400 / 429 / 503 with a JSON body), not an
//! error, so `Error = S::Error`; the [`Rejection`](crate::auth::Rejection) rides in the response's
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

use std::net::SocketAddr;

mod require_scopes;
mod token_gate;

pub use self::require_scopes::{RequireScopes, RequireScopesFuture, RequireScopesService};
pub use self::token_gate::{ResponseFuture, TokenGateLayer, TokenGateService};

/// The client's socket address, as a request extension. tokengate's own
/// servers insert it; in another server, insert it (or a plain
/// `SocketAddr`), or tell the layer where to find it with
/// [`TokenGateLayer::peer_addr_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);
