//! Redis Cluster (`redis+cluster://`), against a real cluster of three
//! masters (`redis-server --cluster-enabled yes` joined by `redis-cli
//! --cluster create`): the store's operations, the hash-tagged layout, the
//! repair of an interrupted creation, a master restart; and two real
//! `tokengate serve` replicas with the CLI (docs/design/redis-layout.md, "Redis
//! Cluster").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use redis::AsyncCommands;
use tokengate::{
    Authenticator, CreateTokenParams, CreatedToken, QuotaParams, RedisStore, TokenService,
    TokenStatus,
};

use crate::support::procs::Replica;
use crate::support::upstream::Upstream;
use crate::support::{DAY, RedisCluster, TestClock, check_token, test_config};

async fn create(service: &TokenService, days: Option<u32>, quota: Option<u64>) -> CreatedToken {
    service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "cluster".into(),
            expires_in_days: days,
            scopes: Default::default(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            quota: quota.map(|remaining| QuotaParams {
                remaining,
                refill: None,
            }),
            rate_limit: None,
        })
        .await
        .unwrap()
}

async fn cluster_connection(cluster: &RedisCluster) -> redis::cluster_async::ClusterConnection {
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port()))
        .collect();
    redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

async fn service(cluster: &RedisCluster, clock: Arc<TestClock>) -> TokenService {
    let store = RedisStore::connect(&cluster.url(), "tokengate:")
        .await
        .unwrap();
    TokenService::new(Arc::new(store))
        .with_bcrypt_cost(4)
        .with_clock(clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_on_a_cluster_and_records_spread_over_its_nodes() {
    let cluster = RedisCluster::start();
    let clock = TestClock::new();
    let service = service(&cluster, clock.clone()).await;
    let mut conn = cluster_connection(&cluster).await;

    // Created: records spread over the masters (a slot per token), the
    // indexes together in one slot.
    let mut created = Vec::new();
    for i in 0..12 {
        created.push(create(&service, (i % 2 == 0).then_some(30), None).await);
    }
    let nodes: BTreeSet<usize> = created
        .iter()
        .map(|c| cluster.node_of(&format!("tokengate:token:{{{}}}", c.info.id)))
        .collect();
    assert!(nodes.len() >= 2, "all records on one node: {nodes:?}");
    let listed = service.list_tokens("acme").await.unwrap();
    assert_eq!(listed.len(), 12);
    let pending: usize = conn.hlen("{tokengate:}pending").await.unwrap();
    assert_eq!(pending, 0, "every creation finished");
    let expiring: usize = conn.zcard("{tokengate:}expiry").await.unwrap();
    assert_eq!(expiring, 6);

    // Validated by another process's Authenticator; a revocation reaches it.
    let replica = service_on_other_connection(&cluster, clock.clone()).await;
    let auth = Authenticator::new(replica.clone(), &test_config().auth).unwrap();
    let token = created[1].token.expose_secret().to_owned();
    check_token(&auth, &token).await.unwrap();
    let revoked = service
        .revoke_token(created[1].info.id, "acme")
        .await
        .unwrap();
    assert_eq!(revoked.status, TokenStatus::Revoked);
    let started = Instant::now();
    while check_token(&auth, &token).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the revocation did not reach the other replica within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A quota: exactly its credits, across two Authenticators.
    let metered = create(&service, None, Some(3)).await;
    let local = Authenticator::new(service.clone(), &test_config().auth).unwrap();
    let secret = metered.token.expose_secret();
    let mut admitted = 0;
    for i in 0..8 {
        let auth = if i % 2 == 0 { &auth } else { &local };
        admitted += usize::from(check_token(auth, secret).await.is_ok());
    }
    assert_eq!(admitted, 3);

    // Cleanup: revoked and expired tokens leave the record and every index.
    clock.advance(40 * DAY);
    let removed = service.cleanup_expired(Duration::ZERO).await.unwrap();
    assert_eq!(removed, 7, "six expired and one revoked");
    let left = service.list_tokens("acme").await.unwrap();
    assert_eq!(left.len(), 6, "five that never expire and the metered one");
    let expiring: usize = conn.zcard("{tokengate:}expiry").await.unwrap();
    assert_eq!(expiring, 0);
    let record: bool = conn
        .exists(format!("tokengate:token:{{{}}}", created[0].info.id))
        .await
        .unwrap();
    assert!(!record);
}

/// A creation interrupted between its index half and its record (the
/// process died): cleanup takes the id out of the account's index; one
/// interrupted after its record is finished instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_repairs_interrupted_creations() {
    let cluster = RedisCluster::start();
    let clock = TestClock::new();
    let service = service(&cluster, clock.clone()).await;
    let mut conn = cluster_connection(&cluster).await;
    let now = tokengate::Clock::now(&*clock);
    // Interrupted before the record.
    let ghost = "6f1c0d2e-0000-4000-8000-000000000001";
    let _: () = conn
        .hset("{tokengate:}pending", ghost, format!("{}:acme", now - 120))
        .await
        .unwrap();
    let _: () = conn.sadd("{tokengate:}account:acme", ghost).await.unwrap();
    // Interrupted after the record: a real token whose commit is undone.
    let kept = create(&service, Some(1), None).await;
    let id = kept.info.id.to_string();
    let _: () = conn
        .hset("{tokengate:}pending", &id, format!("{}:acme", now - 120))
        .await
        .unwrap();
    let _: () = conn.zrem("{tokengate:}expiry", &id).await.unwrap();
    // A creation under way right now (noted by the system clock) is left
    // alone.
    let young = "6f1c0d2e-0000-4000-8000-000000000002";
    let system_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let _: () = conn
        .hset("{tokengate:}pending", young, format!("{system_now}:acme"))
        .await
        .unwrap();

    assert_eq!(service.cleanup_expired(Duration::ZERO).await.unwrap(), 0);
    let listed: BTreeSet<String> = conn.smembers("{tokengate:}account:acme").await.unwrap();
    assert!(!listed.contains(ghost), "{listed:?}");
    assert!(listed.contains(&id));
    let score: Option<i64> = conn.zscore("{tokengate:}expiry", &id).await.unwrap();
    assert_eq!(score, kept.info.expires_at);
    let pending: Vec<String> = conn.hkeys("{tokengate:}pending").await.unwrap();
    assert_eq!(pending, [young]);
}

async fn service_on_other_connection(
    cluster: &RedisCluster,
    clock: Arc<TestClock>,
) -> TokenService {
    service(cluster, clock).await
}

/// Two real replicas on the cluster, with the CLI beside them; then one
/// master restarts (its data saved, as in a rolling restart) and both keep
/// working without a restart of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_the_cli_work_on_a_cluster_and_survive_a_master_restart() {
    let mut cluster = RedisCluster::start();
    let upstream = Upstream::start().await;
    let replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::start(&cluster.url(), &upstream.url(), ""))
        .collect();
    let mint = |body: &'static str| {
        let replica = &replicas[0];
        async move {
            let reply = replica.create(body).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            let json = reply.json();
            (
                json["token"].as_str().unwrap().to_owned(),
                json["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (token, id) = mint(r#"{"name": "ci"}"#).await;
    for replica in &replicas {
        let reply = replica.get(&token).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.seen("x-token-id"), [id.as_str()]);
    }

    // Revoked with the CLI: refused by both replicas within 1 s.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .arg("--redis-url")
            .arg(cluster.url())
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let out = cli(&["token", "revoke", "--account", "acme", "--id", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    for replica in &replicas {
        while replica.get(&token).await.status != StatusCode::UNAUTHORIZED {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a replica still admits the revoked token"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let listed = cli(&["token", "list", "--account", "acme", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["status"], "revoked");

    // A quota of 4, spent through both replicas: exactly 4 admitted.
    let (metered, _) = mint(r#"{"name": "metered", "quota": {"remaining": 4}}"#).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(replicas[i % 2].get(&metered).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        4,
        "{statuses:?}"
    );
    // Cleanup from the CLI removes the revoked token.
    let out = cli(&["token", "cleanup", "--retention-days", "0", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["removed"],
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A master restarts: every replica validates (a fresh token, so a store
    // read) and creates again within 10 s, without being restarted.
    let (fresh, _) = mint(r#"{"name": "after"}"#).await;
    let fresh_id = tokengate::token::parse(&fresh).unwrap();
    let node = cluster.node_of(&format!("tokengate:token:{{{fresh_id}}}"));
    cluster.nodes[node].restart_with_data();
    cluster.wait_until_ok();
    let restarted = Instant::now();
    for replica in &replicas {
        while replica.get(&fresh).await.status != StatusCode::OK {
            assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "no validation within 10 s of the master's restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "validated through both replicas {:?} after the master came back",
        restarted.elapsed()
    );
    mint(r#"{"name": "after the restart"}"#).await;
}

/// `tokengate migrate` copies one Redis's tokens to a cluster: the same
/// tokens work there, revoked ones stay revoked, quotas come along; running
/// it again brings what changed on the source meanwhile, and then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_redis_to_a_cluster() {
    let single = crate::support::RedisServer::start();
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(&single.url(), "tokengate:")
        .await
        .unwrap();
    let source = TokenService::new(Arc::new(store)).with_bcrypt_cost(4);
    let active = create(&source, Some(30), None).await;
    let revoked = create(&source, None, None).await;
    source.revoke_token(revoked.info.id, "acme").await.unwrap();
    let metered = create(&source, None, Some(7)).await;

    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args([
                "--redis-url",
                &single.url(),
                "migrate",
                "--to",
                &cluster.url(),
            ])
            .env_clear()
            .output()
            .unwrap()
    };
    let late = create(&source, None, None).await;
    let run = |expected: &'static str| {
        let out = migrate();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("Copied 4 token(s) from redis://127.0.0.1:"),
            "{stdout}"
        );
        assert!(stdout.contains(expected), "{stdout}");
    };
    run("(0 changed since an earlier copy");
    // Changed on the source between two runs (the switch-over is not
    // instant): the second run brings the changes.
    source.revoke_token(late.info.id, "acme").await.unwrap();
    let quota = QuotaParams {
        remaining: 5,
        refill: None,
    };
    source
        .set_quota(metered.info.id, "acme", Some(quota))
        .await
        .unwrap();
    run("(2 changed since an earlier copy");
    run("(0 changed since an earlier copy");

    let target = service(&cluster, TestClock::new()).await;
    let listed = target.list_tokens("acme").await.unwrap();
    let statuses: Vec<(String, TokenStatus)> = listed
        .iter()
        .map(|t| (t.id.to_string(), t.status))
        .collect();
    assert_eq!(statuses.len(), 4);
    assert!(statuses.contains(&(revoked.info.id.to_string(), TokenStatus::Revoked)));
    assert!(statuses.contains(&(late.info.id.to_string(), TokenStatus::Revoked)));
    let auth = Authenticator::new(target.clone(), &test_config().auth).unwrap();
    check_token(&auth, active.token.expose_secret())
        .await
        .unwrap();
    assert!(
        check_token(&auth, revoked.token.expose_secret())
            .await
            .is_err()
    );
    let quota = target
        .get_token(metered.info.id, "acme")
        .await
        .unwrap()
        .quota
        .unwrap();
    assert_eq!(quota.remaining, 5);
    // The revoked token is in the cluster's expiry index, for cleanup.
    let mut conn = cluster_connection(&cluster).await;
    let score: Option<i64> = conn
        .zscore("{tokengate:}expiry", revoked.info.id.to_string())
        .await
        .unwrap();
    assert!(score.is_some());
}
