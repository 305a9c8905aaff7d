//! Test support: a real `redis-server` per test, on a free loopback port,
//! without persistence, stopped when the handle drops; and a clock tests move.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokengate::{Clock, MemoryStore, RedisStore, TokenService, TokenStore};

#[cfg(feature = "server")]
pub mod procs;
#[cfg(feature = "server")]
pub mod stack;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod upstream;

/// Cheapest bcrypt cost: these tests are about behaviour, not hashing speed.
pub const TEST_BCRYPT_COST: u32 = 4;

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// More `redis-server` arguments (a TLS port and its files).
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts redis-server on a free port and waits until it answers PING.
    /// Panics (fails the test, never skips it) when redis-server is missing.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                extra: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 tries");
    }

    /// Starts redis-server with a TLS port as well, serving `tls`'s server
    /// certificate; returns it and the TLS port (the plain port stays, for
    /// the test's own looks).
    pub fn start_tls(tls: &TlsFiles) -> (Self, u16) {
        let tls_port = free_port();
        let path = |name: &str| tls.path(name).display().to_string();
        let mut server = Self {
            child: None,
            port: free_port(),
            extra: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path("redis.crt"),
                "--tls-key-file".into(),
                path("redis.key"),
                "--tls-ca-cert-file".into(),
                path("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        assert!(server.spawn(), "redis-server with TLS did not start");
        (server, tls_port)
    }

    /// Starts redis-server as a replica of `master` (`--replicaof`).
    pub fn start_replica_of(master: &RedisServer) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            extra: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
        };
        assert!(server.spawn(), "redis-server as a replica did not start");
        server
    }

    /// Starts an empty node of a Redis Cluster (`--cluster-enabled yes`),
    /// its node file and snapshot in the temporary directory.
    pub fn start_cluster_node() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let nodes = format!("tokengate-test-nodes-{port}.conf");
            let _ = std::fs::remove_file(std::env::temp_dir().join(&nodes));
            let mut server = Self {
                child: None,
                port,
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    nodes,
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
            };
            let _ = std::fs::remove_file(std::env::temp_dir().join(server.rdb_file()));
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a cluster node on a free port after 5 tries");
    }

    /// Stops it gracefully, its data saved (`SHUTDOWN SAVE`), and starts it
    /// again on the same port with that data, as a rolling restart does.
    pub fn restart_with_data(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "save"])
            .output();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.restart();
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]), empty.
    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            // A replica (the Sentinel tests) writes its master's data to a
            // file first: in the temporary directory, not the working one.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--dbfilename", &self.rdb_file()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); install it (apt-get install -y redis-server): \
                     these tests need a real Redis"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers_ping() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                // Lost the port to someone else: try another.
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    fn answers_ping(&self) -> bool {
        answers_ping(self.port)
    }

    /// Where a replica keeps what it loaded, in the temporary directory.
    fn rdb_file(&self) -> String {
        format!("tokengate-test-{}.rdb", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `CLIENT KILL TYPE normal` from the test's own connection: every other
    /// client connection (not pub/sub ones) is closed under its owner, as on
    /// a Redis restart or a server-side idle timeout.
    pub async fn kill_clients(&self) {
        let mut conn = self.connection().await;
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    /// `SAVE`: writes its data to its dump file now, so a SIGKILL
    /// ([`RedisServer::stop`]) followed by [`RedisServer::restart`] brings
    /// it back with that data, as a crash of a persisting Redis does.
    pub fn save(&self) {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "save"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).trim() == "OK",
            "SAVE: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The ids of the client connections whose last command was `command`
    /// (lowercase, as `CLIENT LIST` shows it: `xread`), from `CLIENT LIST`.
    pub async fn clients_running(&self, command: &str) -> Vec<u64> {
        let mut conn = self.connection().await;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        list.lines()
            .filter(|line| {
                line.split(' ')
                    .any(|field| field.strip_prefix("cmd=") == Some(command))
            })
            .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .filter_map(|id| id.parse().ok())
            .collect()
    }

    /// `CLIENT KILL ID {id}`: closes that one client connection under its
    /// owner.
    pub async fn kill_client(&self, id: u64) {
        let mut conn = self.connection().await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(killed, 1, "no client with id {id}");
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: its connections stay
    /// open and answer nothing, as across a network partition.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection for looking at what is in Redis.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key with its content rendered as text, for whole-database checks.
    pub async fn dump(&self) -> Vec<(String, String)> {
        let mut conn = self.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if kind == "stream" {
                let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let lines: Vec<String> = entries
                    .into_iter()
                    .map(|(id, fields)| format!("{id} {}", fields.join(" ")))
                    .collect();
                out.push((key, lines.join("\n")));
                continue;
            }
            let mut cmd = match kind.as_str() {
                "hash" => redis::cmd("HGETALL"),
                "set" => redis::cmd("SMEMBERS"),
                "zset" => redis::cmd("ZRANGE"),
                "string" => redis::cmd("GETRANGE"),
                other => panic!("unexpected key type {other} for {key}"),
            };
            cmd.arg(&key);
            match kind.as_str() {
                "zset" => cmd.arg(0).arg(-1).arg("WITHSCORES"),
                "string" => cmd.arg(0).arg(-1),
                _ => &mut cmd,
            };
            let value: Vec<String> = match kind.as_str() {
                "string" => vec![cmd.query_async(&mut conn).await.unwrap()],
                _ => cmd.query_async(&mut conn).await.unwrap(),
            };
            out.push((key, value.join("\n")));
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(std::env::temp_dir().join(self.rdb_file()));
    }
}

/// A Redis Cluster of three masters (no replicas), made of real
/// `redis-server --cluster-enabled yes` nodes joined by `redis-cli
/// --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them, and waits until every slot is served.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); install it (apt-get install -y redis-tools)")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Waits until every node says `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            loop {
                let out = Command::new("redis-cli")
                    .args(["-p", &node.port().to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Which node holds `key` (by `CLUSTER KEYSLOT` and `CLUSTER SLOTS`),
    /// as an index into `nodes`.
    pub fn node_of(&self, key: &str) -> usize {
        let port = self.nodes[0].port().to_string();
        let slot: u16 = String::from_utf8(
            Command::new("redis-cli")
                .args(["-p", &port, "cluster", "keyslot", key])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        for (i, node) in self.nodes.iter().enumerate() {
            let nodes = String::from_utf8(
                Command::new("redis-cli")
                    .args(["-p", &node.port().to_string(), "cluster", "nodes"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            let mine = nodes.lines().find(|l| l.contains("myself")).unwrap();
            let serves = mine.split_whitespace().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                return i;
            }
        }
        panic!("no node serves slot {slot}");
    }
}

/// A `redis-sentinel` child process on 127.0.0.1 monitoring one master,
/// quick to fail over (down after 1 s), stopped when the handle drops.
pub struct SentinelServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl SentinelServer {
    /// Starts redis-sentinel monitoring `master` as `name` (quorum 1) and
    /// waits until it answers. Panics (fails the test, never skips it) when
    /// redis-sentinel is missing.
    pub fn start(name: &str, master: &RedisServer) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let port = free_port();
        // Sentinel rewrites its config file as it learns: its own directory.
        let dir = std::env::temp_dir().join(format!(
            "tokengate-sentinel-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n",
                dir = dir.display(),
                master = master.port(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-sentinel ({e}); install it (apt-get install -y \
                     redis-sentinel): these tests need a real Sentinel"
                )
            });
        let sentinel = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(
                Instant::now() < deadline,
                "redis-sentinel did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The port of the master it names `name` now.
    pub async fn master_port(&self, name: &str) -> Option<u16> {
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(name)
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        addr.map(|(_, port)| port)
    }

    /// Waits until it knows a replica of `name` that is in sync, so a
    /// failover has a candidate.
    pub async fn wait_for_replica(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(name)
                .query_async(&mut self.connection().await)
                .await
                .unwrap();
            let ready = replicas.iter().any(|r| {
                r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Sentinel sees no replica: {replicas:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `SENTINEL {args}` (e.g. `REMOVE m`).
    pub async fn command(&self, args: &[&str]) {
        let _: redis::Value = redis::cmd("SENTINEL")
            .arg(args)
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A loopback port that was free a moment ago.
///
/// Drawn from 20000–31999, below Linux's ephemeral range (32768–60999):
/// a port the kernel hands out for `bind(0)` can be taken by the next
/// outgoing connection (an HTTP client, a Redis connection) before the
/// server that was meant to get it binds it. A counter keeps the tests of
/// one binary apart; the process id spreads concurrent binaries.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(397);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (offset.wrapping_add(n) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

/// Sends `request` as raw bytes on a new connection to `port` and reads
/// the reply until the server closes the connection (send `Connection:
/// close`), for up to 5 s.
pub async fn raw(port: u16, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// What `auth` decides on a `GET /` bearing `token` (no socket peer).
pub async fn check_token(
    auth: &tokengate::Authenticator,
    token: &str,
) -> Result<(), tokengate::Rejection> {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (method, uri) = (http::Method::GET, http::Uri::from_static("/"));
    auth.check(tokengate::AuthRequest {
        method: &method,
        uri: &uri,
        headers: &headers,
        peer: None,
    })
    .await
    .map(drop)
}

/// A clock that stands still until a test moves it.
#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl TestClock {
    /// Starts at a fixed, realistic time (2026-01-01T00:00:00Z).
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(1_767_225_600)))
    }

    /// Moves time forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub const DAY: i64 = 86_400;

/// A TokenService on one of the two stores, with a test clock.
pub struct Harness {
    pub service: TokenService,
    pub clock: Arc<TestClock>,
    /// The Redis behind the service, when it is the Redis store.
    pub redis: Option<RedisServer>,
}

impl Harness {
    /// On a fresh redis-server.
    pub async fn redis() -> Self {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), "tokengate:")
            .await
            .unwrap();
        Self::with_store(Arc::new(store), Some(server))
    }

    /// On the embedded in-memory store.
    /// The test clock's time.
    pub fn clock_now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn memory() -> Self {
        Self::with_store(Arc::new(MemoryStore::new()), None)
    }

    fn with_store(store: Arc<dyn TokenStore>, redis: Option<RedisServer>) -> Self {
        let clock = TestClock::new();
        let service = TokenService::new(store)
            .with_bcrypt_cost(TEST_BCRYPT_COST)
            .with_clock(clock.clone());
        Self {
            service,
            clock,
            redis,
        }
    }
}

impl RedisServer {
    /// How many times Redis ran `command` (lowercase, e.g. "hgetall") since
    /// start or the last [`RedisServer::reset_stats`], from INFO commandstats.
    pub async fn calls(&self, command: &str) -> u64 {
        self.all_calls()
            .await
            .into_iter()
            .find(|(name, _)| name == command)
            .map_or(0, |(_, calls)| calls)
    }

    /// Every command Redis ran since start or the last reset, with its
    /// count (lowercase names, `client|kill` style for subcommands).
    pub async fn all_calls(&self) -> Vec<(String, u64)> {
        let mut conn = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                let calls = rest.split(',').next()?.parse().ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }

    /// Zeroes the command counters.
    pub async fn reset_stats(&self) {
        let mut conn = self.connection().await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// What the library tests configure: the store, the service and the
/// Authenticator, each with its own section type.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    /// `[redis]` (only its key prefix is used: the URL is the test server's).
    pub redis: tokengate::RedisConfig,
    /// `[security]`.
    pub security: tokengate::SecurityConfig,
    /// The Authenticator's sections.
    pub auth: tokengate::AuthConfig,
}

/// A config for tests: bcrypt cost 4; everything else at its default.
pub fn test_config() -> TestConfig {
    let mut config = TestConfig::default();
    config.security.bcrypt_cost = TEST_BCRYPT_COST;
    config
}

/// A TokenService over a new connection to `server`, configured by `config`.
pub async fn redis_service(server: &RedisServer, config: &TestConfig) -> TokenService {
    let store = RedisStore::connect(&server.url(), &config.redis.key_prefix)
        .await
        .unwrap();
    TokenService::from_config(Arc::new(store), &config.security)
}

/// Creates a token that never expires and returns its plaintext.
pub async fn new_token(service: &TokenService, account: &str) -> String {
    new_scoped_token(service, account, &[]).await
}

/// Creates a token with these scopes that never expires and returns its
/// plaintext.
pub async fn new_scoped_token(service: &TokenService, account: &str, scopes: &[&str]) -> String {
    service
        .create_token(tokengate::CreateTokenParams {
            account_id: account.into(),
            name: "test".into(),
            scopes: tokengate::Scopes::new(scopes.iter().copied()).unwrap(),
            allowed_ips: Default::default(),
            meta: Default::default(),
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

/// What an HTTP client saw.
#[derive(Debug)]
pub struct HttpReply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// For the upstream's echo: every value it received for `name`
    /// (compared exactly, so other spellings are separate names).
    pub fn seen(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .filter(|p| p[0] == name)
                    .map(|p| p[1].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For the upstream's echo: every header name it received.
    pub fn seen_names(&self) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|p| p[0].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 request with a fresh connection.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    HttpReply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A CA, a certificate for 127.0.0.1 signed by it, and a second CA that
/// signed nothing, generated with `openssl` in a temporary directory; more
/// certificates on demand ([`TlsFiles::issue`]).
pub struct TlsFiles {
    dir: std::path::PathBuf,
}

impl TlsFiles {
    /// Generates them; fails (never skips) when openssl is missing.
    pub fn generate() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tokengate-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let run = |args: &[&str]| openssl(&dir, args);
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN=tokengate test {ca}"),
            ]);
        }
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "redis.crt",
        ]);
        Self { dir }
    }

    /// A file in the directory: `ca.crt`, `other-ca.crt`, `redis.crt`,
    /// `redis.key`, and `{name}.crt` / `{name}.key` of each issued one.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    /// Issues `{name}.crt` and `{name}.key` (ECDSA P-256) for 127.0.0.1
    /// and `localhost`, with `CN={name}`, signed by `ca` (`"ca"` or
    /// `"other-ca"`).
    pub fn issue(&self, name: &str, ca: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subject = format!("/CN={name}");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subject,
            ],
        );
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
    }
}

/// Runs `openssl` in `dir`; fails (never skips) when it is missing.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it (apt-get install -y openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
