//! Prometheus metrics, served at `GET /metrics` on the admin listener and,
//! with `[metrics] listen`, on a listener of their own. Every name is in
//! docs/reference/metrics.md (and docs/guide/grafana-dashboard.json is built on them):
//!
//! - `tokengate_http_requests_total{door,outcome}` and
//!   `tokengate_http_request_duration_seconds{door,outcome}`: every request
//!   of every front door, by the access log's outcome;
//!   `tokengate_http_responses_total{door,class}`: by the status sent;
//! - `tokengate_upstream_responses_total{class}`,
//!   `tokengate_upstream_duration_seconds`: the proxy's upstream;
//! - `tokengate_auth_duration_seconds{outcome}`: the Authenticator's
//!   decision, as the proxy and forward-auth see it;
//! - `tokengate_requests_total{outcome}`: decisions of the Authenticator;
//! - `tokengate_cache_{hits,misses}_total`, `tokengate_cache_entries`;
//! - `tokengate_bcrypt_verifications_total`, `tokengate_bcrypt_queue_depth`;
//! - `tokengate_store_latency_seconds{op}`: a histogram per store operation;
//! - `tokengate_last_accessed_{flushes_total,pending}`;
//! - `tokengate_build_info{version}` and the `process_*` metrics (Linux).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use serde::{Deserialize, Serialize};

use crate::auth::{Authenticator, InvalidReason, Outcome};
use crate::settings::InvalidConfig;
use crate::store::StoreObserver;
use crate::telemetry::door::{DoorKind, DoorOutcome};
use crate::tls::listener_tls;
use crate::wire::{self, Body};

type Labels = Vec<(String, String)>;

/// `[metrics]`: a listener for Prometheus alone (`GET /metrics`), so a
/// scraper needs neither the admin API's port nor its key. The admin
/// listener serves `/metrics` as well.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where it listens (`"0.0.0.0:9464"`); unset: off.
    #[serde(with = "crate::settings::listen")]
    pub listen: Option<SocketAddr>,
    /// A certificate chain (PEM) to serve HTTPS with; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

listener_tls!(MetricsConfig, "metrics");

impl MetricsConfig {
    /// Both TLS files or neither.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.tls().validate()
    }
}

/// Store latency, per operation.
#[derive(Clone, Debug)]
pub(crate) struct StoreLatency(Family<Labels, Histogram>);

impl Default for StoreLatency {
    fn default() -> Self {
        // 100 µs … ~3.3 s: Redis on loopback answers in well under 1 ms; the
        // top buckets catch timeouts and reconnects.
        Self(Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        }))
    }
}

/// The store's calls, timed by [`Observed`](crate::store::Observed).
impl StoreObserver for StoreLatency {
    fn observed(&self, op: &'static str, took: Duration) {
        self.0
            .get_or_create(&vec![("op".to_owned(), op.to_owned())])
            .observe(took.as_secs_f64());
    }
}

/// Reads the Authenticator's counters at each scrape.
#[derive(Debug)]
struct AuthCollector(Authenticator);

impl Collector for AuthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let mut family = encoder.encode_descriptor(
            "tokengate_requests",
            "Authentication decisions, by outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, count) in Outcome::ALL.iter().zip(stats.outcomes) {
            let labels = [("outcome", outcome.as_str())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "tokengate_invalid_tokens",
            "Invalid tokens presented, by reason (the client only sees invalid_token)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in InvalidReason::ALL.iter().zip(stats.invalid_tokens) {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let counters = [
            (
                "tokengate_quota_exceeded",
                "Requests refused because the token's usage quota was used up",
                stats.quota_exceeded,
            ),
            (
                "tokengate_cache_hits",
                "Validations answered from the cache",
                stats.cache_hits,
            ),
            (
                "tokengate_cache_misses",
                "Validations that asked the store",
                stats.cache_misses,
            ),
            (
                "tokengate_bcrypt_verifications",
                "bcrypt verifications run",
                stats.bcrypt_verifications,
            ),
            (
                "tokengate_last_accessed_flushes",
                "Last-accessed batches written",
                stats.last_accessed_flushes,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "tokengate_cache_entries",
                "Entries in the validation cache",
                stats.cache_entries,
            ),
            (
                "tokengate_bcrypt_queue_depth",
                "Verifications waiting for a bcrypt slot",
                stats.bcrypt_queue_depth as u64,
            ),
            (
                "tokengate_last_accessed_pending",
                "Last-accessed ids waiting to be written",
                stats.last_accessed_pending as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Upstream response classes: `1xx` … `5xx`, and `error` (no response:
/// refused, reset, timed out).
const UPSTREAM_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// 100 µs … ~3.3 s, doubling: a cached decision takes microseconds, a
/// bcrypt one tens of milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// 100 µs … ~52 s, doubling: a request and its upstream may take as long
/// as the API does (uploads, slow reports).
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

/// Response status classes, as `tokengate_http_responses_total{class}`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The families of the HTTP metrics, registered once.
#[derive(Debug, Clone)]
struct HttpFamilies {
    requests: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    upstream_responses: Family<Labels, Counter>,
    upstream_duration: Histogram,
    auth_durations: Family<Labels, Histogram>,
}

impl Default for HttpFamilies {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            durations: Family::new_with_constructor(request_histogram),
            upstream_responses: Family::default(),
            upstream_duration: request_histogram(),
            auth_durations: Family::new_with_constructor(latency_histogram),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One front door's handles into the HTTP metrics, looked up once: a
/// request pays atomic adds and a histogram's uncontended lock, never a
/// label lookup or an allocation.
#[derive(Debug)]
pub(crate) struct DoorMetrics {
    requests: Vec<(Counter, Histogram)>,
    responses: Vec<Counter>,
    upstream: Vec<Counter>,
    upstream_duration: Histogram,
    auth: Vec<Histogram>,
}

impl DoorMetrics {
    /// A request of this door ended with `outcome` after `elapsed`.
    pub(crate) fn request(
        &self,
        outcome: DoorOutcome,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        if let Some((count, duration)) = self.requests.get(outcome.index()) {
            count.inc();
            duration.observe(elapsed.as_secs_f64());
        }
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }

    /// The Authenticator decided `outcome` in `elapsed`.
    pub(crate) fn auth(&self, outcome: Outcome, elapsed: Duration) {
        if let Some(histogram) = self.auth.get(outcome.index()) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    /// The upstream answered `status` (`None`: it did not) after `elapsed`.
    pub(crate) fn upstream(&self, status: Option<http::StatusCode>, elapsed: Duration) {
        let class = status.map_or(5, |s| usize::from(s.as_u16() / 100).clamp(1, 5) - 1);
        self.upstream[class].inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }
}

/// `tokengate_build_info`, and the `process_*` metrics of this process,
/// read from `/proc` at each scrape (Linux only; elsewhere left out).
#[derive(Debug)]
struct ProcessCollector {
    started: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1);
        let mut family = encoder.encode_descriptor(
            "tokengate_build_info",
            "The running build: 1, with its version",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;

        let gauges = [
            (
                "process_start_time_seconds",
                "Start time of the process since the unix epoch",
                Some(self.started),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size",
                process::resident_bytes(),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                process::open_fds(),
            ),
            (
                "process_max_fds",
                "Most open file descriptors allowed",
                process::max_fds(),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(seconds) = process::cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent",
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says, the way the Prometheus clients of other
/// languages report it (`process_*`).
mod process {
    /// USER_HZ: `/proc` counts CPU time in these ticks, 100 per second on
    /// every Linux architecture.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field
        // 3: utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let mut fields = rest.split_whitespace().skip(11);
        let user: f64 = fields.next()?.parse().ok()?;
        let system: f64 = fields.next()?.parse().ok()?;
        Some((user + system) / TICKS_PER_SECOND)
    }

    pub(super) fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    pub(super) fn open_fds() -> Option<f64> {
        // The count includes the directory handle read_dir holds.
        let count = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(count.saturating_sub(1) as f64)
    }

    pub(super) fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    http: HttpFamilies,
}

impl Metrics {
    /// Metrics for this Authenticator and store-latency histogram.
    pub(crate) fn new(auth: Authenticator, latency: StoreLatency) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "tokengate_store_latency_seconds",
            "Token store call latency, by operation",
            latency.0,
        );
        registry.register_collector(Box::new(AuthCollector(auth)));
        let http = HttpFamilies::default();
        registry.register(
            "tokengate_http_requests",
            "Requests answered, by front door and outcome",
            http.requests.clone(),
        );
        registry.register(
            "tokengate_http_responses",
            "Responses sent, by front door and status class",
            http.responses.clone(),
        );
        registry.register(
            "tokengate_http_request_duration_seconds",
            "Time to answer a request (to the response headers), by front door and outcome",
            http.durations.clone(),
        );
        registry.register(
            "tokengate_upstream_responses",
            "The proxy's upstream responses, by status class (error: no response)",
            http.upstream_responses.clone(),
        );
        registry.register(
            "tokengate_upstream_duration_seconds",
            "Time from sending a request upstream to its response headers",
            http.upstream_duration.clone(),
        );
        registry.register(
            "tokengate_auth_duration_seconds",
            "Time the Authenticator took to decide, by outcome",
            http.auth_durations.clone(),
        );
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        registry.register_collector(Box::new(ProcessCollector { started }));
        Self { registry, http }
    }

    /// The handles of front door `door` (`proxy`, `forward_auth`, `admin`,
    /// `metrics`): its series exist from now on, at zero.
    pub(crate) fn door(&self, kind: DoorKind) -> DoorMetrics {
        let http = &self.http;
        let door = kind.as_str();
        // Indexed by outcome: the ones this door never reports are
        // detached handles, counted nowhere.
        let requests = DoorOutcome::all()
            .map(|outcome| {
                if !kind.reports(outcome) {
                    return (Counter::default(), request_histogram());
                }
                let key = labels(&[("door", door), ("outcome", outcome.as_str())]);
                (
                    http.requests.get_or_create(&key).clone(),
                    http.durations.get_or_create(&key).clone(),
                )
            })
            .collect();
        let auth = Outcome::ALL
            .iter()
            .map(|outcome| {
                if kind.authenticates() {
                    http.auth_durations
                        .get_or_create(&labels(&[("outcome", outcome.as_str())]))
                        .clone()
                } else {
                    latency_histogram()
                }
            })
            .collect();
        let upstream = UPSTREAM_CLASSES
            .iter()
            .map(|class| {
                if kind == DoorKind::Proxy {
                    http.upstream_responses
                        .get_or_create(&labels(&[("class", class)]))
                        .clone()
                } else {
                    Counter::default()
                }
            })
            .collect();
        let responses = STATUS_CLASSES
            .iter()
            .map(|class| {
                let key = labels(&[("door", door), ("class", class)]);
                http.responses.get_or_create(&key).clone()
            })
            .collect();
        DoorMetrics {
            requests,
            responses,
            upstream,
            upstream_duration: http.upstream_duration.clone(),
            auth,
        }
    }

    /// `GET /metrics` on the metrics listener; anything else is 404
    /// (405 for another method on `/metrics`).
    pub(crate) fn handle<B>(&self, request: &http::Request<B>) -> http::Response<Body> {
        if request.uri().path() != "/metrics" {
            return wire::error(
                http::StatusCode::NOT_FOUND,
                "not_found",
                "This listener serves GET /metrics only.",
            );
        }
        if !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
            return wire::error(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Use GET /metrics.",
            );
        }
        self.response()
    }

    /// The metrics as a response, in the text format Prometheus scrapes.
    pub(crate) fn response(&self) -> http::Response<Body> {
        let mut response = http::Response::new(wire::full(self.render()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}
