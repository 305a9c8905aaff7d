//! The library without the server: the token service, the stores (a real
//! redis-server, Sentinel), the Authenticator and the tower Layer. Builds
//! and runs with `--no-default-features` as well.

#[path = "../support/mod.rs"]
mod support;

mod authenticator;
mod layer;
mod redis_store;
mod sentinel;
mod service;
