//! A small real upstream (hyper, HTTP/1.1, in cleartext or over TLS) that
//! reports what it received.
//!
//! - any path: 200 `{"method", "uri", "headers": [[name, value], …], "body_bytes"}`
//!   (the body is read in streaming fashion and only counted);
//! - `/slow?ms=N`: answers after N ms;
//! - `/ws` with `Upgrade`: 101 (after `ms` milliseconds with `?ms=N`),
//!   then echoes every byte on the upgraded connection;
//! - `/events`: a server-sent-events stream, `data: N` every 100 ms, until
//!   the client goes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts on a free loopback port, serving HTTPS with `cert` / `key`
    /// (PEM files): see [`Upstream::https_url`].
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let acceptor = super::tls::acceptor(cert, key, &[b"http/1.1"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    /// `https://127.0.0.1:{port}`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

fn full(body: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(body.into()).boxed()
}

async fn handle(mut request: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = request.uri().path().to_owned();
    if path == "/slow" || path == "/ws" {
        let ms: u64 = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(if path == "/ws" { 0 } else { 1_000 });
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/ws" && request.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(Bytes::new()))
            .unwrap();
        return Ok(response);
    }
    if path == "/events" {
        let ticks = futures_util::stream::unfold(0u64, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let frame = hyper::body::Frame::data(Bytes::from(format!("data: {n}\n\n")));
            Some((Ok::<_, Infallible>(frame), n + 1))
        });
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(ticks).boxed())
            .unwrap();
        return Ok(response);
    }
    let headers: Vec<_> = request
        .headers()
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let mut body = request.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes += frame.data_ref().map_or(0, Bytes::len),
            Err(_) => break,
        }
    }
    let reply = json!({ "method": method, "uri": uri, "headers": headers, "body_bytes": bytes });
    Ok(Response::new(full(reply.to_string())))
}
