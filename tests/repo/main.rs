//! Checks of the repository itself: the layers of `src/`, the declared
//! minimum Rust version, and the deployment files.

#[path = "../support/mod.rs"]
mod support;

mod deploy;
mod layers;
mod msrv;
