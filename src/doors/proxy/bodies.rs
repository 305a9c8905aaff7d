//! The request and response bodies through the proxy: a client that stalls
//! is timed out, an upstream that stops sending is cut, and a streaming
//! response ends with its token (docs/reference/http-contract.md, "Open
//! connections").

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::auth::{Authenticator, Ended, Grant};
use crate::doors::proxy::SendError;
use crate::token::TokenId;
use crate::wire::BoxError;

/// `future`, unless `timer` completes first ([`SendError::TimedOut`]).
pub(super) async fn within<F: Future>(
    timer: Pin<&mut impl Future<Output = ()>>,
    future: F,
) -> Result<F::Output, SendError> {
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = timer => Err(SendError::TimedOut),
    }
}

/// Completes when the upstream has had `timeout` to answer: counted from
/// when the request body has been sent, as nginx's `proxy_read_timeout` is
/// (at once for a request without one). While the body streams, the upstream
/// not reading any of it for one whole check window (so between one and two
/// `timeout`s) counts too; a client that stops
/// sending is [`ClientBody`]'s to time out.
pub(super) async fn upstream_timer(timeout: Duration, watch: Option<&BodyWatch>) {
    if let Some(watch) = watch {
        let mut progress = watch.progress.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                () = watch.sent.notified() => break,
                () = tokio::time::sleep(timeout) => {
                    let now = watch.progress.load(Ordering::Relaxed);
                    if now == progress && !watch.client_pending.load(Ordering::Relaxed) {
                        return;
                    }
                    progress = now;
                }
            }
        }
    }
    tokio::time::sleep(timeout).await;
}

/// How a request body is doing, shared by the body and the proxy's send.
#[derive(Debug, Default)]
pub(super) struct BodyWatch {
    /// Notified once the body has ended (or failed).
    sent: tokio::sync::Notify,
    /// Frames passed on so far.
    progress: AtomicU64,
    /// Whether the body is waiting for the client (not for the upstream).
    client_pending: AtomicBool,
    /// What the client did wrong, if it did.
    pub(super) fault: OnceLock<ClientFault>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum ClientFault {
    /// No byte for `[proxy] client_body_timeout`: 408.
    Stalled,
    /// Malformed (a bad chunk) or cut short: 400.
    Broken,
}

pin_project! {
    /// The client's request body on its way upstream: trailers lose any
    /// identity header (a client could otherwise send `X-Account-Id` as a
    /// trailer), and, when watched, the body reports its end, its faults,
    /// and times out when the client stops sending it.
    pub(super) struct ClientBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) auth: Authenticator,
        pub(super) watch: Option<Arc<BodyWatch>>,
        pub(super) idle: Option<Pin<Box<tokio::time::Sleep>>>,
        pub(super) idle_timeout: Duration,
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if let Some(watch) = this.watch.as_deref() {
            match &polled {
                Poll::Pending => {
                    let waiting = watch.client_pending.swap(true, Ordering::Relaxed);
                    if let Some(idle) = this.idle.as_mut() {
                        // Only time spent waiting for the client counts: the
                        // clock starts when it begins (not while hyper was
                        // connecting upstream or the upstream was not reading).
                        if !waiting {
                            idle.as_mut()
                                .reset(tokio::time::Instant::now() + *this.idle_timeout);
                        }
                        if idle.as_mut().poll(cx).is_ready() {
                            let _ = watch.fault.set(ClientFault::Stalled);
                            watch.sent.notify_one();
                            return Poll::Ready(Some(Err(
                                "the client stopped sending the body".into()
                            )));
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    let _ = watch.fault.set(ClientFault::Broken);
                }
                Poll::Ready(_) => {
                    watch.client_pending.store(false, Ordering::Relaxed);
                    watch.progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            if ended {
                watch.sent.notify_one();
            }
        }
        match std::task::ready!(polled) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    this.auth.identity_headers().strip(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a response must have been streaming before its token is
/// watched: shorter ones cost no registration, and a revocation still
/// reaches a long one (server-sent events, a big download) within about a
/// second (docs/reference/http-contract.md, "Open connections").
pub(super) const WATCH_AFTER: Duration = Duration::from_secs(1);

/// What a response body needs to watch the token that admitted its
/// request, once it has streamed for [`WATCH_AFTER`].
pub(super) struct Holder {
    pub(super) auth: Authenticator,
    pub(super) token_id: TokenId,
    pub(super) grant: Grant,
    /// When the response began (its headers came).
    pub(super) since: tokio::time::Instant,
    /// Frames passed on so far.
    pub(super) frames: u32,
}

/// A body the upstream sends faster than the client reads never waits for
/// it: from this frame on, each frame looks at the clock instead (a short
/// response, of fewer frames, reads no clock).
const FRAMES_BEFORE_LOOKING: u32 = 4;

impl Holder {
    /// Starts watching the token: the watch, or why it already ended.
    fn watch(self, cx: &mut Context<'_>) -> Result<Watching, (TokenId, Ended)> {
        let watch = self.auth.watch_grant(self.token_id, &self.grant);
        let mut watching: Pin<Box<dyn Future<Output = (TokenId, Ended)> + Send>> =
            Box::pin(watch.into_ended());
        match watching.as_mut().poll(cx) {
            Poll::Ready(ended) => Err(ended),
            Poll::Pending => Ok(std::sync::Mutex::new(watching)),
        }
    }
}

/// The error that cuts a response whose token no longer admits it.
fn cut((token_id, why): (TokenId, Ended)) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    tracing::info!(%token_id, reason = %why, "cut a streaming response: its token no longer admits it");
    Poll::Ready(Some(Err("the token no longer admits this response".into())))
}

/// A watched token's end, as a body polls it. In a `Mutex` only because a
/// response body must be `Sync`; one task polls it.
type Watching = std::sync::Mutex<Pin<Box<dyn Future<Output = (TokenId, Ended)> + Send>>>;

pin_project! {
    /// The upstream's response body on its way to the client: fails once
    /// the upstream has sent nothing for `idle_timeout`. Only time spent
    /// waiting for the upstream counts (the clock starts when a poll finds
    /// nothing), not time the client took to read what came before. A body
    /// still streaming after [`WATCH_AFTER`] also ends, cut short as an
    /// idle one is, when its token no longer admits the request.
    pub(super) struct UpstreamBody<B> {
        #[pin]
        pub(super) inner: B,
        // Made on the first wait, so a body that is all there at once costs
        // no timer, and reset on each wait after.
        pub(super) idle: Option<Pin<Box<tokio::time::Sleep>>>,
        pub(super) idle_timeout: Duration,
        pub(super) waiting: bool,
        // When the current wait times out.
        pub(super) idle_deadline: Option<tokio::time::Instant>,
        // The token to watch (`None` for a public route), until it is.
        pub(super) holder: Option<Holder>,
        pub(super) watch: Option<Watching>,
    }
}

impl<B> HttpBody for UpstreamBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(watch) = this.watch.as_mut() {
            let watch = watch
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Poll::Ready(ended) = watch.as_mut().poll(cx) {
                // Done: never polled again.
                *this.watch = None;
                return cut(ended);
            }
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.waiting = false;
            if let Some(holder) = this.holder.as_mut() {
                holder.frames = holder.frames.saturating_add(1);
                if holder.frames >= FRAMES_BEFORE_LOOKING
                    && holder.since.elapsed() >= WATCH_AFTER
                    && let Some(holder) = this.holder.take()
                {
                    match holder.watch(cx) {
                        Ok(watching) => *this.watch = Some(watching),
                        Err(ended) => return cut(ended),
                    }
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !*this.waiting {
            *this.waiting = true;
            let now = tokio::time::Instant::now();
            let idle_deadline = now + *this.idle_timeout;
            *this.idle_deadline = Some(idle_deadline);
            // While the token is not watched yet, the same timer also
            // wakes the body when it is time to.
            let deadline = match this.holder.as_ref() {
                Some(holder) => idle_deadline.min(holder.since + WATCH_AFTER),
                None => idle_deadline,
            };
            match this.idle.as_mut() {
                Some(idle) => idle.as_mut().reset(deadline),
                None => *this.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        loop {
            let Some(idle) = this.idle.as_mut() else {
                return Poll::Pending;
            };
            if idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(holder) = this.holder.take() else {
                tracing::warn!(idle = ?this.idle_timeout, "the upstream stopped sending its response body; cut it");
                return Poll::Ready(Some(Err(
                    "the upstream stopped sending the response body".into()
                )));
            };
            // Streaming for WATCH_AFTER: watch the token from now on, and
            // let the timer count the idle time again.
            match holder.watch(cx) {
                Ok(watching) => *this.watch = Some(watching),
                Err(ended) => return cut(ended),
            }
            if let Some(deadline) = *this.idle_deadline {
                idle.as_mut().reset(deadline);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
