//! `GET /metrics` of a real `tokengate serve` (on a real redis-server, in
//! front of a real upstream), and the two documents built on it:
//! docs/guide/grafana-dashboard.json queries only metrics the server serves, and
//! docs/reference/metrics.md names every metric it serves.

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;

use crate::support::http;
use crate::support::stack::Stack;

const DASHBOARD: &str = "docs/guide/grafana-dashboard.json";
const REFERENCE: &str = "docs/reference/metrics.md";

/// Redis, an upstream, and tokengate with all four listeners: the proxy,
/// forward-auth, the admin API and `[metrics] listen`.
async fn metrics_stack() -> Stack {
    Stack::builder().metrics().start().await
}

/// Mints a token through the admin API, then asks the proxy once with
/// it and once without, and forward-auth once with it.
async fn traffic(stack: &Stack) {
    let minted = stack.create(r#"{"name": "metrics"}"#).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{:?}", minted.body);
    let token = minted.json()["token"].as_str().unwrap().to_owned();

    let good = stack.get(&token).await;
    assert_eq!(good.status, StatusCode::OK, "{:?}", good.body);
    let proxy = format!("http://127.0.0.1:{}/orders", stack.proxy);
    let bare = http("GET", &proxy, &[], "").await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    let checked = http(
        "GET",
        &format!("http://127.0.0.1:{}/", stack.forward_auth),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(checked.status, StatusCode::OK, "{:?}", checked.body);
}

/// `GET /metrics` on the metrics listener: the exposition text.
async fn scrape(stack: &Stack) -> String {
    let reply = http("GET", &metrics_url(stack, "/metrics"), &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

fn metrics_url(stack: &Stack, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", stack.metrics.unwrap())
}
#[tokio::test]
async fn the_metrics_listener_serves_the_counters_of_every_front_door() {
    let stack = metrics_stack().await;
    traffic(&stack).await;

    let reply = http("GET", &metrics_url(&stack, "/metrics"), &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content-type: {content_type}"
    );
    // This listener serves /metrics and nothing else, answering in JSON.
    let other = http(
        "GET",
        &metrics_url(&stack, "/v1/accounts/acme/tokens"),
        &[],
        "",
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.json()["error"], "not_found", "{:?}", other.body);

    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let build_info = format!(
        "tokengate_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    for (series, expected) in [
        (
            "tokengate_http_requests_total{door=\"proxy\",outcome=\"authenticated\"}",
            1.0,
        ),
        (
            "tokengate_http_requests_total{door=\"proxy\",outcome=\"missing_token\"}",
            1.0,
        ),
        (
            "tokengate_http_requests_total{door=\"forward_auth\",outcome=\"authenticated\"}",
            1.0,
        ),
        (
            "tokengate_http_requests_total{door=\"admin\",outcome=\"admin\"}",
            1.0,
        ),
        (
            "tokengate_http_responses_total{door=\"proxy\",class=\"2xx\"}",
            1.0,
        ),
        (
            "tokengate_http_responses_total{door=\"proxy\",class=\"4xx\"}",
            1.0,
        ),
        (
            "tokengate_http_responses_total{door=\"proxy\",class=\"5xx\"}",
            0.0,
        ),
        ("tokengate_upstream_responses_total{class=\"2xx\"}", 1.0),
        ("tokengate_upstream_responses_total{class=\"5xx\"}", 0.0),
        ("tokengate_upstream_duration_seconds_count", 1.0),
        (
            "tokengate_auth_duration_seconds_count{outcome=\"authenticated\"}",
            2.0,
        ),
        ("tokengate_requests_total{outcome=\"authenticated\"}", 2.0),
        (
            "tokengate_http_request_duration_seconds_count{door=\"proxy\",outcome=\"authenticated\"}",
            1.0,
        ),
        (&build_info, 1.0),
    ] {
        assert_eq!(
            sample(&text, series),
            Some(expected),
            "{series} in:\n{text}"
        );
    }
    for gauge in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = sample(&text, gauge).unwrap_or_else(|| panic!("no {gauge} in:\n{text}"));
        assert!(value >= 0.0, "{gauge} {value}");
    }
    let rss = sample(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "resident memory of {rss} bytes");
    let (open, max) = (
        sample(&text, "process_open_fds").unwrap(),
        sample(&text, "process_max_fds").unwrap(),
    );
    assert!(open > 0.0 && open < max, "{open} open fds of {max}");
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() {
    let stack = metrics_stack().await;
    traffic(&stack).await;
    let served = Served::parse(&scrape(&stack).await);

    let dashboard = read(DASHBOARD);
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    check_import_form(&dashboard);
    let queried = queried_metrics(&dashboard);
    assert!(
        queried.len() >= 15,
        "{DASHBOARD} queries only {} metrics: {queried:?}",
        queried.len()
    );
    let missing = served.missing(&queried);
    assert!(
        missing.is_empty(),
        "{DASHBOARD} queries metrics that `tokengate serve` does not serve:\n  {}\n\
         served series names: {:?}",
        missing.join("\n  "),
        served.series_names()
    );
}

#[tokio::test]
async fn the_reference_names_every_metric_served() {
    let stack = metrics_stack().await;
    traffic(&stack).await;
    let served = Served::parse(&scrape(&stack).await);
    let documented: BTreeSet<String> = metric_names(&read(REFERENCE)).into_iter().collect();
    let undocumented: Vec<_> = served
        .families
        .keys()
        .filter(|family| !documented.contains(*family))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{REFERENCE} does not describe {undocumented:?}"
    );
}

/// The checker itself: a misspelt name, a histogram queried without its
/// `_bucket`, and a counter without its `_total` are all reported.
#[test]
fn the_dashboard_check_names_what_is_not_served() {
    let served = Served::parse(
        "# TYPE tokengate_cache_hits_total counter\ntokengate_cache_hits_total 3\n\
         # TYPE tokengate_auth_duration_seconds histogram\n\
         tokengate_auth_duration_seconds_count{outcome=\"public\"} 0\n\
         # TYPE process_open_fds gauge\nprocess_open_fds 9.0\n",
    );
    let dashboard = serde_json::json!({
        "panels": [{"targets": [
            {"expr": "rate(tokengate_cache_hits_total{job=~\"$job\"}[5m]) / process_open_fds"},
            {"expr": "histogram_quantile(0.99, sum by (le) (rate(tokengate_auth_duration_seconds_bucket[5m])))"},
            {"expr": "rate(tokengate_cache_hit_total[5m])"},
        ]}],
        "templating": {"list": [
            {"query": {"query": "label_values(tokengate_auth_duration_seconds, instance)"}},
            {"definition": "label_values(tokengate_cache_hits, job)"},
        ]},
    });
    let queried = queried_metrics(&dashboard);
    assert_eq!(
        served.missing(&queried),
        [
            "tokengate_auth_duration_seconds (a histogram: query its _bucket, _sum or _count)",
            "tokengate_cache_hit_total",
            "tokengate_cache_hits (a counter: query tokengate_cache_hits_total)",
        ]
    );
}

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of the sample `series` (name and labels exactly as served).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// The families of an exposition (`# TYPE` lines) and their types.
struct Served {
    families: BTreeMap<String, String>,
}

impl Served {
    fn parse(text: &str) -> Self {
        let families = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| {
                let (name, kind) = rest.split_once(' ')?;
                Some((name.to_owned(), kind.trim().to_owned()))
            })
            .collect();
        Self { families }
    }

    /// The names Prometheus stores: a counter's `_total` (whether its
    /// `# TYPE` line carries the suffix or not), a histogram's `_bucket`,
    /// `_sum` and `_count`, a gauge's own name.
    fn series_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (family, kind) in &self.families {
            match kind.as_str() {
                "counter" => {
                    let base = family.strip_suffix("_total").unwrap_or(family);
                    names.insert(format!("{base}_total"));
                }
                "histogram" | "summary" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    names.insert(family.clone());
                }
            }
        }
        names
    }

    /// The names of `queried` that no served series carries, each with a
    /// hint when it names a family in another form.
    fn missing(&self, queried: &BTreeSet<String>) -> Vec<String> {
        let names = self.series_names();
        queried
            .iter()
            .filter(|name| !names.contains(*name))
            .map(|name| {
                let total = format!("{name}_total");
                match self.families.get(name.as_str()) {
                    Some(kind) if kind == "histogram" => {
                        format!("{name} (a histogram: query its _bucket, _sum or _count)")
                    }
                    _ if names.contains(&total) => {
                        format!("{name} (a counter: query {total})")
                    }
                    _ => name.clone(),
                }
            })
            .collect()
    }
}

/// Every metric name in the PromQL of `dashboard`: panel targets' `expr`
/// and template variables' `query` / `definition`, at any depth (rows
/// nest panels).
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut queries = Vec::new();
    collect_queries(dashboard, &mut queries);
    queries.iter().flat_map(|q| metric_names(q)).collect()
}

fn collect_queries<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => out.push(q),
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_queries(item, out);
            }
        }
        _ => {}
    }
}

/// The identifiers of `query` (`[A-Za-z0-9_:]` runs) that are tokengate's
/// or the process's metrics.
fn metric_names(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("tokengate_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Grafana's Import asks for the data source (`__inputs`), and every
/// panel and target uses it.
fn check_import_form(dashboard: &serde_json::Value) {
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{DASHBOARD}: no DS_PROMETHEUS input in {inputs:?}"
    );
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    assert!(!panels.is_empty(), "{DASHBOARD} has no panels");
    for panel in panels {
        let title = &panel["title"];
        let targets = panel["targets"].as_array();
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title}"
        );
        let targets = targets.unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title}: a target without expr"
            );
        }
    }
}

fn collect_panels<'a>(panels: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        collect_panels(&panel["panels"], out);
    }
}

/// Every outcome a door can end a request with has its series from the
/// start: all ten of the Authenticator's at the proxy and forward-auth
/// (scope and allowlist refusals included), and the proxy's `health`.
#[tokio::test]
async fn every_door_has_a_series_for_every_outcome_it_can_report() {
    const OUTCOMES: [&str; 10] = [
        "authenticated",
        "public",
        "missing_token",
        "invalid_token",
        "invalid_request",
        "rate_limited",
        "usage_exceeded",
        "unavailable",
        "insufficient_scope",
        "ip_not_allowed",
    ];
    let stack = metrics_stack().await;
    let text = scrape(&stack).await;
    let mut missing = Vec::new();
    for door in ["proxy", "forward_auth"] {
        for outcome in OUTCOMES {
            let series =
                format!("tokengate_http_requests_total{{door=\"{door}\",outcome=\"{outcome}\"}}");
            if sample(&text, &series).is_none() {
                missing.push(series);
            }
        }
    }
    let health = "tokengate_http_requests_total{door=\"proxy\",outcome=\"health\"}";
    if sample(&text, health).is_none() {
        missing.push(health.to_owned());
    }
    assert!(missing.is_empty(), "no series for:\n{}", missing.join("\n"));
}
