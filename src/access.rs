//! What `serve` records of every request it answers: one access-log line
//! (`[log] access`, target `tokengate::access`) and the HTTP metrics
//! (`crate::metrics`), from one [`Note`] the front door fills in as it
//! goes. docs/http-contract.md, "Access log", lists the fields;
//! docs/metrics.md the metrics.
//!
//! Never logged: the token, `Authorization`, any header, the query string
//! (a token may travel in it: `[sources] query_param`) or a body.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Uri};

use crate::auth::{Decision, OUTCOMES, Rejection};
use crate::service::AuthContext;

/// Outcomes of a front door's requests, in the access log and the
/// `outcome` label: the Authenticator's ([`OUTCOMES`]), then `health` (the
/// proxy's health path), `admin` (the admin listener) and `metrics` (the
/// metrics listener).
pub(crate) const DOOR_OUTCOMES: [&str; OUTCOMES.len() + 3] = [
    OUTCOMES[0],
    OUTCOMES[1],
    OUTCOMES[2],
    OUTCOMES[3],
    OUTCOMES[4],
    OUTCOMES[5],
    OUTCOMES[6],
    OUTCOMES[7],
    "health",
    "admin",
    "metrics",
];

/// Index of `outcome` in [`DOOR_OUTCOMES`] (`invalid_request` for anything
/// else, which no door reports).
pub(crate) fn outcome_index(outcome: &str) -> usize {
    DOOR_OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(4)
}

/// What a front door learnt about one request, for the access log and the
/// metrics. Filled in by the door, read once the response is ready.
#[derive(Debug, Default)]
pub(crate) struct Note {
    /// Whether this request goes to the access log (else the identity is
    /// not copied).
    pub(crate) log: bool,
    /// Index into [`DOOR_OUTCOMES`]; unset: the door's default.
    pub(crate) outcome: Option<usize>,
    /// Who, when a token was accepted (only when logged).
    pub(crate) identity: Option<AuthContext>,
    /// The client's address as the Authenticator resolved it (trusted
    /// proxies' `X-Forwarded-For`), when it differs from the peer.
    pub(crate) client_ip: Option<IpAddr>,
    /// The Authenticator's outcome (index into [`OUTCOMES`]) and time.
    pub(crate) auth: Option<(usize, Duration)>,
    /// The upstream's status (`None`: no response) and time.
    pub(crate) upstream: Option<(Option<StatusCode>, Duration)>,
    /// The request forward-auth was asked about (only when logged).
    pub(crate) original: Option<Logged>,
}

impl Note {
    /// The Authenticator decided `result` for a request it started on at
    /// `started`.
    pub(crate) fn decided(&mut self, result: &Result<Decision, Rejection>, started: Instant) {
        let name = match result {
            Ok(Decision::Authenticated(_)) => OUTCOMES[0],
            Ok(Decision::Public) => OUTCOMES[1],
            Err(rejection) => rejection.code(),
        };
        let outcome = outcome_index(name);
        self.outcome = Some(outcome);
        self.auth = Some((outcome.min(OUTCOMES.len() - 1), started.elapsed()));
        if self.log
            && let Ok(Decision::Authenticated(auth)) = result
        {
            self.identity = Some(auth.clone());
        }
    }

    /// The request was answered with `outcome` (one of [`DOOR_OUTCOMES`]).
    pub(crate) fn outcome(&mut self, outcome: &'static str) {
        self.outcome = Some(outcome_index(outcome));
    }

    /// The client's address, as resolved through trusted proxies; computed
    /// by `resolve` only when the line is logged.
    pub(crate) fn client_ip(&mut self, resolve: impl FnOnce() -> Option<IpAddr>) {
        if self.log {
            self.client_ip = resolve();
        }
    }

    /// Forward-auth: the request it decides on (`X-Original-URI`, …) is
    /// the one the access line names.
    pub(crate) fn original(&mut self, method: &Method, uri: &Uri) {
        if self.log {
            self.original = Some(Logged {
                method: method.clone(),
                uri: uri.clone(),
            });
        }
    }

    /// The upstream answered `status` (`None`: it did not) after `elapsed`.
    pub(crate) fn upstream(&mut self, status: Option<StatusCode>, elapsed: Duration) {
        self.upstream = Some((status, elapsed));
    }
}

/// The request line, kept for the access log.
#[derive(Debug)]
pub(crate) struct Logged {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
}

impl Note {
    /// A note for a request that is (`log`) or is not in the access log.
    pub(crate) fn new(log: bool) -> Self {
        Self {
            log,
            ..Self::default()
        }
    }
}

/// Writes the access line of a request of `door` answered with `status`
/// (the outcome an index into [`DOOR_OUTCOMES`]) after `elapsed`.
pub(crate) fn write_line(
    door: &str,
    note: Note,
    logged: Logged,
    outcome: usize,
    status: StatusCode,
    peer: SocketAddr,
    elapsed: Duration,
) {
    let Logged { method, uri } = note.original.unwrap_or(logged);
    let identity = note.identity.as_ref();
    let (upstream_status, upstream_ms) = match note.upstream {
        Some((status, took)) => (status.map(|s| s.as_u16()), Some(millis(took))),
        None => (None, None),
    };
    tracing::info!(
        target: "tokengate::access",
        door = %door,
        method = %method,
        path = %uri.path(),
        status = status.as_u16(),
        outcome = %DOOR_OUTCOMES.get(outcome).unwrap_or(&"invalid_request"),
        account_id = identity.map(|i| tracing::field::display(&i.account_id)),
        token_id = identity.map(|i| tracing::field::display(i.token_id)),
        client_ip = %note.client_ip.unwrap_or_else(|| peer.ip()),
        upstream_status,
        upstream_ms,
        duration_ms = millis(elapsed),
        "request"
    );
}

/// Milliseconds, to the microsecond.
fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
