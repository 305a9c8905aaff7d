//! Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! - `tokengate_requests_total{outcome}`: decisions of the Authenticator;
//! - `tokengate_cache_{hits,misses}_total`, `tokengate_cache_entries`;
//! - `tokengate_bcrypt_verifications_total`, `tokengate_bcrypt_queue_depth`;
//! - `tokengate_store_latency_seconds{op}`: a histogram per store operation;
//! - `tokengate_last_accessed_{flushes_total,pending}`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::{Authenticator, OUTCOMES};
use crate::store::{
    Lease, LimitReport, LimitState, Quota, RevocationSink, RevokeOutcome, StoreError, TokenRecord,
    TokenStore,
};
use crate::token::TokenId;

type Labels = Vec<(String, String)>;

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

impl StoreLatency {
    fn observe(&self, op: &str, started: Instant) {
        self.0
            .get_or_create(&vec![("op".to_owned(), op.to_owned())])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A store that times every call of the store it wraps.
#[derive(Debug)]
pub(crate) struct TimedStore<S: ?Sized> {
    inner: Arc<S>,
    latency: StoreLatency,
}

impl<S: TokenStore + ?Sized> TimedStore<S> {
    /// Wraps `inner`, recording into `latency`.
    pub(crate) fn new(inner: Arc<S>, latency: StoreLatency) -> Self {
        Self { inner, latency }
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.latency.observe($op, started);
        result
    }};
}

#[async_trait]
impl<S: TokenStore + ?Sized> TokenStore for TimedStore<S> {
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        timed!(self, "insert", self.inner.insert(record))
    }
    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        timed!(self, "get", self.inner.get(id))
    }
    async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        timed!(self, "list", self.inner.list_by_account(account_id))
    }
    async fn revoke(
        &self,
        id: TokenId,
        account_id: &str,
        at: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        timed!(self, "revoke", self.inner.revoke(id, account_id, at))
    }
    async fn lease_credits(
        &self,
        id: TokenId,
        want: u64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        timed!(
            self,
            "lease_credits",
            self.inner.lease_credits(id, want, now)
        )
    }
    async fn return_credits(
        &self,
        id: TokenId,
        credits: u64,
        period: u64,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "return_credits",
            self.inner.return_credits(id, credits, period)
        )
    }
    async fn set_quota(
        &self,
        id: TokenId,
        account_id: &str,
        quota: Option<Quota>,
        at: i64,
    ) -> Result<bool, StoreError> {
        timed!(
            self,
            "set_quota",
            self.inner.set_quota(id, account_id, quota, at)
        )
    }
    async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError> {
        timed!(self, "touch", self.inner.touch(batch))
    }
    async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError> {
        timed!(self, "remove_dead", self.inner.remove_dead(cutoff))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, "ping", self.inner.ping())
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn shares_limits(&self) -> bool {
        self.inner.shares_limits()
    }
    async fn reconcile_limits(
        &self,
        reports: &[LimitReport],
    ) -> Result<Vec<LimitState>, StoreError> {
        timed!(
            self,
            "reconcile_limits",
            self.inner.reconcile_limits(reports)
        )
    }
    fn watch_revocations(
        &self,
        sink: std::sync::Weak<dyn RevocationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.watch_revocations(sink)
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
        for (outcome, count) in OUTCOMES.iter().zip(stats.outcomes) {
            let labels = [("outcome", *outcome)];
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

/// Everything `/metrics` shows.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
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
        Self { registry }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}
