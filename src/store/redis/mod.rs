//! The Redis store (docs/design/redis-layout.md).
//!
//! Keys, under a configurable prefix (default `tokengate:`):
//! - `{prefix}token:{id}`: HASH, the record;
//! - `{prefix}account:{account_id}`: SET of token ids;
//! - `{prefix}expiry`: ZSET id → end of life (expiry, or revocation if earlier);
//! - `{prefix}events`: STREAM of token changes (revocations), capped, which
//!   every replica reads from the last entry it saw.
//!
//! Every change that touches more than one key runs as one Lua script, so the
//! indexes never disagree with the records, whatever fails in between.
//!
//! Here: the store, how it connects and retries. Beside it: `tokens.rs`
//! (the [`TokenStore`] methods), `quota.rs`, `audit.rs`, `cleanup.rs`,
//! `watch.rs` (the events reader), `codec.rs` (records as HASH fields),
//! `keys.rs`, `scripts/` (one `.lua` file per script), `config.rs`
//! (`[redis]`), `connection.rs` (direct and Sentinel) and `cluster.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use self::cluster::ClusterUrl;
use self::connection::{Connection, Connector, MasterConnection, Sentinel};
use self::keys::Keys;
use self::scripts::{
    COMMIT_LUA, INSERT_LUA, LEASE_LUA, LIMIT_LUA, PENDING_LUA, REFILL_LUA, REMOVE_LUA,
    REMOVE_RECORD_LUA, REPLACE_HASH_LUA, RETURN_LUA, REVOKE_INDEX_LUA, REVOKE_LUA, SET_QUOTA_LUA,
    TOUCH_LUA, UPDATE_LUA,
};
use self::watch::READ_BLOCK;
use super::{StoreError, TokenStore};
use crate::token::TokenId;

mod audit;
mod cleanup;
mod cluster;
mod codec;
mod config;
mod connection;
mod keys;
mod quota;
mod scripts;
mod tokens;
mod watch;

pub use self::config::{
    DEFAULT_KEY_PREFIX, MAX_KEY_PREFIX_LEN, RedisConfig, check_redis_url, redact_url,
};

/// How long to wait for a TCP connection to Redis. Short, because a caller
/// waiting on the store is a request waiting on us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for any one reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a call refused by a down Redis waits for one fresh connection
/// attempt (see `RedisStore::retried`).
const REFUSED_RETRY_WAIT: Duration = Duration::from_millis(250);
/// Reconnection attempts per outage before a call fails (the manager tries
/// again on the next call).
const RECONNECT_RETRIES: usize = 3;
/// Ids handled per round trip by cleanup, so one call never builds an
/// unbounded pipeline.
const CLEANUP_BATCH: isize = 500;
/// Cluster only: how old (seconds) a creation left pending must be before
/// cleanup repairs it; far longer than a creation takes.
const PENDING_GRACE: i64 = 60;
/// About how many events the stream keeps (Redis trims whole nodes, so a
/// few more). A replica disconnected for longer than it takes the fleet to
/// make this many token changes re-checks its cached tokens instead of
/// replaying (docs/design/redis-layout.md, "Revocations").
pub(super) const EVENTS_MAX_LEN: usize = 10_000;

/// Token records in Redis, through an auto-reconnecting multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    /// Opens the event reader's connections.
    connector: Connector,
    conn: Connection,
    /// For the scripts that must run at most once: `conn` itself, except on
    /// a cluster (see `RedisStore::with_cluster`).
    once: Connection,
    keys: Keys,
    insert: Script,
    revoke: Script,
    touch: Script,
    replace_hash: Script,
    remove: Script,
    limit: Script,
    lease: Script,
    give_back: Script,
    set_quota: Script,
    update: Script,
    // Cluster only (docs/design/redis-layout.md, "Redis Cluster").
    pending: Script,
    commit: Script,
    revoke_index: Script,
    remove_record: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`,
    /// `rediss://` for TLS where built in, or
    /// `redis+sentinel://[user:password@]host:port[,…]/master[/db]`) and
    /// checks that Redis answers. After that, the connection reconnects by
    /// itself (through Sentinel: to the master of the moment).
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        if cluster::is_cluster_url(url) {
            return Self::with_cluster(url, key_prefix).await;
        }
        if connection::is_sentinel_url(url) {
            return Self::with_sentinel(url, key_prefix).await;
        }
        Self::with_client(client(url, None)?, key_prefix).await
    }

    /// Connects as `[redis]` says: its URL, key prefix and TLS files.
    pub async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let url = config.url.as_deref().unwrap_or_default();
        let store = if cluster::is_cluster_url(url) {
            Self::with_cluster(url, &config.key_prefix).await?
        } else if connection::is_sentinel_url(url) {
            Self::with_sentinel(url, &config.key_prefix).await?
        } else {
            Self::with_client(client(url, Some(config))?, &config.key_prefix).await?
        };
        // A connection is not yet an answer: a Redis that wants a password
        // the URL lacks accepts the connection and refuses every command
        // (NOAUTH). Found now, it stops start-up instead of every request.
        store.ping().await?;
        Ok(store)
    }

    /// Through Sentinel: the same timeouts, and a lookup of the master
    /// bounded like a connection attempt with its first reply.
    async fn with_sentinel(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let sentinel = Arc::new(Sentinel::open(url, CONNECT_TIMEOUT + RESPONSE_TIMEOUT)?);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = MasterConnection::connect(sentinel.clone(), config).await?;
        Ok(Self::with_connections(
            Connector::Sentinel(sentinel),
            Connection::Sentinel(conn),
            key_prefix,
        ))
    }

    /// A Redis Cluster: one cluster connection for commands, and one more
    /// for the event reader.
    async fn with_cluster(url: &str, key_prefix: &str) -> Result<Self, StoreError> {
        let url = ClusterUrl::parse(url).map_err(StoreError::Config)?;
        let client = url.client(CONNECT_TIMEOUT, RESPONSE_TIMEOUT, None)?;
        let conn = client.get_async_connection().await?;
        // redis-rs sends a cluster request again when its connection is
        // lost, even if the request may have run: the scripts that must run
        // at most once (quota leases and give-backs, rate-limit rounds) go
        // through a client that never does. A redirection (a resharding)
        // then fails that one call (failing closed, or losing a round)
        // while the client learns the new slot map.
        let once = url
            .client(CONNECT_TIMEOUT, RESPONSE_TIMEOUT, Some(0))?
            .get_async_connection()
            .await?;
        tracing::debug!(cluster = %url.label(), "connected to the Redis Cluster");
        // The reader's blocking reads need a longer reply timeout.
        let reader = url.client(CONNECT_TIMEOUT, READ_BLOCK + RESPONSE_TIMEOUT, None)?;
        let mut store = Self::with_connections(
            Connector::Cluster(Box::new(reader)),
            Connection::Cluster(conn),
            key_prefix,
        );
        store.once = Connection::Cluster(once);
        Ok(store)
    }

    async fn with_client(client: redis::Client, key_prefix: &str) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self::with_connections(
            Connector::Direct(Box::new(client)),
            Connection::Direct(conn),
            key_prefix,
        ))
    }

    fn with_connections(connector: Connector, conn: Connection, key_prefix: &str) -> Self {
        Self {
            keys: Keys {
                prefix: key_prefix.to_owned(),
                cluster: conn.is_cluster(),
            },
            connector,
            once: conn.clone(),
            conn,
            insert: Script::new(INSERT_LUA),
            revoke: Script::new(REVOKE_LUA),
            touch: Script::new(TOUCH_LUA),
            replace_hash: Script::new(REPLACE_HASH_LUA),
            remove: Script::new(REMOVE_LUA),
            limit: Script::new(LIMIT_LUA),
            lease: Script::new(&format!("{REFILL_LUA}{LEASE_LUA}")),
            give_back: Script::new(RETURN_LUA),
            set_quota: Script::new(SET_QUOTA_LUA),
            update: Script::new(UPDATE_LUA),
            pending: Script::new(PENDING_LUA),
            commit: Script::new(COMMIT_LUA),
            revoke_index: Script::new(REVOKE_INDEX_LUA),
            remove_record: Script::new(REMOVE_RECORD_LUA),
        }
    }

    /// The ids of every token record under the key prefix, read with `SCAN`
    /// (for `tokengate migrate`, which copies a Redis to another; a
    /// cluster's nodes would each need scanning, so a cluster is refused as
    /// the source).
    pub async fn token_ids(&self) -> Result<Vec<TokenId>, StoreError> {
        if self.keys.cluster {
            return Err(StoreError::Config(
                "copying from a Redis Cluster is not supported: migrate from one Redis".to_owned(),
            ));
        }
        // The prefix literally: SCAN's pattern treats `* ? [ ] \` as globs.
        let literal: String = self
            .keys
            .prefix
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
                escape.into_iter().chain(std::iter::once(c))
            })
            .collect();
        let pattern = format!("{literal}token:*");
        let prefix_len = self.keys.token("").len();
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut ids = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut conn)
                .await?;
            ids.extend(
                keys.iter()
                    .filter_map(|k| k.get(prefix_len..)?.parse::<TokenId>().ok()),
            );
            if next == 0 {
                ids.sort_unstable();
                ids.dedup();
                return Ok(ids);
            }
            cursor = next;
        }
    }

    /// The stream of token changes (revocations) every replica reads.
    pub fn events_key(&self) -> String {
        self.keys.events()
    }

    /// Runs `op` on the shared connection and, when it failed because that
    /// connection had been closed under it (Redis restarted, a `CLIENT
    /// KILL`, an idle timeout on the server), once more: the manager starts
    /// reconnecting on such an error, and the second try waits for the fresh
    /// connection. A command on a closed connection reached no one, so the
    /// retry is safe; callers whose command may have run (a reply lost to a
    /// reset) are idempotent, see [`TokenStore::insert`] for the one that is
    /// not by itself. A timeout is not retried (it would double the wait).
    async fn retried<T, F, Fut>(&self, op: F) -> redis::RedisResult<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.conn.clone()).await {
            // A refusal may be stale: the manager answers with the error of
            // its last reconnection attempt (made by a background task
            // while Redis was down) and only now starts a new one. Wait
            // briefly for that one: it connects at once if Redis is back,
            // and a Redis still down fails within the wait, not the
            // manager's whole backoff.
            Err(e) if e.is_connection_refusal() => {
                Self::after_refusal(self.conn.clone(), e, op).await
            }
            Err(e) if e.is_unrecoverable_error() => {
                tracing::debug!(error = %e, "the Redis connection was closed; retrying on a new one");
                op(self.conn.clone()).await
            }
            result => result,
        }
    }

    /// One script invocation, retried as [`RedisStore::retried`] says.
    async fn invoke_retried<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        self.retried(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// For commands that must not run twice (quota leases): sent once more
    /// only if the connection was refused, so the first try reached no one.
    async fn retried_if_refused<T, F, Fut>(&self, op: F) -> redis::RedisResult<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match op(self.once.clone()).await {
            Err(e) if e.is_connection_refusal() => {
                Self::after_refusal(self.once.clone(), e, op).await
            }
            result => result,
        }
    }

    async fn after_refusal<T, F, Fut>(
        conn: Connection,
        refused: redis::RedisError,
        op: F,
    ) -> redis::RedisResult<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(REFUSED_RETRY_WAIT, op(conn))
            .await
            .unwrap_or(Err(refused))
    }
}

/// A client for `url`; for `rediss://`, trusting the CA and presenting the
/// client certificate that `config` names (docs/design/redis-layout.md,
/// "Connection").
fn client(url: &str, config: Option<&RedisConfig>) -> Result<redis::Client, StoreError> {
    #[cfg(feature = "redis-tls")]
    if url.starts_with("rediss://") {
        // rustls needs a crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| StoreError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let root_cert = config
            .and_then(|c| c.tls_ca_file.as_deref())
            .map(read)
            .transpose()?;
        let client_tls = match config.map(|c| (&c.tls_cert_file, &c.tls_key_file)) {
            Some((Some(cert), Some(key))) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        };
        let certificates = redis::TlsCertificates {
            client_tls,
            root_cert,
        };
        return Ok(redis::Client::build_with_tls(url, certificates)?);
    }
    let _ = config;
    Ok(redis::Client::open(url)?)
}

/// Runs script invocations in one round trip on one Redis (a pipeline,
/// after loading the script, which a restarted Redis lacks), or
/// concurrently on a cluster, where their keys are in different slots,
/// which a pipeline cannot span (each invocation loads the script on its
/// node if needed).
async fn each_script<T: redis::FromRedisValue>(
    mut conn: Connection,
    code: &str,
    invocations: &[redis::ScriptInvocation<'_>],
) -> redis::RedisResult<Vec<T>> {
    if invocations.is_empty() {
        return Ok(Vec::new());
    }
    if conn.is_cluster() {
        let calls = invocations.iter().map(|invocation| {
            let mut conn = conn.clone();
            async move { invocation.invoke_async(&mut conn).await }
        });
        return futures_util::future::try_join_all(calls).await;
    }
    let mut pipe = redis::pipe();
    pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
    for invocation in invocations {
        pipe.invoke_script(invocation);
    }
    pipe.query_async(&mut conn).await
}

/// Runs commands in one round trip on one Redis, or concurrently on a
/// cluster (see [`each_script`]).
async fn each_cmd<T: redis::FromRedisValue>(
    mut conn: Connection,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    if conn.is_cluster() {
        let calls = cmds.into_iter().map(|cmd| {
            let mut conn = conn.clone();
            async move { cmd.query_async(&mut conn).await }
        });
        return futures_util::future::try_join_all(calls).await;
    }
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    pipe.query_async(&mut conn).await
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
