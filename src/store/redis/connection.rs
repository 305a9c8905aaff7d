//! How the Redis store reaches Redis: directly (`redis://`, `rediss://`),
//! through Redis Sentinel (`redis+sentinel://`), asking the sentinels which
//! node is the master each time it connects, so a failover is followed
//! without a restart (docs/design/redis-layout.md, "Connection"), or to a Redis
//! Cluster (`redis+cluster://`, see `cluster.rs`).
//!
//! The store holds a [`Connection`] for its commands and a [`Connector`] for
//! the event reader. Direct, they are redis-rs's own `ConnectionManager` and
//! `Client`, unchanged. Through Sentinel, redis-rs's `ConnectionManager`
//! cannot serve (it reconnects to one fixed address), so [`MasterConnection`]
//! does its job: it keeps one multiplexed connection to the master and, once
//! that connection is closed, fails, times out, or reaches a node that is no
//! longer the master (`READONLY`, `LOADING`), asks the sentinels again on the
//! next command; a command refused as not-the-master is sent once more, to
//! the new master.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, Value,
};

/// The scheme of a Sentinel URL.
pub(super) const SCHEME: &str = "redis+sentinel://";
/// TLS through Sentinel: recognised, to be refused with a clear message.
const TLS_SCHEME: &str = "rediss+sentinel://";
/// Sentinel's own port, for a host given without one.
pub(super) const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// After a failed attempt to find and reach the master, calls within this
/// long get the same error at once instead of each asking the sentinels
/// again: during a failover every request would otherwise queue for its own
/// lookup. Short, so a promotion is noticed within about this long.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether `url` names Sentinels rather than one Redis.
pub(super) fn is_sentinel_url(url: &str) -> bool {
    url.starts_with(SCHEME) || url.starts_with(TLS_SCHEME)
}

/// A parsed `redis+sentinel://[user:password@]host[:port][,host[:port]…]/master[/db]`.
/// The credentials and database are the master's; the sentinels are asked
/// without a password.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// Host and port of each sentinel, in the order given.
    pub(super) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub(super) master: String,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

impl SentinelUrl {
    /// Parses a Sentinel URL. The message of an error never contains the
    /// password.
    pub(super) fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with(TLS_SCHEME) {
            return Err(
                "rediss+sentinel:// (TLS through Sentinel) is not supported: use redis+sentinel:// \
                 on a private network, or rediss:// to one Redis"
                    .to_owned(),
            );
        }
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("a Sentinel URL starts with {SCHEME}"))?;
        // The last `@` ends the credentials, as in redact_url (a password's
        // own `@` should be written %40, but is not misread if it is not).
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut path = path.split('/');
        let master = path.next().unwrap_or_default();
        if master.is_empty() {
            return Err(format!(
                "no master name: {SCHEME}host:{DEFAULT_SENTINEL_PORT}[,host:port…]/mastername[/db]"
            ));
        }
        if !master
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"?#%".contains(&b))
        {
            return Err(format!(
                "master name {master:?}: printable ASCII without `?`, `#` or `%`"
            ));
        }
        let db = match (path.next(), path.next()) {
            (None | Some(""), None) => 0,
            (Some(db), None) => db
                .parse::<i64>()
                .ok()
                .filter(|&db| db >= 0)
                .ok_or_else(|| format!("database {db:?}: not a number"))?,
            _ => return Err("too many path segments: …/mastername[/db]".to_owned()),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| host_address(host, DEFAULT_SENTINEL_PORT, "sentinel"))
            .collect::<Result<Vec<_>, _>>()?;
        let (username, password) = credentials(userinfo)?;
        Ok(Self {
            sentinels,
            master: master.to_owned(),
            username,
            password,
            db,
        })
    }

    /// Sentinels and master name, for logs (no credentials).
    pub(super) fn label(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(host, port)| host_port(host, *port))
            .collect();
        format!("master {:?} via Sentinel {}", self.master, hosts.join(","))
    }
}

/// One `host[:port]` of a URL's comma-separated hosts (`what` names them in
/// errors: "sentinel", "node"); `[v6]:port` for IPv6.
pub(super) fn host_address(
    text: &str,
    default_port: u16,
    what: &str,
) -> Result<(String, u16), String> {
    let (host, port) = match text.rsplit_once(':') {
        // A colon inside brackets belongs to an IPv6 address, not a port.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (text, None),
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{what} {text:?}: the port must be 1–65535"))?,
    };
    if host.is_empty() {
        return Err(format!(
            "{what} {text:?}: no host (hosts are comma-separated)"
        ));
    }
    // redis-rs checks the host as it would in a redis:// URL (and takes the
    // brackets off an IPv6 address).
    match format!("redis://{host}:{port}").into_connection_info() {
        Ok(info) => match info.addr() {
            ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
            _ => Err(format!("{what} {text:?}: not a host")),
        },
        Err(e) => Err(format!("{what} {text:?}: {e}")),
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Username and password of a URL's `user:password@` part, decoded as
/// redis-rs decodes them in a `redis://` URL (percent-encoding), so every
/// form reads alike. The error never contains the password.
pub(super) fn credentials(
    userinfo: Option<&str>,
) -> Result<(Option<String>, Option<String>), String> {
    let Some(userinfo) = userinfo else {
        return Ok((None, None));
    };
    let info = format!("redis://{userinfo}@localhost")
        .into_connection_info()
        .map_err(|_| {
            "the credentials (user:password@) do not parse: percent-encode `@ : / ? #` in them"
                .to_owned()
        })?;
    let settings = info.redis_settings();
    Ok((
        settings.username().map(str::to_owned),
        settings.password().map(str::to_owned),
    ))
}

/// Asks the sentinels for the current master and connects to it.
pub(super) struct Sentinel {
    /// redis-rs's client keeps a connection to each sentinel it has asked;
    /// asking needs `&mut`, so lookups take turns (they are rare: one per
    /// reconnection).
    client: tokio::sync::Mutex<SentinelClient>,
    /// Bounds one lookup: redis-rs bounds each connection and reply, but
    /// not the walk over several sentinels.
    lookup_timeout: Duration,
    label: String,
    /// The master's database.
    db: i64,
    /// The master last connected to, to log when it changes.
    master: Mutex<Option<String>>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Sentinel {
    /// A client for the master `url` names (nothing is connected yet).
    pub(super) fn open(url: &str, lookup_timeout: Duration) -> RedisResult<Self> {
        let parsed = SentinelUrl::parse(url).map_err(|message| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a usable Sentinel URL",
                message,
            ))
        })?;
        let addresses = parsed
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(addresses, &parsed.master, SentinelServerType::Master)?
                .set_client_to_redis_db(parsed.db);
        if let Some(username) = &parsed.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &parsed.password {
            builder = builder.set_client_to_redis_password(password);
        }
        Ok(Self {
            client: tokio::sync::Mutex::new(builder.build()?),
            lookup_timeout,
            label: parsed.label(),
            db: parsed.db,
            master: Mutex::new(None),
        })
    }

    /// Asks the sentinels which node is the master (redis-rs checks that
    /// the node itself says so, with `ROLE`), and connects to it.
    pub(super) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let lookup = async { self.client.lock().await.async_get_client().await };
        let master = tokio::time::timeout(self.lookup_timeout, lookup)
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from the sentinels about the {}", self.label),
                ))
            })??;
        let address = master.get_connection_info().addr().to_string();
        let connection = master
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let mut last = lock(&self.master);
        if last.as_deref() != Some(address.as_str()) {
            tracing::info!(master = %address, sentinel = %self.label, "connected to the Redis master");
            *last = Some(address);
        }
        Ok(connection)
    }
}

/// A connection: the store's, for its commands, or the event reader's.
#[derive(Clone)]
pub(super) enum Connection {
    /// To one Redis, reconnecting by itself (redis-rs).
    Direct(ConnectionManager),
    /// To whichever node the sentinels name master.
    Sentinel(MasterConnection),
    /// To a Redis Cluster: each command to the node that holds its keys'
    /// slot, following redirections (redis-rs).
    Cluster(ClusterConnection),
    /// The event reader's: one connection, replaced when it breaks.
    Reader(MultiplexedConnection),
}

impl Connection {
    /// Whether commands on different hash slots must go separately (a
    /// pipeline or a script cannot span slots on a cluster).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Reader(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Reader(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Reader(conn) => conn.get_db(),
        }
    }
}

/// Opens the event reader's connections: each one, through Sentinel, to
/// the master of the moment.
#[derive(Clone, Debug)]
pub(super) enum Connector {
    /// One Redis.
    Direct(Box<redis::Client>),
    /// Whichever node the sentinels name master.
    Sentinel(Arc<Sentinel>),
    /// A Redis Cluster (the reader's own cluster connection, its blocking
    /// reads bounded by the reader's reply timeout).
    Cluster(Box<ClusterClient>),
}

impl Connector {
    /// A new connection.
    pub(super) async fn connect(&self, config: &AsyncConnectionConfig) -> RedisResult<Connection> {
        match self {
            Self::Direct(client) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Connection::Reader),
            Self::Sentinel(sentinel) => sentinel.connect(config).await.map(Connection::Reader),
            Self::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

/// A multiplexed connection to the master that moves to the new master
/// after a failover.
#[derive(Clone)]
pub(super) struct MasterConnection(Arc<Shared>);

struct Shared {
    sentinel: Arc<Sentinel>,
    config: AsyncConnectionConfig,
    state: Mutex<State>,
    /// One lookup at a time; callers that waited for it take its result.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The connection in use; `None` once it was found dead or demoted.
    conn: Option<MultiplexedConnection>,
    /// Counts connections made, so a failure on an old one does not throw
    /// away a newer one.
    generation: u64,
    /// Counts lookups, so callers that waited for one know it ran.
    attempts: u64,
    /// The last lookup's failure, and when.
    failed: Option<(Instant, RedisError)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding the lock; if something did, the
    // state is still a valid state.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MasterConnection {
    /// Connects to the current master (failing if there is none), with
    /// `config`'s timeouts for every later connection too.
    pub(super) async fn connect(
        sentinel: Arc<Sentinel>,
        config: AsyncConnectionConfig,
    ) -> RedisResult<Self> {
        let this = Self(Arc::new(Shared {
            sentinel,
            config,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        }));
        this.connection().await?;
        Ok(this)
    }

    /// The connection in use, or a new one to the master of the moment.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let attempts = {
            let state = lock(&self.0.state);
            if let Some(conn) = &state.conn {
                return Ok((state.generation, conn.clone()));
            }
            if let Some((at, e)) = &state.failed
                && at.elapsed() < RETRY_PAUSE
            {
                return Err(e.clone());
            }
            state.attempts
        };
        let _one_lookup = self.0.connecting.lock().await;
        {
            let state = lock(&self.0.state);
            if let Some(conn) = &state.conn {
                return Ok((state.generation, conn.clone()));
            }
            if state.attempts != attempts
                && let Some((_, e)) = &state.failed
            {
                return Err(e.clone());
            }
        }
        let result = self.0.sentinel.connect(&self.0.config).await;
        let mut state = lock(&self.0.state);
        state.attempts += 1;
        match result {
            Ok(conn) => {
                state.generation += 1;
                state.conn = Some(conn.clone());
                state.failed = None;
                Ok((state.generation, conn))
            }
            Err(e) => {
                state.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// After an error that means connection `generation` no longer reaches
    /// a working master: closed (the master died or was restarted), an I/O
    /// error or a timeout (unreachable: the sentinels may be promoting
    /// another), or a not-the-master reply ([`is_not_master`]). The next
    /// command asks the sentinels again.
    fn forget(&self, generation: u64) {
        let mut state = lock(&self.0.state);
        if state.generation == generation {
            state.conn = None;
        }
    }
}

/// Whether the connection that gave `error` should be replaced.
fn is_broken(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || matches!(error.kind(), redis::ErrorKind::Server(kind) if is_not_master(kind))
}

/// A reply from a node that is no longer the master: `READONLY`, it was
/// demoted to a replica; `LOADING`, it is loading a new master's data (a
/// demoted master's first moments as a replica). The command did not run,
/// so it is safe to send again to the new master.
fn is_not_master(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::ReadOnly | ServerErrorKind::BusyLoading
    )
}

fn from_old_master(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind().is_some_and(is_not_master))
}

impl ConnectionLike for MasterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut again = true;
            loop {
                let (generation, mut conn) = self.connection().await?;
                let result = conn.req_packed_command(cmd).await;
                let not_master = match &result {
                    Ok(value) => from_old_master(value),
                    Err(e) => {
                        if is_broken(e) {
                            self.forget(generation);
                        }
                        false
                    }
                };
                if !not_master {
                    return result;
                }
                self.forget(generation);
                if !std::mem::take(&mut again) {
                    return result;
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut again = true;
            loop {
                let (generation, mut conn) = self.connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                let not_master = match &result {
                    Ok(values) => values.iter().any(from_old_master),
                    Err(e) => {
                        if is_broken(e) {
                            self.forget(generation);
                        }
                        false
                    }
                };
                if !not_master {
                    return result;
                }
                // Every write of the store is one script or idempotent, so
                // sending the whole pipeline again repeats nothing harmful.
                self.forget(generation);
                if !std::mem::take(&mut again) {
                    return result;
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.sentinel.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let url = SentinelUrl::parse("redis+sentinel://h1:26380,h2,[::1]:26381/mymaster").unwrap();
        assert_eq!(
            url.sentinels,
            [
                ("h1".to_owned(), 26380),
                ("h2".to_owned(), DEFAULT_SENTINEL_PORT),
                ("::1".to_owned(), 26381)
            ]
        );
        assert_eq!(url.master, "mymaster");
        assert_eq!(
            (url.username.as_deref(), url.password.as_deref(), url.db),
            (None, None, 0)
        );
        assert_eq!(
            url.label(),
            "master \"mymaster\" via Sentinel h1:26380,h2:26379,[::1]:26381"
        );

        let url = SentinelUrl::parse("redis+sentinel://user:p%40ss@h1:26379/m/3").unwrap();
        assert_eq!(url.username.as_deref(), Some("user"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
        assert_eq!(url.db, 3);
        assert!(!format!("{url:?}").contains("p@ss"));
        let url = SentinelUrl::parse("redis+sentinel://:s3cret@h1/m/").unwrap();
        assert_eq!(
            (url.username, url.password.as_deref()),
            (None, Some("s3cret"))
        );
    }

    #[test]
    fn bad_sentinel_urls_are_refused_without_showing_the_password() {
        for (url, expected) in [
            ("redis+sentinel://h1:26379", "no master name"),
            ("redis+sentinel://h1:26379/", "no master name"),
            ("redis+sentinel://h1:26379/m/x", "database"),
            ("redis+sentinel://h1:26379/m/1/2", "too many path segments"),
            ("redis+sentinel://h1:0/m", "the port must be 1–65535"),
            ("redis+sentinel://h1:port/m", "the port must be 1–65535"),
            ("redis+sentinel://h1,,h2/m", "no host"),
            ("redis+sentinel://:s3cret@/m", "no host"),
            ("redis+sentinel://h1/m?db=2", "master name"),
            ("rediss+sentinel://h1/m", "not supported"),
        ] {
            let err = SentinelUrl::parse(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
    }
}
