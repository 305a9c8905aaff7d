//! A minimal upstream for the load benchmark (`benches/load.sh`): a hyper
//! HTTP/1.1 server on `127.0.0.1:<port>` answering every request with 200 and
//! a short body, with keep-alive.
//!
//! Paths under `/_auth` get 200 with an empty body instead, for use as an
//! nginx `auth_request` stub: nginx never reads the body of an auth
//! subrequest's answer, so an answer with a body costs a new upstream
//! connection per request.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 3000
//! curl http://127.0.0.1:3000/
//! ```

#![allow(clippy::print_stdout)] // an example talks to its user on stdout

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"ok\n";

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if request.uri().path().starts_with("/_auth") {
        Bytes::new()
    } else {
        Bytes::from_static(BODY)
    };
    Ok(Response::new(Full::new(body)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: bench_upstream <port>")?
        .parse()
        .map_err(|e| format!("bad port: {e}"))?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("bench_upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
