use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, StreamBody};

use super::bodies::WATCH_AFTER;
use super::*;
use crate::auth::{Authenticator, Grant};
use crate::wire;

#[tokio::test]
async fn identity_trailers_are_stripped_and_data_passes() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-account-id", HeaderValue::from_static("evil"));
    trailers.insert("x_token_id", HeaderValue::from_static("evil"));
    trailers.insert("x-checksum", HeaderValue::from_static("kept"));
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let service =
        crate::service::TokenService::new(std::sync::Arc::new(crate::store::MemoryStore::new()));
    let auth = Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
    let body = ClientBody {
        inner: StreamBody::new(futures_util::stream::iter(frames)),
        auth,
        watch: None,
        idle: None,
        idle_timeout: Duration::ZERO,
    };
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers.len(), 1);
    assert_eq!(trailers["x-checksum"], "kept");
    assert_eq!(collected.to_bytes(), "hello");
}

#[tokio::test(start_paused = true)]
async fn only_time_spent_waiting_for_the_client_counts_as_a_stall() {
    let service =
        crate::service::TokenService::new(std::sync::Arc::new(crate::store::MemoryStore::new()));
    let auth = Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
    let timeout = Duration::from_secs(5);
    let watch = Arc::new(BodyWatch::default());
    let never = futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
    let body = ClientBody {
        inner: StreamBody::new(never),
        auth,
        watch: Some(watch.clone()),
        idle: Some(Box::pin(tokio::time::sleep(timeout))),
        idle_timeout: timeout,
    };
    let mut body = std::pin::pin!(body);
    macro_rules! poll {
        () => {
            std::future::poll_fn(|cx| {
                Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
            })
            .await
        };
    }
    // Longer than the timeout before the body is first read (connecting
    // upstream, a 100-continue): not the client's stall.
    tokio::time::advance(timeout * 2).await;
    assert!(poll!().is_pending());
    assert!(watch.fault.get().is_none());
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    assert!(poll!().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(poll!(), Poll::Ready(Some(true))));
    assert!(matches!(watch.fault.get(), Some(ClientFault::Stalled)));
}

#[tokio::test(start_paused = true)]
async fn a_response_body_the_upstream_stops_sending_is_cut_after_the_timeout() {
    let timeout = Duration::from_secs(30);
    let first = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
        Bytes::from_static(b"first"),
    ))]);
    let then_nothing = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let body = UpstreamBody {
        inner: StreamBody::new(then_nothing),
        idle: None,
        idle_timeout: timeout,
        waiting: false,
        idle_deadline: None,
        holder: None,
        watch: None,
    };
    let mut body = std::pin::pin!(body);
    macro_rules! poll {
        () => {
            std::future::poll_fn(|cx| {
                Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
            })
            .await
        };
    }
    // Longer than the timeout before the client reads: not the
    // upstream's silence.
    tokio::time::advance(timeout * 2).await;
    assert!(matches!(poll!(), Poll::Ready(Some(false))));
    assert!(poll!().is_pending());
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    assert!(poll!().is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(poll!(), Poll::Ready(Some(true))));
}

/// A body the upstream sends faster than the client reads never waits,
/// yet it is watched once it has streamed for a second, and cut when
/// its token is revoked.
#[tokio::test(start_paused = true)]
async fn a_body_that_never_waits_is_still_watched_and_cut() {
    let service =
        crate::service::TokenService::new(std::sync::Arc::new(crate::store::MemoryStore::new()))
            .with_bcrypt_cost(4);
    let created = service
        .create_token(crate::service::CreateTokenParams {
            account_id: "acme".into(),
            name: "stream".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let auth = Authenticator::new(service.clone(), &crate::auth::AuthConfig::default()).unwrap();
    let always = futures_util::stream::repeat_with(|| {
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"x")))
    });
    let body = UpstreamBody {
        inner: StreamBody::new(always),
        idle: None,
        idle_timeout: Duration::from_secs(30),
        waiting: false,
        idle_deadline: None,
        holder: Some(Holder {
            auth,
            token_id: created.info.id,
            grant: Grant::default(),
            since: tokio::time::Instant::now(),
            frames: 0,
        }),
        watch: None,
    };
    let mut body = std::pin::pin!(body);
    macro_rules! poll {
        () => {
            std::future::poll_fn(|cx| {
                Poll::Ready(body.as_mut().poll_frame(cx).map(|f| f.map(|r| r.is_err())))
            })
            .await
        };
    }
    for _ in 0..10 {
        assert!(matches!(poll!(), Poll::Ready(Some(false))));
    }
    assert!(body.watch.is_none(), "watched before a second");
    tokio::time::advance(WATCH_AFTER).await;
    assert!(matches!(poll!(), Poll::Ready(Some(false))));
    assert!(body.watch.is_some(), "not watched after a second");
    service.revoke_token(created.info.id, "acme").await.unwrap();
    assert!(matches!(poll!(), Poll::Ready(Some(true))), "not cut");
    assert!(body.watch.is_none());
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert("x-secret", HeaderValue::from_static("1"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert("x-kept", HeaderValue::from_static("1"));
    wire::remove_hop_by_hop(&mut headers, false);
    assert_eq!(
        headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["x-kept"]
    );
}
