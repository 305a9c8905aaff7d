//! `tokengate serve` and the `tokengate` CLI as a black box: the real
//! binary on free loopback ports with configs written by the test, a real
//! redis-server (or Cluster), a real upstream, and real nginx and Caddy in
//! front of it; plus the property tests of what the server parses.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod admin;
mod audit;
mod chaos;
mod cli;
mod cluster;
mod connections;
mod fleet;
mod forward_auth;
mod fuzz;
mod lifecycle;
mod logs;
mod management;
mod metrics;
mod proxy;
mod rotation;
mod scopes;
mod sessions;
mod tls;
mod verify;
