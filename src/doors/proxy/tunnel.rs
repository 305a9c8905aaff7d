//! Upgraded connections (WebSocket): the two halves spliced together until
//! either side closes, an idle timeout passes, or the token ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Response;
use hyper_util::rt::TokioIo;

use crate::auth::TokenWatch;
use crate::wire::{self, Body};

/// Answers 101 to the client and copies bytes both ways once both sides have
/// switched protocols, until either side closes, no byte has moved either
/// way for `idle` (checked four times per `idle`), or the token that opened
/// it no longer admits it (`watch`; docs/reference/http-contract.md, "Open
/// connections").
pub(super) fn splice(
    client: hyper::upgrade::OnUpgrade,
    mut response: Response<hyper::body::Incoming>,
    idle: Duration,
    mut watch: Option<TokenWatch>,
) -> Response<Body> {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = wire::ReadHook {
            inner: TokioIo::new(client),
            hook: CountBytes(moved.clone()),
        };
        let mut upstream = wire::ReadHook {
            inner: TokioIo::new(upstream),
            hook: CountBytes(moved.clone()),
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        let mut ticks = tokio::time::interval(idle / 4);
        let (mut seen, mut since) = (0, tokio::time::Instant::now());
        let revoked = async {
            match watch.as_mut() {
                Some(watch) => (watch.token_id(), watch.ended().await),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(revoked);
        loop {
            tokio::select! {
                (token_id, why) = &mut revoked => {
                    tracing::info!(%token_id, reason = %why, "closed a tunnel: its token no longer admits it");
                    return;
                }
                ended = &mut copy => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "upgraded connection ended");
                    }
                    return;
                }
                now = ticks.tick() => {
                    let total = moved.load(Ordering::Relaxed);
                    if total != seen {
                        (seen, since) = (total, now);
                    } else if now - since >= idle {
                        tracing::debug!(?idle, "closed an idle upgraded connection");
                        return;
                    }
                }
            }
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, wire::empty())
}

/// Counts the bytes read from a tunnel end (for the idle timeout).
struct CountBytes(Arc<AtomicU64>);

impl wire::OnRead for CountBytes {
    fn read(&mut self, data: &[u8]) {
        self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
}
