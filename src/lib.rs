//! tokengate guards HTTP APIs with long-lived API tokens (`mk_…`).
//!
//! # Layout
//! Each layer uses only the ones above it in this list (`tests/repo/layers.rs`
//! keeps it so), and each component defines its own config section with its
//! defaults and checks.
//! - [`settings`]: what every config section shares (range checks, the
//!   [`InvalidConfig`] error, durations as `"30s"`); `wire`: small HTTP
//!   pieces (JSON error bodies, path normalization). Neither imports
//!   anything from the crate.
//! - [`token`]: the `mk_` format: generate, render, parse and checksum
//!   (docs/reference/token-format.md).
//! - [`hashing`]: stored token hashes, bcrypt or HMAC-SHA256 under the
//!   server key `TOKENGATE_HASH_KEY` (docs/reference/token-format.md, "What is
//!   stored").
//! - [`store`]: the [`TokenStore`] trait, [`RedisStore`] and [`MemoryStore`],
//!   `[redis]`, and the [`RevocationSink`] a store tells of revocations
//!   (docs/design/redis-layout.md).
//! - [`service`]: [`TokenService`] (create, list, get, revoke, validate,
//!   clean up), the input rules, `[security]` and [`TokenError`].
//! - [`auth`]: the [`Authenticator`] every front door shares: sources,
//!   cache, rate limits, identity headers, public and scoped routes (with
//!   method overrides), last-accessed times, the [`TokenWatch`] that ends
//!   a connection with its token, and [`AuthConfig`] for their sections
//!   (docs/reference/http-contract.md).
//! - [`layer`]: the tower [`TokenGateLayer`] for axum, hyper and tonic.
//!
//! With the `server` feature (on by default), the `tokengate` binary's parts:
//! - `tls`: listeners' certificates (`tls_cert` / `tls_key`, reloaded) and
//!   the proxy's `https://` upstreams (docs/guide/tls.md);
//! - `access`: what a front door notes of each request for the access log
//!   and the metrics (docs/reference/http-contract.md, "Access log");
//! - `proxy`, `forward_auth`, `admin`, `metrics`: the network front doors
//!   and `/metrics`, each with its section (`[proxy]`, `[metrics]`, …);
//! - `server`: `tokengate serve`: composition, workers, connections,
//!   shutdown; `[server]`;
//! - `config`: the loader: one TOML file and `TOKENGATE_*` overrides into
//!   `Config`, the sections put together;
//! - `cli`: `tokengate serve` and `tokengate token create|list|get|revoke|cleanup`.
//!
//! Without it (`default-features = false`), the crate is the token core, the
//! stores, the Authenticator and the Layer, without clap, hyper's server,
//! prometheus-client, tracing-subscriber, mimalloc or rustls (unless the
//! `redis-tls` feature asks for it).
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tokengate::TokenError> {
//! use std::sync::Arc;
//! use tokengate::{CreateTokenParams, MemoryStore, TokenError, TokenService};
//!
//! let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
//! let created = service
//!     .create_token(CreateTokenParams {
//!         account_id: "acme".into(),
//!         name: "deploy bot".into(),
//!         expires_in_days: None,
//!         scopes: Default::default(),
//!         allowed_ips: Default::default(),
//!         meta: Default::default(),
//!         quota: None,
//!         rate_limit: None,
//!     })
//!     .await?;
//! println!("store this now: {}", created.token.expose_secret());
//!
//! service.revoke_token(created.info.id, "acme").await?;
//! let err = service.validate_token(created.token.expose_secret()).await.unwrap_err();
//! assert!(matches!(err, TokenError::Revoked));
//! # Ok(()) }
//! ```

pub mod settings;
// Most of it serves the network front doors; the Authenticator uses the
// error body and path normalization.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
mod wire;

pub mod token;

pub mod audit;

pub mod hashing;

pub mod store;

pub mod service;

pub mod auth;

pub mod layer;

#[cfg(feature = "server")]
mod tls;

#[cfg(feature = "server")]
mod telemetry;

#[cfg(feature = "server")]
mod doors;

#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "server")]
pub mod config;

#[cfg(feature = "server")]
mod cli;

/// The `tokengate` binary's `main` (the CLI is not a library API).
#[cfg(feature = "server")]
#[doc(hidden)]
pub use cli::main as cli_main;

pub use audit::{Actor, AuditAction, AuditEntry, AuditPage, AuditQuery};
pub use auth::{
    AuthConfig, AuthRequest, AuthStats, Authenticator, Decision, Ended, IdentityHeaders,
    LastAccessed, Rejection, TokenWatch,
};
#[cfg(feature = "server")]
pub use config::{Config, ConfigError};
pub use layer::{PeerAddr, RequireScopes, TokenGateLayer, TokenGateService};
#[cfg(feature = "server")]
pub use server::{ServeConfig, ServeError, serve, serve_until};
pub use service::{
    AuthContext, Clock, CreateTokenParams, CreatedToken, QuotaInfo, QuotaParams, RotatedToken,
    SecurityConfig, SystemClock, TokenError, TokenInfo, TokenService, TokenStatus, TokenUpdate,
};
pub use settings::InvalidConfig;
pub use store::{
    MemoryStore, RedisConfig, RedisStore, RevocationSink, StoreError, TokenRecord, TokenStore,
};
pub use token::{
    AllowedIps, FormatError, Meta, Refill, RefillInterval, ScopeError, Scopes, Token, TokenId,
};
