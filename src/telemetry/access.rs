//! What `serve` records of every request it answers: one access-log line
//! (`[log] access`, target `tokengate::access`) and the HTTP metrics
//! (`crate::telemetry::metrics`), from one [`Note`] the front door fills in as it
//! goes. docs/reference/http-contract.md, "Access log", lists the fields;
//! docs/reference/metrics.md the metrics.
//!
//! Never logged: the token, `Authorization`, any header, the query string
//! (a token may travel in it: `[sources] query_param`) or a body.

use std::fmt::Display;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode, Uri};

use super::door::DoorOutcome;
use crate::auth::{Decision, Outcome, Rejection};
use crate::service::AuthContext;

/// What a front door learnt about one request, for the access log and the
/// metrics. Filled in by the door, read once the response is ready.
#[derive(Debug, Default)]
pub(crate) struct Note {
    /// Whether this request goes to the access log (else the identity is
    /// not copied).
    pub(crate) log: bool,
    /// How the request ended; unset: the door's default.
    pub(crate) outcome: Option<DoorOutcome>,
    /// Who, when a token was accepted (only when logged).
    pub(crate) identity: Option<AuthContext>,
    /// The client's address as the Authenticator resolved it (trusted
    /// proxies' `X-Forwarded-For`), when it differs from the peer.
    pub(crate) client_ip: Option<IpAddr>,
    /// The Authenticator's outcome and time.
    pub(crate) auth: Option<(Outcome, Duration)>,
    /// The upstream's status (`None`: no response) and time.
    pub(crate) upstream: Option<(Option<StatusCode>, Duration)>,
    /// The request forward-auth was asked about (only when logged).
    pub(crate) original: Option<Logged>,
}

impl Note {
    /// The Authenticator decided `result` for a request it started on at
    /// `started`.
    pub(crate) fn decided(&mut self, result: Result<&Decision, &Rejection>, started: Instant) {
        let outcome = Outcome::of(result);
        self.outcome = Some(DoorOutcome::Auth(outcome));
        self.auth = Some((outcome, started.elapsed()));
        if self.log
            && let Ok(Decision::Authenticated(auth)) = result
        {
            self.identity = Some(auth.clone());
        }
    }

    /// The request was answered with `outcome`.
    pub(crate) fn outcome(&mut self, outcome: DoorOutcome) {
        self.outcome = Some(outcome);
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

/// The access log's writer. A line is formatted on the worker that
/// answered the request, as `tracing`'s human or JSON formatter would write
/// it (same timestamp, level and target), into a buffer shared by the
/// workers; the buffer goes to stderr in one write every
/// [`FLUSH_EVERY`], or at once past [`FLUSH_BYTES`]. Going through
/// `tracing` instead costs microseconds of CPU per request, a large share of
/// the proxy's (docs/design/measurements.md, "Access log, metrics and TLS").
#[derive(Debug)]
pub(crate) struct AccessLog {
    json: bool,
    buffer: Mutex<Vec<u8>>,
}

/// How long a line may wait in the buffer.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this large is written at once.
const FLUSH_BYTES: usize = 64 * 1024;

impl AccessLog {
    /// A writer of human lines, or of JSON objects (`json`).
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            buffer: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
        }
    }

    /// Writes what the buffer holds to stderr.
    pub(crate) fn flush(&self) {
        let lines = std::mem::take(&mut *self.lock());
        write_out(&lines);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // Only appends happen under the lock: a poisoned buffer holds whole
        // lines at worst.
        self.buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the access line of a request of `door` answered with `status`
    /// and `outcome` after `elapsed`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &self,
        door: &str,
        note: Note,
        logged: Logged,
        outcome: DoorOutcome,
        status: StatusCode,
        peer: SocketAddr,
        elapsed: Duration,
    ) {
        let Logged { method, uri } = note.original.unwrap_or(logged);
        let line = Line {
            door,
            method: method.as_str(),
            path: uri.path(),
            status: status.as_u16(),
            outcome: outcome.as_str(),
            identity: note.identity.as_ref(),
            client_ip: note.client_ip.unwrap_or_else(|| peer.ip()),
            upstream: note.upstream,
            elapsed,
        };
        // Formatted outside the lock, into this thread's own buffer.
        let full = LINE.with_borrow_mut(|text| {
            text.clear();
            let timestamp = Timestamp::now();
            // Writing into a Vec cannot fail.
            let _ = if self.json {
                line.json(text, timestamp)
            } else {
                line.human(text, timestamp)
            };
            let mut buffer = self.lock();
            buffer.extend_from_slice(text);
            (buffer.len() >= FLUSH_BYTES).then(|| std::mem::take(&mut *buffer))
        });
        if let Some(lines) = full {
            write_out(&lines);
        }
    }
}

thread_local! {
    /// The line being formatted.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The current second, formatted (`2026-11-27T08:23:00`): the calendar
    /// arithmetic runs once a second per thread, not per line.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Now, in RFC 3339 with microseconds, as `tracing`'s formatter writes it.
struct Timestamp {
    micros: u32,
    second: u64,
}

impl Timestamp {
    fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            micros: since.subsec_micros(),
            second: since.as_secs(),
        }
    }
}

impl Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != self.second {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(self.second);
                // `2026-11-27T08:23:00Z`, without its `Z`.
                *text = humantime::format_rfc3339_seconds(at).to_string();
                text.pop();
                *second = self.second;
            }
            write!(f, "{text}.{:06}Z", self.micros)
        })
    }
}

fn write_out(lines: &[u8]) {
    if !lines.is_empty() {
        // Nowhere to report a failed write of the log itself.
        let _ = std::io::stderr().lock().write_all(lines);
    }
}

/// One access line's fields (docs/reference/http-contract.md, "Access log").
struct Line<'a> {
    door: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    outcome: &'a str,
    identity: Option<&'a AuthContext>,
    client_ip: IpAddr,
    upstream: Option<(Option<StatusCode>, Duration)>,
    elapsed: Duration,
}

impl Line<'_> {
    /// As `tracing_subscriber::fmt`'s default format.
    fn human(&self, out: &mut Vec<u8>, timestamp: impl Display) -> std::io::Result<()> {
        write!(
            out,
            "{timestamp}  INFO tokengate::access: request door={} method={} path={} status={} outcome={}",
            self.door, self.method, self.path, self.status, self.outcome
        )?;
        if let Some(identity) = self.identity {
            write!(
                out,
                " account_id={} token_id={}",
                identity.account_id, identity.token_id
            )?;
        }
        write!(out, " client_ip={}", self.client_ip)?;
        if let Some((status, took)) = self.upstream {
            if let Some(status) = status {
                write!(out, " upstream_status={}", status.as_u16())?;
            }
            write!(out, " upstream_ms={}", millis(took))?;
        }
        writeln!(out, " duration_ms={}", millis(self.elapsed))
    }

    /// As `tracing_subscriber::fmt`'s JSON format: the fields under
    /// `"fields"`.
    fn json(&self, out: &mut Vec<u8>, timestamp: impl Display) -> std::io::Result<()> {
        let text = |out: &mut Vec<u8>, value: &str| {
            serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)
        };
        write!(
            out,
            r#"{{"timestamp":"{timestamp}","level":"INFO","fields":{{"message":"request","door":"#
        )?;
        text(out, self.door)?;
        out.extend_from_slice(br#","method":"#);
        text(out, self.method)?;
        out.extend_from_slice(br#","path":"#);
        text(out, self.path)?;
        write!(out, r#","status":{},"outcome":"#, self.status)?;
        text(out, self.outcome)?;
        if let Some(identity) = self.identity {
            out.extend_from_slice(br#","account_id":"#);
            text(out, &identity.account_id)?;
            write!(out, r#","token_id":"{}""#, identity.token_id)?;
        }
        write!(out, r#","client_ip":"{}""#, self.client_ip)?;
        if let Some((status, took)) = self.upstream {
            if let Some(status) = status {
                write!(out, r#","upstream_status":{}"#, status.as_u16())?;
            }
            write!(out, r#","upstream_ms":{}"#, millis(took))?;
        }
        writeln!(
            out,
            r#","duration_ms":{}}},"target":"tokengate::access"}}"#,
            millis(self.elapsed)
        )
    }
}

/// Milliseconds, to the microsecond (`0.533`): integers, which format
/// faster than a float.
fn millis(elapsed: Duration) -> impl Display {
    struct Millis(u128);
    impl Display for Millis {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}.{:03}", self.0 / 1_000, self.0 % 1_000)
        }
    }
    Millis(elapsed.as_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_times_read_as_tracings() {
        for (second, micros) in [(0, 0), (1_795_765_786, 77_720), (1_795_765_787, 999_999)] {
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_secs(second)
                + Duration::from_micros(micros.into());
            let ours = Timestamp { micros, second }.to_string();
            assert_eq!(ours, humantime::format_rfc3339_micros(at).to_string());
        }
        assert_eq!(millis(Duration::from_micros(533)).to_string(), "0.533");
        assert_eq!(
            millis(Duration::from_micros(12_345_678)).to_string(),
            "12345.678"
        );
        assert_eq!(millis(Duration::from_nanos(999)).to_string(), "0.000");
    }
}
