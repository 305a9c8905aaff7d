//! What `tokengate serve` tells its operators: the access log, the
//! Prometheus metrics (and the `/metrics` listener), log set-up, and each
//! front door's record of its requests.

pub(crate) mod access;
pub(crate) mod door;
pub(crate) mod log;
pub(crate) mod metrics;
