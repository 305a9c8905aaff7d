//! The network front doors of `tokengate serve`: the sidecar proxy,
//! the forward-auth endpoint and the admin API, each with its config
//! section.

pub(crate) mod admin;
pub(crate) mod connection;
pub(crate) mod forward_auth;
pub(crate) mod proxy;

pub(crate) use self::connection::ClientConnection;
