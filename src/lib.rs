//! tokengate guards HTTP APIs with long-lived API tokens (`mk_…`).
//!
//! This crate is the token core: the token format, the stores, the
//! [`TokenService`] that creates, lists, revokes, validates and cleans up
//! tokens, the configuration and the `tokengate` command line.
//!
//! # Layout
//! - [`token`]: the `mk_` format: generate, render, parse and checksum.
//! - [`store`]: the [`TokenStore`] trait, [`RedisStore`] and [`MemoryStore`].
//! - [`service`]: [`TokenService`], the input rules and [`TokenError`].
//! - [`config`]: the TOML file, `TOKENGATE_*` overrides and their checks.
//! - [`cli`]: `tokengate token create|list|get|revoke|cleanup`.
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
//!     })
//!     .await?;
//! println!("store this now: {}", created.token.expose_secret());
//!
//! service.revoke_token(created.info.id, "acme").await?;
//! let err = service.validate_token(created.token.expose_secret()).await.unwrap_err();
//! assert!(matches!(err, TokenError::Revoked));
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cli;
pub mod config;
pub mod last_accessed;
pub mod layer;
pub mod metrics;
pub mod server;

mod admin;
mod forward_auth;
mod http2;
mod http_util;
mod proxy;
pub mod service;
pub mod store;
pub mod token;

pub use auth::{AuthRequest, AuthStats, Authenticator, Decision, IdentityHeaders, Rejection};
pub use config::{Config, ConfigError};
pub use last_accessed::LastAccessed;
pub use layer::{PeerAddr, TokenGateLayer, TokenGateService};
pub use server::serve;
pub use service::{
    AuthContext, Clock, CreateTokenParams, CreatedToken, RevocationSink, SystemClock, TokenError,
    TokenInfo, TokenService, TokenStatus,
};
pub use store::{MemoryStore, RedisStore, StoreError, TokenRecord, TokenStore};
pub use token::{FormatError, Token, TokenId};
