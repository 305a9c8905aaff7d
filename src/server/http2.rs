//! Time limits for HTTP/2 client connections (docs/reference/http-contract.md,
//! "Connections").
//!
//! hyper bounds an HTTP/1.1 connection's wait for request headers, between
//! requests too, with `header_read_timeout`; for HTTP/2 it bounds nothing of
//! the kind: a client that sends the preface and goes quiet (answering pings
//! keeps the connection alive), or starts a header block (`HEADERS` without
//! `END_HEADERS`) and never continues it, holds its connection slot for
//! ever. Two limits close such connections, each with a GOAWAY first:
//! - `[server] idle_timeout`: no open stream for this long;
//! - `[server] header_read_timeout`: a header block (a stream's request
//!   headers) not complete this long after its first frame began.
//!
//! Open streams are counted by wrapping the service (a stream is open from
//! its request until its response body is dropped). Header blocks are not
//! visible through hyper, so [`FrameFollower`] reads the frame headers of the
//! bytes going into it: 9 bytes per frame, no payload parsing.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

use crate::wire::{Body, BoxError, OnRead, ReadHook};

/// Frame types and the flag this module looks at (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
/// The client connection preface, before the first frame.
const PREFACE_LEN: usize = 24;

/// What the connection's limits watch, shared by the IO, the streams and
/// the connection's task. Times are milliseconds since `start`.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    open_streams: AtomicUsize,
    /// When the last stream closed (or the connection opened).
    idle_since: AtomicU64,
    /// When the pending header block began, plus one; 0: none pending.
    header_block_since: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            open_streams: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            header_block_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Why the connection should close now, if it should.
    pub(crate) fn overdue(&self, idle: Duration, header_read: Duration) -> Option<&'static str> {
        let now = self.now();
        let block = self.header_block_since.load(Ordering::Relaxed);
        if block != 0 && Duration::from_millis(now.saturating_sub(block - 1)) >= header_read {
            return Some("a stream's headers did not arrive within header_read_timeout");
        }
        let since = self.idle_since.load(Ordering::Relaxed);
        if self.open_streams.load(Ordering::Relaxed) == 0
            && Duration::from_millis(now.saturating_sub(since)) >= idle
        {
            return Some("no open stream for idle_timeout");
        }
        None
    }

    /// A stream opened: counted until the returned guard is dropped.
    pub(crate) fn stream(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }
}

/// Counts one open stream; dropped with the response body.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Relaxed);
        activity.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its stream counted as open until it is done.
pub(crate) fn guarded(body: Body, guard: StreamGuard) -> Body {
    use http_body_util::BodyExt;
    Guarded {
        inner: body,
        _guard: guard,
    }
    .boxed()
}

struct Guarded {
    inner: Body,
    _guard: StreamGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's side of an HTTP/2 connection, with the frame headers of
/// what it sends followed for pending header blocks.
pub(crate) type FrameWatch<T> = ReadHook<T, FrameFollower>;

/// `io`, its frames followed into `activity`.
pub(crate) fn watch_frames<T>(io: T, activity: Arc<Activity>) -> FrameWatch<T> {
    ReadHook {
        inner: io,
        hook: FrameFollower::new(activity),
    }
}

/// Follows frame boundaries through the bytes a client sends.
pub(crate) struct FrameFollower {
    activity: Arc<Activity>,
    /// Preface bytes still to skip.
    preface_left: usize,
    /// The frame header being read, and how much of it has arrived.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    /// Whether the current frame ends a header block.
    ends_block: bool,
}

impl FrameFollower {
    fn new(activity: Arc<Activity>) -> Self {
        Self {
            activity,
            preface_left: PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            ends_block: false,
        }
    }

    /// Follows the frame boundaries through `data`, as it arrives.
    fn follow(&mut self, mut data: &[u8]) {
        let skip = self.preface_left.min(data.len());
        self.preface_left -= skip;
        data = &data[skip..];
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            let n = (9 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len < 9 {
                break;
            }
            self.header_len = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            self.ends_block = false;
            if matches!(kind, HEADERS | PUSH_PROMISE | CONTINUATION) {
                if kind != CONTINUATION {
                    let now = self.activity.now() + 1;
                    self.activity
                        .header_block_since
                        .store(now, Ordering::Relaxed);
                }
                self.ends_block = flags & END_HEADERS != 0;
            }
            if self.payload_left == 0 {
                self.frame_done();
            }
        }
    }

    fn frame_done(&mut self) {
        if self.ends_block {
            self.activity.header_block_since.store(0, Ordering::Relaxed);
            self.ends_block = false;
        }
    }
}

impl OnRead for FrameFollower {
    fn read(&mut self, data: &[u8]) {
        self.follow(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn pending(watch: &FrameFollower) -> bool {
        watch.activity.header_block_since.load(Ordering::Relaxed) != 0
    }

    #[tokio::test]
    async fn header_blocks_are_followed_across_reads_and_frames() {
        let mut watch = FrameFollower::new(Activity::new());
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(HEADERS, 0x1, &[0x82, 0x84])); // no END_HEADERS
        // Byte by byte: boundaries fall anywhere.
        for b in &bytes {
            watch.follow(std::slice::from_ref(b));
        }
        assert!(pending(&watch));
        let continuation = frame(CONTINUATION, END_HEADERS, &[0x86; 3]);
        watch.follow(&continuation[..10]);
        assert!(pending(&watch), "its payload is not all here yet");
        watch.follow(&continuation[10..]);
        assert!(!pending(&watch));
        // A whole block in one frame, then DATA: nothing pending.
        let mut more = frame(HEADERS, END_HEADERS, &[0x82]);
        more.extend(frame(0x0, 0x1, b"hello"));
        watch.follow(&more);
        assert!(!pending(&watch));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_header_limits() {
        let activity = Activity::new();
        let (idle, header) = (Duration::from_secs(30), Duration::from_secs(10));
        assert_eq!(activity.overdue(idle, header), None);
        let stream = activity.stream();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(activity.overdue(idle, header), None, "a stream is open");
        drop(stream);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(activity.overdue(idle, header), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(activity.overdue(idle, header).is_some());
        let _stream = activity.stream();
        activity
            .header_block_since
            .store(activity.now() + 1, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(activity.overdue(idle, header).is_some());
    }
}
