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

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use self::cluster::ClusterUrl;
use self::connection::{Connection, Connector, MasterConnection, Sentinel};
use super::{LimitKey, LimitReport, LimitState, RevocationSink};
use super::{
    Page, RecordUpdate, RevokeOutcome, StoreError, TokenRecord, TokenStore, UpdateOutcome,
};
use crate::audit::{
    AUDIT_MAX_LEN, Actor, AuditAction, AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE,
    parse_entry_id, successor,
};
use crate::token::{
    AllowedIps, Lease, Meta, Quota, Refill, RefillInterval, Scopes, TokenId, TokenRateLimit,
};

mod cluster;
mod config;
mod connection;

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

/// Creates the record, its account-index entry and its expiry-index entry, or
/// nothing if the id exists. KEYS: token, and (one Redis) account, expiry;
/// on a cluster, the indexes live in another slot and are written apart
/// (`RedisStore::insert`). ARGV: id, expires_at (or ""), then field/value
/// pairs.
const INSERT_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[1])
  if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1]) end
end
return 1
";

/// Cluster only, the indexes' half of a creation, before the record:
/// notes the creation as pending (with its account and time, so cleanup can
/// finish or undo it if the process dies before the record is written) and
/// lists the id under its account. KEYS: pending, account. ARGV: id,
/// "{unix seconds}:{account}".
const PENDING_LUA: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
";

/// Cluster only, after the record: the creation is done; a token that
/// expires enters the expiry index. KEYS: pending, expiry. ARGV: id,
/// expires_at (or "").
const COMMIT_LUA: &str = r"
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
";

/// Soft-deletes a token of the given account and (one Redis) enters its
/// end of life in the expiry index and appends the revocation to the
/// events stream (capped at about ARGV[4] entries); on a cluster those two
/// are in another slot and written just after (`REVOKE_INDEX_LUA`).
/// KEYS: token, and (one Redis) expiry, events. ARGV: account_id, now, id,
/// max events. Returns {0 not found | 1 revoked | 2 already revoked, end of
/// life}.
const REVOKE_LUA: &str = r"
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return {0, 0} end
local result = 2
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 0 then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[2], 'updated_at', ARGV[2])
  result = 1
end
local eol = tonumber(redis.call('HGET', KEYS[1], 'revoked_at'))
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if expires and tonumber(expires) < eol then eol = tonumber(expires) end
if KEYS[2] then
  redis.call('ZADD', KEYS[2], eol, ARGV[3])
  -- Appended again on a repeated revoke: a replica that somehow kept the
  -- token gets another chance to drop it from its cache.
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'revoked', 'id', ARGV[3])
end
return {result, eol}
";

/// Cluster only, after REVOKE_LUA on the record: the end of life in the
/// expiry index and the event, together (same slot). KEYS: expiry, events.
/// ARGV: end of life, id, max events.
const REVOKE_INDEX_LUA: &str = r"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'revoked', 'id', ARGV[2])
return 1
";

/// Moves last_accessed forward, never back, and never recreates a deleted
/// record. KEYS: token. ARGV: unix seconds.
const TOUCH_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'last_accessed') or '-1')
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'last_accessed', ARGV[1])
return 1
";

/// Rehash on successful use: replaces the hash only if it is still the one
/// the caller verified and the token is not revoked (a compare-and-set; a
/// deleted record has no hash and is not recreated). KEYS: token. ARGV: old
/// hash, new hash. Returns 1 if replaced.
const REPLACE_HASH_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2])
return 1
";

/// Deletes a token from every key if its end of life is at or before the
/// cutoff (checked again here: the id was read in an earlier round trip).
/// KEYS: token, account, expiry. ARGV: id, cutoff. Returns 1 if deleted.
const REMOVE_LUA: &str = r"
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
";

/// Cluster only: deletes a record whose end of life is at or before the
/// cutoff (checked on the record itself: the expiry index is in another
/// slot). KEYS: token. ARGV: cutoff. Returns 1 deleted, 0 alive, -1 absent.
const REMOVE_RECORD_LUA: &str = r"
local f = redis.call('HMGET', KEYS[1], 'id', 'expires_at', 'revoked_at')
if not f[1] then return -1 end
local eol = nil
if f[2] then eol = tonumber(f[2]) end
if f[3] and (not eol or tonumber(f[3]) < eol) then eol = tonumber(f[3]) end
if not eol or eol > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Counts a replica's admissions on a fleet-wide GCRA limiter and returns
/// how far its theoretical arrival time (TAT) runs ahead of now, and how many
/// requests it has counted (docs/reference/rate-limits.md). Redis's clock is the
/// fleet's clock. The admissions were made over the round's window (the
/// time since the replica's previous round), not all at its end, so the
/// TAT they extend is at least the window's start, not now: otherwise a
/// token well under its limit would be pushed past its burst by every
/// round that carries more than a burst of requests.
/// KEYS: limiter. ARGV: admitted, interval µs, tolerance µs, window µs.
/// Returns {ahead µs (0 when behind now), counted}.
const LIMIT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'counted')
local admitted = tonumber(ARGV[1])
local tat = tonumber(state[1] or '0')
local start = now - tonumber(ARGV[4])
if tat < start then tat = start end
tat = tat + admitted * tonumber(ARGV[2])
local counted = tonumber(state[2] or '0') + admitted
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'counted', string.format('%.0f', counted))
-- Once the TAT is this far behind, the limiter is full again: forget it.
redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((tat - now + tonumber(ARGV[3])) / 1000), 0) + 1000)
return {math.max(math.floor(tat - now), 0), counted}
";

/// The refill calendar of docs/reference/quotas.md, as in `src/store/quota.rs`:
/// `period_start(interval, start, now)` and `next_start(interval, start)`,
/// `interval` being seconds or `month` (UTC calendar months).
const REFILL_LUA: &str = r"
local function month_start(t)
  local days = math.floor(t / 86400)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  return (days - (d - 1)) * 86400
end
local function period_start(interval, start, now)
  if interval == 'month' then return math.max(month_start(now), start) end
  local s = math.max(tonumber(interval), 1)
  if now < start + s then return start end
  return start + math.floor((now - start) / s) * s
end
local function next_start(interval, start)
  if interval == 'month' then return month_start(month_start(start) + 32 * 86400) end
  return start + math.max(tonumber(interval), 1)
end
";

/// Hands out up to ARGV[1] credits of a token's quota, refilling it first
/// if a refill is due at ARGV[2] (unix seconds). KEYS: token.
/// Returns {granted, period, next refill or -1, remaining}, or {-1} when the
/// token or its quota does not exist. Appended to REFILL_LUA.
const LEASE_LUA: &str = r"
local q = redis.call('HMGET', KEYS[1], 'quota_remaining', 'quota_refill_amount',
  'quota_refill_interval', 'quota_refilled_at', 'quota_period')
if not q[1] then return {-1} end
local remaining, period = tonumber(q[1]), tonumber(q[5] or '0')
local refilled, now, nxt = tonumber(q[4] or '0'), tonumber(ARGV[2]), -1
if q[2] and q[3] then
  local start = period_start(q[3], refilled, now)
  if start > refilled then
    remaining, refilled, period = tonumber(q[2]), start, period + 1
    redis.call('HSET', KEYS[1], 'quota_refilled_at', string.format('%d', refilled),
      'quota_period', string.format('%d', period))
  end
  nxt = next_start(q[3], refilled)
end
local granted = math.min(tonumber(ARGV[1]), remaining)
redis.call('HSET', KEYS[1], 'quota_remaining', string.format('%d', remaining - granted))
return {granted, period, nxt, remaining - granted}
";

/// Gives unused credits back if the quota is still in the lease's period.
/// KEYS: token. ARGV: credits, period. Returns 1 if taken back.
const RETURN_LUA: &str = r"
local period = redis.call('HGET', KEYS[1], 'quota_period')
if not period or period ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'quota_remaining', ARGV[1])
return 1
";

/// Sets or removes a token's quota if it belongs to the account, starting a
/// new period, and appends the change to the events stream. KEYS: token,
/// and (one Redis) events. ARGV: account_id, id, max events, now, then either nothing
/// (remove) or remaining, refill amount (or ''), refill interval (or '').
/// Returns 1 if found.
const SET_QUOTA_LUA: &str = r"
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return 0 end
local period = tonumber(redis.call('HGET', KEYS[1], 'quota_period') or '0') + 1
redis.call('HDEL', KEYS[1], 'quota_remaining', 'quota_refill_amount', 'quota_refill_interval',
  'quota_refilled_at')
if ARGV[5] then
  redis.call('HSET', KEYS[1], 'quota_remaining', ARGV[5], 'quota_refilled_at', ARGV[4],
    'quota_period', string.format('%d', period))
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'quota_refill_amount', ARGV[6], 'quota_refill_interval', ARGV[7])
  end
else
  -- Kept, so leases of the removed quota stay void if one comes back.
  redis.call('HSET', KEYS[1], 'quota_period', string.format('%d', period))
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
-- On a cluster the stream is in another slot: appended just after.
if KEYS[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'quota', 'id', ARGV[2])
end
return 1
";

/// Changes a token's record if it belongs to the account and is not
/// revoked, keeps the expiry index in step and appends the change to the
/// events stream. KEYS: token, and (one Redis) expiry, events. ARGV:
/// account_id, id, max events, now, then field / value pairs (an empty
/// value deletes the field; `expires_by` lowers `expires_at` to its value
/// unless it is already earlier; `rotated_to` is set only once). Returns 1
/// if changed, 2 if revoked, 3 if already rotated, 0 if not found.
const UPDATE_LUA: &str = r"
local account = redis.call('HGET', KEYS[1], 'account_id')
if not account or account ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 2 end
for i = 5, #ARGV, 2 do
  if ARGV[i] == 'rotated_to' and redis.call('HEXISTS', KEYS[1], 'rotated_to') == 1 then
    return 3
  end
end
for i = 5, #ARGV, 2 do
  if ARGV[i] == 'expires_by' then
    local expires = redis.call('HGET', KEYS[1], 'expires_at')
    if not expires or tonumber(expires) > tonumber(ARGV[i + 1]) then
      redis.call('HSET', KEYS[1], 'expires_at', ARGV[i + 1])
    end
  elseif ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
-- On a cluster the index and the stream are in other slots: done just after.
if KEYS[2] then
  local expires = redis.call('HGET', KEYS[1], 'expires_at')
  if expires then
    redis.call('ZADD', KEYS[2], expires, ARGV[2])
  else
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'update', 'id', ARGV[2])
end
return 1
";

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

/// Key names (docs/design/redis-layout.md). On a cluster the names carry hash
/// tags: a token's record has its own slot (`{prefix}token:{<id>}`, the
/// braces literal), so records spread over the nodes, and the indexes and
/// the events stream share one slot (`{<prefix>}account:…`), so each write
/// to them is one atomic script.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    fn token(&self, id: impl std::fmt::Display) -> String {
        if self.cluster {
            format!("{}token:{{{id}}}", self.prefix)
        } else {
            format!("{}token:{id}", self.prefix)
        }
    }
    fn index(&self, name: &str) -> String {
        if self.cluster {
            format!("{{{}}}{name}", self.prefix)
        } else {
            format!("{}{name}", self.prefix)
        }
    }
    fn account(&self, account_id: &str) -> String {
        self.index(&format!("account:{account_id}"))
    }
    fn expiry(&self) -> String {
        self.index("expiry")
    }
    fn events(&self) -> String {
        self.index("events")
    }
    fn audit(&self) -> String {
        self.index("audit")
    }
    /// Cluster only: creations under way (id → "{unix seconds}:{account}").
    fn pending(&self) -> String {
        self.index("pending")
    }
    fn limit(&self, key: &LimitKey) -> String {
        match key {
            LimitKey::Token(id) => format!("{}ratelimit:token:{id}", self.prefix),
            LimitKey::OwnLimit(id, limit) => format!(
                "{}ratelimit:token:{id}:{}-{}-{}",
                self.prefix,
                limit.requests,
                limit.period.as_nanos(),
                limit.burst
            ),
            LimitKey::Account(account) => format!("{}ratelimit:account:{account}", self.prefix),
        }
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

    /// The first ids (at most `CLEANUP_BATCH`) whose end of life is at or
    /// before `cutoff`, by the expiry index.
    async fn dead_ids(&self, cutoff: i64) -> redis::RedisResult<Vec<String>> {
        let expiry = self.keys.expiry();
        self.retried(|mut conn| {
            let expiry = &expiry;
            async move {
                conn.zrangebyscore_limit(expiry, "-inf", cutoff, 0, CLEANUP_BATCH)
                    .await
            }
        })
        .await
    }

    /// Cleanup on a cluster, where a record and its index entries are in
    /// different slots: for each dead id, first out of its account's index,
    /// then the record (its end of life checked again on the record), then
    /// out of the expiry index. Interrupted anywhere, the next cleanup
    /// finds the id in the expiry index again and finishes. Then creations
    /// that never finished are repaired (docs/design/redis-layout.md, "Redis
    /// Cluster").
    async fn remove_dead_on_cluster(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let ids = self.dead_ids(cutoff).await?;
            if ids.is_empty() {
                break;
            }
            let reads = ids
                .iter()
                .map(|id| {
                    let mut cmd = redis::cmd("HGET");
                    cmd.arg(self.keys.token(id)).arg("account_id");
                    cmd
                })
                .collect();
            let accounts: Vec<Option<String>> = each_cmd(self.conn.clone(), reads).await?;
            let unlist = ids
                .iter()
                .zip(&accounts)
                .filter_map(|(id, account)| {
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(self.keys.account(account.as_deref()?)).arg(id);
                    Some(cmd)
                })
                .collect();
            let _: Vec<i64> = each_cmd(self.conn.clone(), unlist).await?;
            let deletions: Vec<_> = ids
                .iter()
                .map(|id| {
                    let mut invocation = self.remove_record.prepare_invoke();
                    invocation.key(self.keys.token(id)).arg(cutoff);
                    invocation
                })
                .collect();
            let outcomes: Vec<i64> =
                each_script(self.conn.clone(), REMOVE_RECORD_LUA, &deletions).await?;
            removed += outcomes.iter().filter(|&&o| o == 1).count() as u64;
            // Gone now (or before): out of the expiry index. One alive after
            // all (its index entry was stale) is listed again under its
            // account and re-entered with its true end of life.
            let gone: Vec<&String> = ids
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o != 0)
                .map(|(id, _)| id)
                .collect();
            if !gone.is_empty() {
                let _: i64 = self.conn.clone().zrem(self.keys.expiry(), gone).await?;
            }
            let alive: Vec<&String> = ids
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o == 0)
                .map(|(id, _)| id)
                .collect();
            for id in alive {
                self.relist(id).await?;
            }
            if ids.len() < CLEANUP_BATCH as usize {
                break;
            }
        }
        self.repair_pending().await?;
        Ok(removed)
    }

    /// Puts a record that is alive back in its indexes as the record says.
    async fn relist(&self, id: &str) -> Result<(), StoreError> {
        let (account, expires, revoked): (Option<String>, Option<i64>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(self.keys.token(id))
                .arg("account_id")
                .arg("expires_at")
                .arg("revoked_at")
                .query_async(&mut self.conn.clone())
                .await?;
        let Some(account) = account else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.sadd(self.keys.account(&account), id).ignore();
        match expires.into_iter().chain(revoked).min() {
            Some(end_of_life) => pipe.zadd(self.keys.expiry(), id, end_of_life).ignore(),
            None => pipe.zrem(self.keys.expiry(), id).ignore(),
        };
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Finishes or undoes creations noted as pending more than
    /// `PENDING_GRACE` seconds ago (by this machine's clock, as they were
    /// noted): the process that began them is gone. A record that exists is listed as it says; an id without
    /// one is taken out of its account's index.
    async fn repair_pending(&self) -> Result<(), StoreError> {
        let pending: HashMap<String, String> =
            self.conn.clone().hgetall(self.keys.pending()).await?;
        for (id, note) in pending {
            let Some((created_at, account)) = note.split_once(':') else {
                continue;
            };
            if created_at
                .parse::<i64>()
                .is_ok_and(|t| t.saturating_add(PENDING_GRACE) > unix_now())
            {
                continue;
            }
            let owner: Option<String> = self
                .conn
                .clone()
                .hget(self.keys.token(&id), "account_id")
                .await?;
            if owner.as_deref() == Some(account) {
                self.relist(&id).await?;
            } else {
                let _: i64 = self
                    .conn
                    .clone()
                    .srem(self.keys.account(account), &id)
                    .await?;
            }
            let _: i64 = self.conn.clone().hdel(self.keys.pending(), &id).await?;
            tracing::info!(token_id = %id, account_id = account, finished = owner.is_some(), "repaired an interrupted token creation");
        }
        Ok(())
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

impl RedisStore {
    /// The ids in the account's index. Ids that do not parse cannot be
    /// ours: skipped rather than failing the whole listing.
    async fn account_ids(&self, account_id: &str) -> Result<Vec<TokenId>, StoreError> {
        let account = self.keys.account(account_id);
        let members: Vec<String> = self
            .retried(|mut conn| {
                let account = &account;
                async move { conn.smembers(account).await }
            })
            .await?;
        Ok(members.iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// The records of `ids` that exist and are the account's, in the order
    /// of `ids`, in one pipelined round trip.
    async fn account_records(
        &self,
        account_id: &str,
        ids: &[TokenId],
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let reads = ids
            .iter()
            .map(|&id| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.keys.token(id));
                cmd
            })
            .collect();
        let all: Vec<HashMap<String, String>> = each_cmd(self.conn.clone(), reads).await?;
        let mut records = Vec::with_capacity(ids.len());
        for (&id, fields) in ids.iter().zip(all) {
            // Skipped: an id whose record is gone, or (after an interrupted
            // creation on a cluster, until cleanup) another account's.
            if let Some(record) = decode(id, &fields)?
                && record.account_id == account_id
            {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn insert(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let id = record.id.to_string();
        let cluster = self.keys.cluster;
        // The expiry index holds the end of life: the expiry for a new
        // token, or an earlier revocation for one copied by `migrate`.
        let expires = record
            .end_of_life()
            .map(|e| e.to_string())
            .unwrap_or_default();
        if cluster {
            // Indexes first: an id listed without a record is skipped by
            // list, and cleanup finishes or undoes a pending creation.
            let mut pending = self.pending.prepare_invoke();
            pending
                .key(self.keys.pending())
                .key(self.keys.account(&record.account_id))
                .arg(&id)
                // When the creation began, by this machine's clock (not the
                // record's created_at: `migrate` copies old records).
                .arg(format!("{}:{}", unix_now(), record.account_id));
            let _: i64 = self.invoke_retried(&pending).await?;
        }
        let mut invocation = self.insert.prepare_invoke();
        invocation.key(self.keys.token(record.id));
        if !cluster {
            invocation
                .key(self.keys.account(&record.account_id))
                .key(self.keys.expiry());
        }
        invocation.arg(&id).arg(&expires);
        for (field, value) in encode(record) {
            invocation.arg(field).arg(value);
        }
        let created: i64 = self.invoke_retried(&invocation).await?;
        // A first try whose reply was lost may have created it: ours if the
        // hash is ours (a bcrypt hash is salted: no other insert has it).
        let ours = created == 1 || {
            let stored: Option<String> = self
                .conn
                .clone()
                .hget(self.keys.token(record.id), "hash")
                .await?;
            stored.as_deref() == Some(record.hash.as_str())
        };
        if !ours {
            // On a cluster the pending entry stays: cleanup sees the record
            // is another account's and takes the id out of this one's index.
            return Err(StoreError::Duplicate(record.id));
        }
        if cluster {
            let mut commit = self.commit.prepare_invoke();
            commit
                .key(self.keys.pending())
                .key(self.keys.expiry())
                .arg(&id)
                .arg(&expires);
            let _: i64 = self.invoke_retried(&commit).await?;
        }
        Ok(())
    }

    async fn get(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let key = self.keys.token(id);
        let fields: HashMap<String, String> = self
            .retried(|mut conn| {
                let key = &key;
                async move { conn.hgetall(key).await }
            })
            .await?;
        decode(id, &fields)
    }

    async fn list_by_account(&self, account_id: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let ids = self.account_ids(account_id).await?;
        let mut records = self.account_records(account_id, &ids).await?;
        records.sort_by_key(|r| (r.created_at, r.id));
        Ok(records)
    }

    async fn list_page(
        &self,
        account_id: &str,
        after: Option<TokenId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        // Only the ids (36 bytes each) are read for the whole account; the
        // records only for the page.
        let mut ids = self.account_ids(account_id).await?;
        ids.retain(|id| after.is_none_or(|after| *id > after));
        ids.sort_unstable();
        let mut records = Vec::with_capacity(limit.min(ids.len()));
        let mut consumed = 0;
        while records.len() < limit && consumed < ids.len() {
            let batch = &ids[consumed..ids.len().min(consumed + limit - records.len())];
            records.extend(self.account_records(account_id, batch).await?);
            consumed += batch.len();
        }
        let next = (consumed < ids.len()).then(|| ids[consumed - 1]);
        Ok(Page { records, next })
    }

    async fn revoke(
        &self,
        id: TokenId,
        account_id: &str,
        at: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        let cluster = self.keys.cluster;
        let mut invocation = self.revoke.prepare_invoke();
        invocation.key(self.keys.token(id));
        if !cluster {
            invocation.key(self.keys.expiry()).key(self.keys.events());
        }
        invocation
            .arg(account_id)
            .arg(at)
            .arg(id.to_string())
            .arg(EVENTS_MAX_LEN);
        // Retried like a read: a second run finds it revoked and appends again.
        let (outcome, end_of_life): (i64, i64) = self.invoke_retried(&invocation).await?;
        if outcome != 0 && cluster {
            // The record is revoked; now its index entry and the event. Were
            // this to fail, revoking again would do it (revoke is
            // idempotent), and every replica's cache forgets the token
            // within [cache] ttl anyway.
            let mut index = self.revoke_index.prepare_invoke();
            index
                .key(self.keys.expiry())
                .key(self.keys.events())
                .arg(end_of_life)
                .arg(id.to_string())
                .arg(EVENTS_MAX_LEN);
            let _: i64 = self.invoke_retried(&index).await?;
        }
        Ok(match outcome {
            1 => RevokeOutcome::Revoked,
            2 => RevokeOutcome::AlreadyRevoked,
            _ => RevokeOutcome::NotFound,
        })
    }

    async fn lease_credits(
        &self,
        id: TokenId,
        want: u64,
        now: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let mut invocation = self.lease.prepare_invoke();
        invocation.key(self.keys.token(id)).arg(want).arg(now);
        // Not retried once sent: a lost reply may have handed out credits,
        // and asking again would only lose more of them (never over-spend:
        // see docs/reference/quotas.md). The caller fails closed.
        let reply: Vec<i64> = self
            .retried_if_refused(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let &[granted, period, next_refill, remaining] = reply.as_slice() else {
            return Ok(None);
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Some(Lease {
            granted: count(granted),
            period: count(period),
            next_refill: (next_refill >= 0).then_some(next_refill),
            remaining: count(remaining),
        }))
    }

    async fn return_credits(
        &self,
        id: TokenId,
        credits: u64,
        period: u64,
    ) -> Result<(), StoreError> {
        let mut invocation = self.give_back.prepare_invoke();
        invocation.key(self.keys.token(id)).arg(credits).arg(period);
        // Not retried once sent either: giving back twice would mint credits.
        let _: i64 = self
            .retried_if_refused(|mut conn| {
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    async fn set_quota(
        &self,
        id: TokenId,
        account_id: &str,
        quota: Option<Quota>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.set_quota.prepare_invoke();
        invocation.key(self.keys.token(id));
        if !self.keys.cluster {
            invocation.key(self.keys.events());
        }
        invocation
            .arg(account_id)
            .arg(id.to_string())
            .arg(EVENTS_MAX_LEN)
            .arg(at);
        if let Some(quota) = quota {
            invocation.arg(quota.remaining);
            match quota.refill {
                Some(refill) => invocation
                    .arg(refill.amount)
                    .arg(refill.interval.to_field()),
                None => invocation.arg("").arg(""),
            };
        }
        // Retried like a revoke: setting twice starts one more period.
        let found: i64 = self.invoke_retried(&invocation).await?;
        if found == 1 && self.keys.cluster {
            let mut event = redis::cmd("XADD");
            event
                .arg(self.keys.events())
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_MAX_LEN)
                .arg("*")
                .arg("type")
                .arg("quota")
                .arg("id")
                .arg(id.to_string());
            let _: String = event.query_async(&mut self.conn.clone()).await?;
        }
        Ok(found == 1)
    }

    async fn update(
        &self,
        id: TokenId,
        account_id: &str,
        update: &RecordUpdate,
        at: i64,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut invocation = self.update.prepare_invoke();
        invocation.key(self.keys.token(id));
        if !self.keys.cluster {
            invocation.key(self.keys.expiry()).key(self.keys.events());
        }
        invocation
            .arg(account_id)
            .arg(id.to_string())
            .arg(EVENTS_MAX_LEN)
            .arg(at);
        let optional = |value: Option<i64>| value.map(|v| v.to_string()).unwrap_or_default();
        if let Some(name) = &update.name {
            invocation.arg("name").arg(name);
        }
        if let Some(scopes) = &update.scopes {
            invocation.arg("scopes").arg(scopes.to_spaced());
        }
        if let Some(expires_at) = update.expires_at {
            invocation.arg("expires_at").arg(optional(expires_at));
        }
        if let Some(disabled_at) = update.disabled_at {
            invocation.arg("disabled_at").arg(optional(disabled_at));
        }
        if let Some(allowed_ips) = &update.allowed_ips {
            invocation.arg("allowed_ips").arg(allowed_ips.to_spaced());
        }
        if let Some(meta) = &update.meta {
            // Empty metadata deletes the field.
            let text = if meta.is_empty() { "" } else { meta.as_json() };
            invocation.arg("meta").arg(text);
        }
        if let Some(rate_limit) = update.rate_limit {
            let text = rate_limit.map(TokenRateLimit::to_field).unwrap_or_default();
            invocation.arg("rate_limit").arg(text);
        }
        if let Some(by) = update.expires_by {
            invocation.arg("expires_by").arg(by);
        }
        if let Some(to) = update.rotated_to {
            invocation.arg("rotated_to").arg(to.to_string());
        }
        // Retried like a revoke: the same change twice is the same record
        // (one more event, `updated_at` the same), except a rotation's
        // link, whose retry finds it set: answered by the record below.
        let outcome: i64 = self.invoke_retried(&invocation).await?;
        match outcome {
            0 => return Ok(UpdateOutcome::NotFound),
            2 => return Ok(UpdateOutcome::Revoked),
            _ => {}
        }
        let record = self.get(id).await?.ok_or_else(|| StoreError::Corrupt {
            id: id.to_string(),
            field: "id",
        })?;
        // Linked already: by a retry of this very change (whose first run
        // did it all; the cluster's index and event below are then still
        // due), or by another rotation.
        if outcome == 3 && record.rotated_to != update.rotated_to {
            return Ok(UpdateOutcome::AlreadyRotated);
        }
        if self.keys.cluster {
            let id = id.to_string();
            let mut pipe = redis::pipe();
            match record.end_of_life() {
                Some(end) => pipe.zadd(self.keys.expiry(), &id, end).ignore(),
                None => pipe.zrem(self.keys.expiry(), &id).ignore(),
            };
            pipe.cmd("XADD")
                .arg(self.keys.events())
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_MAX_LEN)
                .arg("*")
                .arg("type")
                .arg("update")
                .arg("id")
                .arg(&id)
                .ignore();
            let () = pipe.query_async(&mut self.conn.clone()).await?;
        }
        Ok(UpdateOutcome::Updated(Box::new(record)))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let changes = serde_json::Value::Object(entry.changes.clone()).to_string();
        let token = entry.token_id.map(|id| id.to_string()).unwrap_or_default();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.keys.audit())
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_MAX_LEN)
            .arg("*")
            .arg("at")
            .arg(entry.at)
            .arg("actor")
            .arg(&entry.actor.kind)
            .arg("actor_id")
            .arg(&entry.actor.id)
            .arg("account")
            .arg(entry.account_id.as_deref().unwrap_or_default())
            .arg("token")
            .arg(token)
            .arg("action")
            .arg(entry.action.as_str())
            .arg("changes")
            .arg(changes);
        // Not retried: a second run would be a second entry.
        let _: String = xadd.query_async(&mut self.once.clone()).await?;
        Ok(())
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        // XRANGE in chunks, filtered by account here: an account's entries
        // are spread through the one stream (docs/design/redis-layout.md).
        let empty = AuditPage {
            entries: Vec::new(),
            next: None,
        };
        let mut start = match query.after.as_deref().map(parse_entry_id) {
            None => "-".to_owned(),
            Some(after) => match after.and_then(successor) {
                Some(start) => start,
                None => return Ok(empty),
            },
        };
        let mut entries = Vec::new();
        loop {
            let want = if query.account.is_some() {
                MAX_AUDIT_PAGE
            } else {
                query.limit - entries.len() + 1
            };
            let mut conn = self.conn.clone();
            let chunk: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(self.keys.audit())
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(want)
                .query_async(&mut conn)
                .await?;
            let full = chunk.len() == want;
            for (id, fields) in chunk {
                if entries.len() == query.limit {
                    let next = entries.last().map(|e: &AuditEntry| e.id.clone());
                    return Ok(AuditPage { entries, next });
                }
                let after = parse_entry_id(&id).and_then(successor);
                let entry = decode_audit(id, &fields)?;
                match after {
                    Some(after) => start = after,
                    // The last possible id: nothing can follow.
                    None => {
                        if query.wants(&entry) && entries.len() < query.limit {
                            entries.push(entry);
                        }
                        return Ok(AuditPage {
                            entries,
                            next: None,
                        });
                    }
                }
                if query.wants(&entry) {
                    entries.push(entry);
                }
            }
            if !full {
                return Ok(AuditPage {
                    entries,
                    next: None,
                });
            }
        }
    }

    async fn replace_hash(&self, id: TokenId, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut invocation = self.replace_hash.prepare_invoke();
        invocation.key(self.keys.token(id)).arg(old).arg(new);
        // Retried like a read: a second run finds the new hash and does
        // nothing.
        let replaced: i64 = self.invoke_retried(&invocation).await?;
        Ok(replaced == 1)
    }

    async fn touch(&self, batch: &[(TokenId, i64)]) -> Result<(), StoreError> {
        let invocations: Vec<_> = batch
            .iter()
            .map(|&(id, at)| {
                let mut invocation = self.touch.prepare_invoke();
                invocation.key(self.keys.token(id)).arg(at);
                invocation
            })
            .collect();
        // Idempotent: a time only moves forward.
        self.retried(|conn| {
            let invocations = &invocations;
            async move { each_script::<i64>(conn, TOUCH_LUA, invocations).await }
        })
        .await?;
        Ok(())
    }

    async fn remove_dead(&self, cutoff: i64) -> Result<u64, StoreError> {
        if self.keys.cluster {
            return self.remove_dead_on_cluster(cutoff).await;
        }
        let mut conn = self.conn.clone();
        let expiry = self.keys.expiry();
        let mut removed = 0;
        loop {
            // Each step is idempotent; the first read stands for the rest (a
            // connection closed since the last call fails here, before any work).
            let ids = self.dead_ids(cutoff).await?;
            if ids.is_empty() {
                return Ok(removed);
            }
            // The account index key is needed as a declared key of the
            // script, so read each token's account first.
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(self.keys.token(id), "account_id");
            }
            let accounts: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SCRIPT").arg("LOAD").arg(REMOVE_LUA).ignore();
            for (id, account) in ids.iter().zip(&accounts) {
                pipe.invoke_script(
                    self.remove
                        .key(self.keys.token(id))
                        .key(self.keys.account(account.as_deref().unwrap_or_default()))
                        .key(&expiry)
                        .arg(id)
                        .arg(cutoff),
                );
            }
            let deleted: Vec<u64> = pipe.query_async(&mut conn).await?;
            removed += deleted.iter().sum::<u64>();
            // Every id in the range left the expiry index (the script removes
            // it whenever its score is still at or before the cutoff), so the
            // next range read makes progress.
            if ids.len() < CLEANUP_BATCH as usize {
                return Ok(removed);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.retried(
            |mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await },
        )
        .await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn shares_limits(&self) -> bool {
        true
    }

    async fn reconcile_limits(
        &self,
        reports: &[LimitReport],
    ) -> Result<Vec<LimitState>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let invocations: Vec<_> = reports
            .iter()
            .map(|report| {
                let mut invocation = self.limit.prepare_invoke();
                invocation
                    .key(self.keys.limit(&report.key))
                    .arg(report.admitted)
                    .arg(format!("{:.3}", report.interval_us))
                    .arg(format!("{:.3}", report.tolerance_us))
                    .arg(format!("{:.0}", report.window_us));
                invocation
            })
            .collect();
        // Not retried: a lost reply may have counted, and counting twice
        // would refuse requests the fleet has room for. The next round
        // reports again.
        let states: Vec<(u64, u64)> =
            each_script(self.once.clone(), LIMIT_LUA, &invocations).await?;
        Ok(states
            .into_iter()
            .map(|(ahead_us, counted)| LimitState { ahead_us, counted })
            .collect())
    }

    fn watch_revocations(
        &self,
        sink: Weak<dyn RevocationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let connector = self.connector.clone();
        Some(tokio::spawn(watch(connector, self.keys.clone(), sink)))
    }
}

/// Shortest and longest pause between reconnection attempts: short, since
/// every moment disconnected is a moment another replica's revocation waits,
/// and an attempt costs one connection (refused at once while Redis is down,
/// bounded by the connect timeout while it is unreachable).
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(500));
/// How long one read waits for new events. Each read that returns is also
/// proof that the connection is alive: a connection that died without a
/// reset (a partition, a frozen Redis) fails by the response timeout.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Events taken per read.
const READ_COUNT: usize = 512;
/// Cached ids re-checked per round trip.
const RECHECK_BATCH: usize = 500;

/// A stream entry id, `ms-seq`, in order.
type EntryId = (u64, u64);

fn entry_id_text((ms, seq): EntryId) -> String {
    format!("{ms}-{seq}")
}

/// What `XINFO STREAM` says about the events stream, as far as a reader
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamState {
    /// The newest id ever given.
    last_generated: EntryId,
    /// The oldest entry still kept (`None`: empty).
    first_entry: Option<EntryId>,
    /// Entries ever removed, by trimming or `XDEL` (`entries-added` −
    /// `length`; `None` before Redis 7, which does not count them).
    removed: Option<u64>,
}

/// Whether a reader that has seen every entry up to `seen` may have missed
/// some, given the stream's state now (`None`: the stream does not exist).
/// Trimming removes the oldest entries, so the entries after `seen` are
/// intact when `seen` itself is still kept; when it is not, some may be
/// gone, and the answer errs on the side of yes (a re-check costs one
/// pipelined read per 500 cached tokens, no bcrypt).
fn missed_events(seen: EntryId, stream: Option<StreamState>) -> bool {
    let Some(stream) = stream else {
        // Gone (data lost, or deleted): missed something if it had anything.
        return seen != (0, 0);
    };
    if stream.last_generated < seen {
        // Recreated since: its entries may have ids we think we have seen.
        return true;
    }
    if stream.last_generated == seen || stream.removed == Some(0) {
        return false; // nothing new, or nothing ever removed
    }
    match stream.first_entry {
        None => true, // new entries came, and all are gone
        Some(first) => first > seen,
    }
}

async fn stream_state(conn: &mut Connection, key: &str) -> redis::RedisResult<Option<StreamState>> {
    let reply: redis::RedisResult<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(conn)
        .await;
    let fields = match reply {
        Ok(fields) => fields,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let field =
        |name: &str| -> Option<String> { redis::from_redis_value(fields.get(name)?.clone()).ok() };
    let number = |name: &str| field(name).and_then(|n| n.parse::<u64>().ok());
    let first_entry = fields.get("first-entry").and_then(|entry| {
        let (id, _): (String, redis::Value) = redis::from_redis_value(entry.clone()).ok()?;
        parse_entry_id(&id)
    });
    Ok(Some(StreamState {
        last_generated: field("last-generated-id")
            .and_then(|id| parse_entry_id(&id))
            .unwrap_or((0, 0)),
        first_entry,
        removed: number("entries-added")
            .zip(number("length"))
            .map(|(added, length)| added.saturating_sub(length)),
    }))
}

/// Reads the events stream for as long as the sink lives: every revocation
/// made by any process reaches the sink, once connected, within a read.
/// After a break it replays from the last entry it saw; only if entries it
/// had not seen were trimmed away (or the stream is gone) does it ask the
/// store about each cached token instead. While disconnected, the sink is
/// told, so it trusts its cache for less long (docs/design/redis-layout.md,
/// "Revocations").
async fn watch(connector: Connector, keys: Keys, sink: Weak<dyn RevocationSink>) {
    let events = keys.events();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(READ_BLOCK + RESPONSE_TIMEOUT));
    // The newest entry seen; `None` until the first connection, which
    // starts from the stream's end.
    let mut seen: Option<EntryId> = None;
    let mut backoff = RECONNECT_BACKOFF.0;
    // Since when Redis has been unreachable, so its return is logged.
    let mut outage: Option<std::time::Instant> = None;
    while sink.strong_count() > 0 {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
            connector.connect(&config),
        )
        .await;
        match connected {
            Ok(Ok(mut conn)) => match catch_up(&mut conn, &keys, &mut seen, &sink).await {
                Ok(()) => {
                    backoff = RECONNECT_BACKOFF.0;
                    if let Some(since) = outage.take() {
                        let after = humantime::format_duration(Duration::from_secs(
                            since.elapsed().as_secs(),
                        ));
                        tracing::info!(stream = %events, %after, "reconnected to Redis; reading token events again");
                    }
                    let Some(strong) = sink.upgrade() else { return };
                    strong.caught_up();
                    drop(strong);
                    tracing::debug!(stream = %events, "reading token events");
                    if let Err(e) = read_events(&mut conn, &keys, &mut seen, &sink).await {
                        tracing::warn!(stream = %events, error = %e, "token event stream lost; reconnecting");
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %events, error = %e, "cannot catch up on token events; retrying")
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot connect to read token events; retrying")
            }
            Err(_) => tracing::warn!("connecting to read token events timed out; retrying"),
        }
        outage.get_or_insert_with(std::time::Instant::now);
        let Some(strong) = sink.upgrade() else { return };
        strong.unsubscribed();
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
    }
}

/// On (re)connecting: decides where to read from, and re-checks the cached
/// tokens if events this reader had not seen are gone.
async fn catch_up(
    conn: &mut Connection,
    keys: &Keys,
    seen: &mut Option<EntryId>,
    sink: &Weak<dyn RevocationSink>,
) -> redis::RedisResult<()> {
    let stream = stream_state(conn, &keys.events()).await?;
    let end = stream.map_or((0, 0), |s| s.last_generated);
    // Before the first connection there is no position to replay from:
    // whatever was cached meanwhile (usually nothing) is re-checked.
    if seen.is_some_and(|last| !missed_events(last, stream)) {
        return Ok(()); // the next read replays what came meanwhile
    }
    let Some(strong) = sink.upgrade() else {
        return Ok(());
    };
    let ids = strong.recheck();
    if seen.is_some() {
        tracing::warn!(
            cached = ids.len(),
            "token events were trimmed or lost while disconnected; re-checking cached tokens with the store"
        );
    }
    for batch in ids.chunks(RECHECK_BATCH) {
        let reads = batch
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(keys.token(id))
                    .arg("id")
                    .arg("revoked_at")
                    .arg("disabled_at");
                cmd
            })
            .collect();
        let states: Vec<(Option<String>, Option<String>, Option<String>)> =
            each_cmd(conn.clone(), reads).await?;
        for (id, (exists, revoked_at, disabled_at)) in batch.iter().zip(states) {
            if exists.is_none() || revoked_at.is_some() {
                strong.revoked(*id);
            } else if disabled_at.is_some() {
                // Looked up again (no bcrypt: the store refuses it first).
                strong.changed(*id);
            }
        }
    }
    // Everything before the state read above is now accounted for.
    *seen = Some(end);
    Ok(())
}

/// Reads events until the connection fails, telling the sink of each
/// revocation.
async fn read_events(
    conn: &mut Connection,
    keys: &Keys,
    seen: &mut Option<EntryId>,
    sink: &Weak<dyn RevocationSink>,
) -> redis::RedisResult<()> {
    let events = keys.events();
    let block = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(1_000);
    loop {
        let from = entry_id_text(seen.unwrap_or((0, 0)));
        // [[stream, [[id, [field, value, …]], …]]], or nil after the block.
        type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
        let reply: Reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&events)
            .arg(&from)
            .query_async(conn)
            .await?;
        let Some(strong) = sink.upgrade() else {
            return Ok(());
        };
        let entries: Vec<_> = reply.into_iter().flatten().flat_map(|(_, e)| e).collect();
        let full = entries.len() >= READ_COUNT;
        for (id, fields) in entries {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair.first().is_some_and(|f| f == name))
                    .and_then(|pair| pair.get(1))
            };
            let token = field("id").and_then(|t| t.parse::<TokenId>().ok());
            match (field("type").map(String::as_str), token) {
                (Some("revoked"), Some(token)) => strong.revoked(token),
                // Any other change (a quota set): read the token again.
                (_, Some(token)) => strong.changed(token),
                (_, None) => {
                    tracing::warn!(stream = %events, entry = %id, "ignoring a malformed token event")
                }
            }
            if let Some(id) = parse_entry_id(&id) {
                *seen = Some(id);
            }
        }
        // Far behind (a burst of changes): make sure nothing unread was
        // trimmed meanwhile.
        if full {
            drop(strong);
            catch_up(conn, keys, seen, sink).await?;
        }
    }
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

/// The HASH fields of a record. Absent options are absent fields.
fn encode(record: &TokenRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", record.id.to_string()),
        ("account_id", record.account_id.clone()),
        ("name", record.name.clone()),
        ("hash", record.hash.clone()),
        ("created_at", record.created_at.to_string()),
        ("updated_at", record.updated_at.to_string()),
    ];
    let optional = [
        ("expires_at", record.expires_at),
        ("last_accessed", record.last_accessed),
        ("revoked_at", record.revoked_at),
        ("disabled_at", record.disabled_at),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?.to_string()))),
    );
    if !record.scopes.is_empty() {
        fields.push(("scopes", record.scopes.to_spaced()));
    }
    if !record.allowed_ips.is_empty() {
        fields.push(("allowed_ips", record.allowed_ips.to_spaced()));
    }
    if !record.meta.is_empty() {
        fields.push(("meta", record.meta.as_json().to_owned()));
    }
    if let Some(from) = record.rotated_from {
        fields.push(("rotated_from", from.to_string()));
    }
    if let Some(to) = record.rotated_to {
        fields.push(("rotated_to", to.to_string()));
    }
    if let Some(rate_limit) = record.rate_limit {
        fields.push(("rate_limit", rate_limit.to_field()));
    }
    if let Some(quota) = &record.quota {
        fields.push(("quota_remaining", quota.remaining.to_string()));
        fields.push(("quota_refilled_at", quota.refilled_at.to_string()));
        fields.push(("quota_period", quota.period.to_string()));
        if let Some(refill) = quota.refill {
            fields.push(("quota_refill_amount", refill.amount.to_string()));
            fields.push(("quota_refill_interval", refill.interval.to_field()));
        }
    }
    fields
}

/// Reads a record back from its HASH fields; `None` for an absent key.
fn decode(
    id: TokenId,
    fields: &HashMap<String, String>,
) -> Result<Option<TokenRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let corrupt = |field| StoreError::Corrupt {
        id: id.to_string(),
        field,
    };
    let required = |name: &'static str| fields.get(name).cloned().ok_or_else(|| corrupt(name));
    let number = |name: &'static str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|v| i64::from_str(v).map_err(|_| corrupt(name)))
            .transpose()
    };
    let id_field = |name: &'static str| -> Result<Option<TokenId>, StoreError> {
        fields
            .get(name)
            .map(|v| v.parse().map_err(|_| corrupt(name)))
            .transpose()
    };
    let stored_id: TokenId = required("id")?.parse().map_err(|_| corrupt("id"))?;
    if stored_id != id {
        return Err(corrupt("id"));
    }
    Ok(Some(TokenRecord {
        id,
        account_id: required("account_id")?,
        name: required("name")?,
        hash: required("hash")?,
        created_at: number("created_at")?.ok_or_else(|| corrupt("created_at"))?,
        updated_at: number("updated_at")?.ok_or_else(|| corrupt("updated_at"))?,
        expires_at: number("expires_at")?,
        last_accessed: number("last_accessed")?,
        revoked_at: number("revoked_at")?,
        quota: decode_quota(fields, &corrupt)?,
        disabled_at: number("disabled_at")?,
        // Absent (records older than scopes, or none given): no scopes.
        scopes: fields
            .get("scopes")
            .map(|s| Scopes::parse_spaced(s).map_err(|_| corrupt("scopes")))
            .transpose()?
            .unwrap_or_default(),
        allowed_ips: fields
            .get("allowed_ips")
            .map(|s| AllowedIps::parse_spaced(s).map_err(|_| corrupt("allowed_ips")))
            .transpose()?
            .unwrap_or_default(),
        meta: fields
            .get("meta")
            .map(|s| Meta::parse(s).map_err(|_| corrupt("meta")))
            .transpose()?
            .unwrap_or_default(),
        rotated_from: id_field("rotated_from")?,
        rotated_to: id_field("rotated_to")?,
        rate_limit: fields
            .get("rate_limit")
            .map(|s| TokenRateLimit::from_field(s).ok_or_else(|| corrupt("rate_limit")))
            .transpose()?,
    }))
}

/// An audit entry from its stream fields.
fn decode_audit(id: String, fields: &HashMap<String, String>) -> Result<AuditEntry, StoreError> {
    let corrupt = |field| StoreError::Corrupt {
        id: format!("audit {id}"),
        field,
    };
    let text = |name: &'static str| fields.get(name).cloned().ok_or_else(|| corrupt(name));
    let optional = |name: &'static str| text(name).map(|v| (!v.is_empty()).then_some(v));
    let changes = match serde_json::from_str(&text("changes")?) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(corrupt("changes")),
    };
    Ok(AuditEntry {
        at: text("at")?.parse().map_err(|_| corrupt("at"))?,
        actor: Actor {
            kind: text("actor")?,
            id: text("actor_id")?,
        },
        account_id: optional("account")?,
        token_id: optional("token")?
            .map(|t| t.parse().map_err(|_| corrupt("token")))
            .transpose()?,
        action: AuditAction::parse(&text("action")?).ok_or_else(|| corrupt("action"))?,
        changes,
        id,
    })
}

/// The quota fields of a record (docs/design/redis-layout.md): absent without
/// `quota_remaining`.
fn decode_quota(
    fields: &HashMap<String, String>,
    corrupt: &dyn Fn(&'static str) -> StoreError,
) -> Result<Option<Quota>, StoreError> {
    let Some(remaining) = fields.get("quota_remaining") else {
        return Ok(None);
    };
    let parse = |name: &'static str| -> Result<Option<i64>, StoreError> {
        fields
            .get(name)
            .map(|v| v.parse::<i64>().map_err(|_| corrupt(name)))
            .transpose()
    };
    let count = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
    let remaining = remaining
        .parse::<i64>()
        .map_err(|_| corrupt("quota_remaining"))?;
    let refill = match (
        parse("quota_refill_amount")?,
        fields.get("quota_refill_interval"),
    ) {
        (Some(amount), Some(interval)) => Some(Refill {
            amount: count(amount),
            interval: RefillInterval::from_field(interval)
                .ok_or_else(|| corrupt("quota_refill_interval"))?,
        }),
        (None, None) => None,
        _ => return Err(corrupt("quota_refill_interval")),
    };
    Ok(Some(Quota {
        remaining: count(remaining),
        refill,
        refilled_at: parse("quota_refilled_at")?.unwrap_or(0),
        period: count(parse("quota_period")?.unwrap_or(0)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last: u64, first: Option<u64>, removed: Option<u64>) -> Option<StreamState> {
        Some(StreamState {
            last_generated: (last, 0),
            first_entry: first.map(|f| (f, 0)),
            removed,
        })
    }

    #[test]
    fn a_reader_knows_when_it_may_have_missed_events() {
        // Nothing new; or new entries, nothing ever removed: replay.
        assert!(!missed_events((5, 0), state(5, Some(1), Some(3))));
        assert!(!missed_events((5, 0), state(9, Some(1), Some(0))));
        assert!(!missed_events((0, 0), state(9, Some(1), Some(0))));
        // Its own position still kept: everything after it is too.
        assert!(!missed_events((5, 0), state(9, Some(4), Some(3))));
        assert!(!missed_events((5, 0), state(9, Some(5), Some(4))));
        // Trimmed past it, or emptied after new entries came.
        assert!(missed_events((5, 0), state(9, Some(7), Some(6))));
        assert!(missed_events((5, 0), state(9, None, Some(9))));
        // Redis 6 (no counts): the position alone decides.
        assert!(!missed_events((5, 0), state(9, Some(2), None)));
        assert!(missed_events((5, 0), state(9, Some(7), None)));
        // Gone, or recreated behind it.
        assert!(missed_events((5, 0), None));
        assert!(!missed_events((0, 0), None));
        assert!(missed_events((5, 0), state(3, Some(1), Some(0))));
    }
}
