//! Each front door's record of its requests: which door it is
//! ([`DoorKind`]), how a request ended ([`DoorOutcome`]), and the HTTP
//! metrics and the access line, fed from the door's [`Note`] once the
//! response is ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::StatusCode;

use crate::auth::Outcome;
use crate::telemetry::access::{AccessLog, Logged, Note};
use crate::telemetry::log::LogConfig;
use crate::telemetry::metrics::DoorMetrics;

/// A listener of `tokengate serve`: its `door` label in the metrics and
/// field in the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DoorKind {
    /// The sidecar proxy (`[proxy] listen`).
    Proxy,
    /// The forward-auth endpoint (`[forward_auth] listen`).
    ForwardAuth,
    /// The admin API (`[admin] listen`).
    Admin,
    /// The metrics listener (`[metrics] listen`).
    Metrics,
}

impl DoorKind {
    /// Its name: the `door` label, and the section of its listener.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::ForwardAuth => "forward_auth",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }

    /// Whether the Authenticator decides its requests.
    pub(crate) fn authenticates(self) -> bool {
        matches!(self, Self::Proxy | Self::ForwardAuth)
    }

    /// Whether this door can end a request with `outcome`
    /// (docs/reference/metrics.md, "Label values").
    pub(crate) fn reports(self, outcome: DoorOutcome) -> bool {
        matches!(
            (self, outcome),
            (Self::Proxy | Self::ForwardAuth, DoorOutcome::Auth(_))
                | (Self::Proxy, DoorOutcome::Health)
                | (Self::Admin, DoorOutcome::Admin)
                | (Self::Metrics, DoorOutcome::Metrics)
        )
    }

    /// The outcome of a request the door says nothing about: every other
    /// request of the proxy and forward-auth is decided by the
    /// Authenticator, or refused before it (400).
    fn default_outcome(self) -> DoorOutcome {
        match self {
            Self::Proxy | Self::ForwardAuth => DoorOutcome::Auth(Outcome::InvalidRequest),
            Self::Admin => DoorOutcome::Admin,
            Self::Metrics => DoorOutcome::Metrics,
        }
    }
}

/// How a front door's request ended, in the access log and the `outcome`
/// label: the Authenticator's [`Outcome`], or `health` (the proxy's health
/// path), `admin` (the admin listener) or `metrics` (the metrics listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DoorOutcome {
    /// Decided by the Authenticator.
    Auth(Outcome),
    /// The proxy's own health path.
    Health,
    /// Answered by the admin API.
    Admin,
    /// Answered by the metrics listener.
    Metrics,
}

impl DoorOutcome {
    /// Every door outcome, in [`DoorOutcome::index`] order.
    pub(crate) fn all() -> impl Iterator<Item = DoorOutcome> {
        Outcome::ALL
            .into_iter()
            .map(Self::Auth)
            .chain([Self::Health, Self::Admin, Self::Metrics])
    }

    /// A dense index, in [`DoorOutcome::all`] order: the Authenticator's
    /// outcomes first.
    pub(crate) fn index(self) -> usize {
        let n = Outcome::ALL.len();
        match self {
            Self::Auth(outcome) => outcome.index(),
            Self::Health => n,
            Self::Admin => n + 1,
            Self::Metrics => n + 2,
        }
    }

    /// Its name in the access log and the `outcome` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Auth(outcome) => outcome.as_str(),
            Self::Health => "health",
            Self::Admin => "admin",
            Self::Metrics => "metrics",
        }
    }
}

/// One front door's access log and metrics.
#[derive(Debug)]
pub(crate) struct Telemetry {
    door: DoorKind,
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
        door: DoorKind,
        metrics: DoorMetrics,
        config: &LogConfig,
        log: Arc<AccessLog>,
    ) -> Self {
        let enabled =
            config.access && tracing::enabled!(target: "tokengate::access", tracing::Level::INFO);
        Self {
            door,
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
        let outcome = note.outcome.unwrap_or(self.door.default_outcome());
        self.metrics.request(outcome, status, elapsed);
        if let Some((outcome, took)) = note.auth {
            self.metrics.auth(outcome, took);
        }
        if let Some((status, took)) = note.upstream {
            self.metrics.upstream(status, took);
        }
        if let Some(logged) = logged {
            self.log.write(
                self.door.as_str(),
                note,
                logged,
                outcome,
                status,
                peer,
                elapsed,
            );
        }
    }
}
