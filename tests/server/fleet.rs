//! A fleet: several real `tokengate serve` replicas on one real Redis,
//! each driven by its own client at full speed. Limits and quotas must
//! hold for the fleet as a whole (docs/reference/rate-limits.md).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};

use crate::support::procs::{ADMIN_KEY, Replica};
use crate::support::upstream::Upstream;
use crate::support::{RedisServer, http};

const REPLICAS: usize = 4;

/// Redis, an upstream, and `REPLICAS` tokengates with a proxy and an admin
/// listener each.
struct Fleet {
    redis: RedisServer,
    _upstream: Upstream,
    replicas: Vec<Replica>,
}

impl Fleet {
    /// `extra` goes at the end of every replica's config.
    async fn start(extra: &str) -> Self {
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let replicas = (0..REPLICAS)
            .map(|_| Replica::start(&redis.url(), &upstream.url(), extra))
            .collect();
        Self {
            redis,
            _upstream: upstream,
            replicas,
        }
    }

    /// Creates a token through the first replica's admin API.
    async fn create(&self, body: &str) -> (String, String) {
        let reply = self.replicas[0].create(body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let json = reply.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Every replica's proxy driven by its own client, as fast as it
    /// answers, for `duration`: the count of each (status, error code).
    async fn drive(&self, token: &str, duration: Duration) -> HashMap<(u16, String), u64> {
        let drivers = self.replicas.iter().map(|replica| {
            let proxy = replica.proxy;
            let token = token.to_owned();
            tokio::spawn(async move { drive(proxy, &token, duration).await })
        });
        let mut total = HashMap::new();
        for counts in futures_util::future::join_all(drivers).await {
            for (key, n) in counts.unwrap() {
                *total.entry(key).or_default() += n;
            }
        }
        total
    }
}

/// Sends requests through one proxy, two at a time on kept-alive
/// connections, until `duration` has passed.
async fn drive(proxy: u16, token: &str, duration: Duration) -> HashMap<(u16, String), u64> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url = format!("http://127.0.0.1:{proxy}/orders");
    let until = Instant::now() + duration;
    let lanes = (0..2).map(|_| {
        let (client, url, token) = (client.clone(), url.clone(), token.to_owned());
        async move {
            let mut counts: HashMap<(u16, String), u64> = HashMap::new();
            while Instant::now() < until {
                let request = http::Request::get(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let code = if status == 200 {
                    String::new()
                } else {
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                *counts.entry((status, code)).or_default() += 1;
            }
            counts
        }
    });
    let mut total = HashMap::new();
    for counts in futures_util::future::join_all(lanes).await {
        for (key, n) in counts {
            *total.entry(key).or_default() += n;
        }
    }
    total
}

fn count(counts: &HashMap<(u16, String), u64>, status: u16, code: &str) -> u64 {
    counts
        .get(&(status, code.to_owned()))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_share_one_rate_limit() {
    const BURST: u64 = 20;
    let fleet = Fleet::start(&format!(
        "[rate_limit]\nper_token_requests = 200\nper_token_period = \"1s\"\nper_token_burst = {BURST}\n"
    ))
    .await;
    let (token, id) = fleet.create(r#"{"name": "load"}"#).await;
    let counts = fleet.drive(&token, Duration::from_secs(10)).await;
    let admitted = count(&counts, 200, "");
    let limited = count(&counts, 429, "rate_limited");
    eprintln!(
        "fleet-wide limit 200/s, 4 replicas, 10 s: {admitted} admitted, {limited} limited ({counts:?})"
    );
    assert_eq!(
        admitted + limited,
        counts.values().sum::<u64>(),
        "only 200s and 429s: {counts:?}"
    );
    // Alone, each replica would admit 2,000: 8,000 in all.
    assert!(
        (1_800..=2_200 + BURST).contains(&admitted),
        "{admitted} admitted: not within 10% of 2,000 (+ the burst of {BURST})"
    );
    assert!(
        limited > admitted,
        "the clients must have pushed past the limit"
    );
    // The fleet's count lives in Redis (docs/design/redis-layout.md).
    let counted: Option<u64> = redis::cmd("HGET")
        .arg(format!("tokengate:ratelimit:token:{id}"))
        .arg("counted")
        .query_async(&mut fleet.redis.connection().await)
        .await
        .unwrap();
    let counted = counted.expect("the limiter's key in Redis");
    assert!(
        counted <= admitted && counted + 400 >= admitted,
        "Redis counted {counted} of {admitted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_never_overspent_by_four_replicas() {
    let fleet = Fleet::start("[rate_limit]\nper_token_requests = 0\n").await;
    let (token, id) = fleet
        .create(r#"{"name": "metered", "quota": {"remaining": 1000}}"#)
        .await;
    let counts = fleet.drive(&token, Duration::from_secs(5)).await;
    let admitted = count(&counts, 200, "");
    let exceeded = count(&counts, 429, "usage_exceeded");
    eprintln!("quota 1,000, 4 replicas, 5 s: {admitted} admitted, {exceeded} refused ({counts:?})");
    assert_eq!(admitted, 1_000, "{counts:?}");
    assert_eq!(
        admitted + exceeded,
        counts.values().sum::<u64>(),
        "{counts:?}"
    );
    assert!(
        exceeded > 1_000,
        "the clients must have pushed past the quota"
    );
    let admin = fleet.replicas[1].admin;
    let url = format!("http://127.0.0.1:{admin}/v1/accounts/acme/tokens/{id}");
    let auth = format!("Bearer {ADMIN_KEY}");
    let info = http("GET", &url, &[("authorization", &auth)], "").await;
    assert_eq!(info.json()["quota"]["remaining"], 0, "{:?}", info.body);

    // Set to refill 300 every 2 s, starting empty: refused until the first
    // refill, then exactly 300 per period, whichever replicas serve them.
    let reply = http(
        "PUT",
        &format!("{url}/quota"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"remaining": 0, "refill": {"amount": 300, "interval": "2s"}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["quota"]["refill"]["interval"], "2s");
    let set_at = reply.json()["quota"]["refilled_at"].as_i64().unwrap();
    let counts = fleet.drive(&token, Duration::from_secs(3)).await;
    let admitted = count(&counts, 200, "");
    // Refills come on whole seconds from the change: the drive may see one
    // or two, and end anywhere in the second one's spending.
    let info = http("GET", &url, &[("authorization", &auth)], "").await;
    let refills = (info.json()["quota"]["refilled_at"].as_i64().unwrap() - set_at) / 2;
    eprintln!("refill 300 / 2 s, 3 s: {admitted} admitted in {refills} refill(s) ({counts:?})");
    assert!((1..=2).contains(&refills), "refills seen in 3 s: {refills}");
    assert!(
        (300..=300 * u64::try_from(refills).unwrap()).contains(&admitted),
        "300 per refill, never more, and the first one spent: {admitted} in {refills}"
    );
    // Over the limit: 429 usage_exceeded with Retry-After until the refill.
    let refused = fleet.replicas[2].get(&token).await;
    if refused.status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(refused.json()["error"], "usage_exceeded");
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    }
    // The refusals are counted by their own metric.
    let metrics = http(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", fleet.replicas[0].admin),
        &[],
        "",
    )
    .await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let refusals: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tokengate_quota_exceeded_total "))
        .unwrap_or_else(|| panic!("no quota metric in:\n{text}"))
        .parse()
        .unwrap();
    assert!(refusals > 0);
}
