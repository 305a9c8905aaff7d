//! Redis Sentinel (`redis+sentinel://`), against real processes: a master,
//! a replica and a `redis-sentinel`. A failover is followed without a
//! restart, by the store's connection and by the event reader; a master
//! demoted under an open connection is left for the new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokengate::{
    Authenticator, CreateTokenParams, CreatedToken, RedisStore, TokenError, TokenService,
};

use crate::support::{RedisServer, SentinelServer, free_port, test_config};

async fn create(service: &TokenService) -> CreatedToken {
    service
        .create_token(CreateTokenParams {
            account_id: "acme".into(),
            name: "sentinel".into(),
            expires_in_days: None,
            scopes: Default::default(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            quota: None,
            rate_limit: None,
        })
        .await
        .unwrap()
}

/// Whether `auth` admits a request bearing `token`.
async fn admits(auth: &Authenticator, token: &str) -> bool {
    crate::support::check_token(auth, token).await.is_ok()
}

/// Waits until `replica` holds every key `master` holds, so a failover
/// loses nothing (replication is asynchronous).
async fn wait_for_replication(master: &RedisServer, replica: &RedisServer) {
    async fn keys(server: &RedisServer) -> Vec<String> {
        let mut keys: Vec<String> = server.connection().await.keys("*").await.unwrap();
        keys.sort();
        keys
    }
    let expected = keys(master).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(replica).await != expected {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The master is killed; Sentinel promotes the replica. The same service,
/// never rebuilt, validates again within 10 s of the promotion (failing
/// closed meanwhile), writes to the new master, and its Authenticator's
/// event reader, which followed too, drops a token revoked there by another
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_followed_without_a_restart() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let sentinel = SentinelServer::start("m", &master);
    sentinel.wait_for_replica("m").await;

    // A sentinel that is down comes first: the next one is asked.
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/m",
        free_port(),
        sentinel.port()
    );
    let mut config = test_config();
    // Cached tokens stay trusted for a minute even while the event reader
    // is cut off: only the reader can drop the revoked one in time.
    config.auth.cache.ttl = Duration::from_secs(60);
    config.auth.cache.degraded_ttl = Duration::from_secs(60);
    let store = RedisStore::connect(&url, &config.redis.key_prefix)
        .await
        .unwrap();
    let service = TokenService::from_config(Arc::new(store), &config.security);
    let auth = Authenticator::new(service.clone(), &config.auth).unwrap();

    let token = create(&service).await;
    let token = token.token.expose_secret().to_owned();
    service.validate_token(&token).await.unwrap();
    let other = create(&service).await;
    assert!(admits(&auth, other.token.expose_secret()).await);
    wait_for_replication(&master, &replica).await;

    master.stop();
    let killed = Instant::now();
    while sentinel.master_port("m").await != Some(replica.port()) {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "Sentinel did not promote the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let promoted = Instant::now();
    eprintln!("promoted {:?} after the kill", promoted - killed);

    loop {
        match service.validate_token(&token).await {
            Ok(auth) => {
                assert_eq!(auth.account_id, "acme");
                break;
            }
            // Fails closed meanwhile: an outage, not a bad token.
            Err(TokenError::Store(e)) => {
                assert!(
                    promoted.elapsed() < Duration::from_secs(10),
                    "still failing 10 s after the promotion: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("after the failover: {e:?}"),
        }
    }
    eprintln!(
        "validating again {:?} after the promotion",
        promoted.elapsed()
    );

    // Writes go to the new master.
    let created = create(&service).await;
    let mut new_master = replica.connection().await;
    let stored: bool = new_master
        .exists(format!("tokengate:token:{}", created.info.id))
        .await
        .unwrap();
    assert!(stored, "the new token is not on the new master");

    // Another process revokes on the new master: the event reader, now
    // reading there, drops the cached token.
    let elsewhere = TokenService::new(Arc::new(
        RedisStore::connect(&replica.url(), "tokengate:")
            .await
            .unwrap(),
    ));
    elsewhere.revoke_token(other.info.id, "acme").await.unwrap();
    let revoked = Instant::now();
    while admits(&auth, other.token.expose_secret()).await {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the revocation on the new master did not reach the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The master is demoted to a replica while the store's connection to it
/// stays open (as after a partition heals): its writes get `READONLY`.
/// The store asks the sentinels again and sends the write to the new
/// master, so the caller sees no error.
#[tokio::test]
async fn a_demoted_master_is_left_for_the_new_one() {
    let old = RedisServer::start();
    let new = RedisServer::start_replica_of(&old);
    let sentinel = SentinelServer::start("m", &old);
    sentinel.wait_for_replica("m").await;
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port());
    let config = test_config();
    let store = RedisStore::connect(&url, "tokengate:").await.unwrap();
    let service = TokenService::from_config(Arc::new(store), &config.security);
    let first = create(&service).await;
    wait_for_replication(&old, &new).await;

    // Swap the roles by hand, then point the sentinel at the new master.
    sentinel.command(&["REMOVE", "m"]).await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut new.connection().await)
        .await
        .unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(new.port())
        .query_async(&mut old.connection().await)
        .await
        .unwrap();
    let port = new.port().to_string();
    sentinel
        .command(&["MONITOR", "m", "127.0.0.1", &port, "1"])
        .await;

    // The first write after the swap reaches the old master, now read-only,
    // and is sent again to the new one.
    let second = create(&service).await;
    let errors: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut old.connection().await)
        .await
        .unwrap();
    assert!(
        errors.contains("errorstat_READONLY") || errors.contains("errorstat_LOADING"),
        "the write did not go to the demoted master first: {errors}"
    );
    let mut conn = new.connection().await;
    for id in [first.info.id, second.info.id] {
        let stored: bool = conn.exists(format!("tokengate:token:{id}")).await.unwrap();
        assert!(stored, "token {id} is not on the new master");
    }
    service
        .validate_token(second.token.expose_secret())
        .await
        .unwrap();
}

/// A Sentinel URL whose master name no sentinel knows fails at start-up
/// with an error that names the cause and hides the password.
#[tokio::test]
async fn an_unknown_master_name_fails_at_start_up() {
    let master = RedisServer::start();
    let sentinel = SentinelServer::start("m", &master);
    let url = format!(
        "redis+sentinel://:s3cret@127.0.0.1:{}/other",
        sentinel.port()
    );
    let err = RedisStore::connect(&url, "tokengate:")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Master with given name not found"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// The same through a real `tokengate serve`: after the promotion, the
/// running process (never restarted) creates a token on the new master and
/// admits it through its proxy within 10 s.
#[cfg(feature = "server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokengate_serve_follows_a_failover() {
    use crate::support::procs::Replica;
    use crate::support::upstream::Upstream;
    use http::StatusCode;

    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let sentinel = SentinelServer::start("m", &master);
    sentinel.wait_for_replica("m").await;
    let upstream = Upstream::start().await;
    let url = format!("redis+sentinel://127.0.0.1:{}/m", sentinel.port());
    let tokengate = Replica::start(&url, &upstream.url(), "");
    let mint = || async {
        let reply = tokengate.create(r#"{"name": "failover"}"#).await;
        (reply.status == StatusCode::CREATED)
            .then(|| reply.json()["token"].as_str().unwrap().to_owned())
    };
    let tokengate = &tokengate;
    let get = |token: String| async move { tokengate.get(&token).await.status };
    let before = mint().await.expect("created before the failover");
    assert_eq!(get(before).await, StatusCode::OK);
    wait_for_replication(&master, &replica).await;

    master.stop();
    let killed = Instant::now();
    while sentinel.master_port("m").await != Some(replica.port()) {
        assert!(killed.elapsed() < Duration::from_secs(30), "no promotion");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let promoted = Instant::now();
    loop {
        if let Some(token) = mint().await
            && get(token).await == StatusCode::OK
        {
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "tokengate serve did not follow the failover within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("serving again {:?} after the promotion", promoted.elapsed());
}
