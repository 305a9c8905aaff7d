//! Each front door's record of its requests: the HTTP metrics
//! (`crate::telemetry::metrics`) and the access log (`crate::telemetry::access`), fed from the
//! door's [`Note`] once the response is ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::StatusCode;

use crate::telemetry::access::{AccessLog, Logged, Note, outcome_index};
use crate::telemetry::log::LogConfig;
use crate::telemetry::metrics::DoorMetrics;

/// One front door's access log and metrics.
#[derive(Debug)]
pub(crate) struct Telemetry {
    door: &'static str,
    /// The outcome of a request the door says nothing about.
    default_outcome: usize,
    metrics: DoorMetrics,
    /// Percentage of requests logged; 0: the access log is off.
    sample_percent: u64,
    seen: AtomicU64,
    log: Arc<AccessLog>,
}

impl Telemetry {
    /// `door`'s, writing its lines into `log` if `[log] access` says so
    /// and the log filter lets `tokengate::access` through at info.
    pub(crate) fn new(
        door: &'static str,
        metrics: DoorMetrics,
        config: &LogConfig,
        log: Arc<AccessLog>,
    ) -> Self {
        let enabled =
            config.access && tracing::enabled!(target: "tokengate::access", tracing::Level::INFO);
        let default_outcome = match door {
            "admin" | "metrics" => outcome_index(door),
            // Every other request of the proxy and forward-auth is decided
            // by the Authenticator, or refused before it (400).
            _ => outcome_index("invalid_request"),
        };
        Self {
            door,
            default_outcome,
            metrics,
            sample_percent: if enabled {
                u64::from(config.access_sample_percent)
            } else {
                0
            },
            seen: AtomicU64::new(0),
            log,
        }
    }

    /// A request starts: a note for the door, and the request line if this
    /// one is logged (evenly spread: with 10 %, requests 10, 20, 30, …).
    pub(crate) fn start<B>(&self, request: &http::Request<B>) -> (Note, Option<Logged>) {
        let log = match self.sample_percent {
            0 => false,
            100 => true,
            percent => {
                let n = self.seen.fetch_add(1, Ordering::Relaxed);
                (n + 1) * percent / 100 != n * percent / 100
            }
        };
        let logged = log.then(|| Logged {
            method: request.method().clone(),
            uri: request.uri().clone(),
        });
        (Note::new(log), logged)
    }

    /// The response (`status`) is ready: metrics, and the access line.
    pub(crate) fn finish(
        &self,
        started: Instant,
        note: Note,
        logged: Option<Logged>,
        status: StatusCode,
        peer: SocketAddr,
    ) {
        let elapsed = started.elapsed();
        let outcome = note.outcome.unwrap_or(self.default_outcome);
        self.metrics.request(outcome, status, elapsed);
        if let Some((index, took)) = note.auth {
            self.metrics.auth(index, took);
        }
        if let Some((status, took)) = note.upstream {
            self.metrics.upstream(status, took);
        }
        if let Some(logged) = logged {
            self.log
                .write(self.door, note, logged, outcome, status, peer, elapsed);
        }
    }
}
