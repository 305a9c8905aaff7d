//! The events reader: every change any process makes reaches this
//! replica's cache (docs/design/redis-layout.md, "Revocations").

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use super::connection::{Connection, Connector};
use super::keys::Keys;
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, each_cmd};
use crate::audit::parse_entry_id;
use crate::store::RevocationSink;
use crate::token::TokenId;

/// Shortest and longest pause between reconnection attempts: short, since
/// every moment disconnected is a moment another replica's revocation waits,
/// and an attempt costs one connection (refused at once while Redis is down,
/// bounded by the connect timeout while it is unreachable).
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(500));
/// How long one read waits for new events. Each read that returns is also
/// proof that the connection is alive: a connection that died without a
/// reset (a partition, a frozen Redis) fails by the response timeout.
pub(super) const READ_BLOCK: Duration = Duration::from_secs(1);
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
pub(super) async fn watch(connector: Connector, keys: Keys, sink: Weak<dyn RevocationSink>) {
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
