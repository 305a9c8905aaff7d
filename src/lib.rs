//! tokengate guards HTTP APIs with long-lived API tokens (`mk_…`).
//!
//! The code's map, a folder per component and the layers they form, is
//! ARCHITECTURE.md at the repository's root; what follows is the library's
//! guide, docs/reference/library.md, whose examples run as doctests.
#![doc = include_str!("../docs/reference/library.md")]

pub mod settings;
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
