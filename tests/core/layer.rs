//! An axum router behind the tokengate Layer, served on a loopback port and
//! called over HTTP, with tokens in a real redis-server.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokengate::{AuthContext, Authenticator, RequireScopes, TokenGateLayer};

use crate::support::{RedisServer, new_scoped_token, new_token, redis_service, test_config};

async fn whoami(Extension(auth): Extension<AuthContext>, headers: HeaderMap) -> String {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    json!({
        "account_id": auth.account_id,
        "token_id": auth.token_id,
        "x-account-id": header("x-account-id"),
    })
    .to_string()
}

#[tokio::test]
async fn an_axum_router_behind_the_layer() {
    let server = RedisServer::start();
    let mut config = test_config();
    config.auth.public_routes = vec![tokengate::auth::PublicRoute {
        path_prefix: "/health".into(),
        methods: vec![],
    }];
    let service = redis_service(&server, &config).await;
    let token = new_token(&service, "acme").await;
    let auth = Authenticator::new(service, &config.auth).unwrap();
    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(
            TokenGateLayer::new(auth)
                .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |path: &str, token: Option<&str>| {
        let mut request =
            Request::get(format!("http://{addr}{path}")).header("x-account-id", "forged");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::default()).unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let www = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                www,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };

    let (status, _, body) = call("/whoami", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["account_id"], "acme");
    assert_eq!(
        body["x-account-id"], "acme",
        "the forged header was replaced"
    );
    assert_eq!(
        body["token_id"],
        tokengate::token::parse(&token).unwrap().to_string()
    );

    let (status, www, body) = call("/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some(r#"Bearer realm="tokengate""#));
    assert_eq!(body["error"], "missing_token");

    let (status, www, _) = call("/whoami", Some("mk_nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        www.as_deref(),
        Some(r#"Bearer realm="tokengate", error="invalid_token""#)
    );

    let (status, _, _) = call("/health", None).await;
    assert_eq!(status, StatusCode::OK, "public route");
}

/// Scopes in a router: `[[routes]]` through the Authenticator for one
/// route, `RequireScopes` on another; the granted scopes reach the handler
/// in `AuthContext` and `X-Token-Scopes`.
#[tokio::test]
async fn scopes_in_an_axum_router() {
    let server = RedisServer::start();
    let mut config = test_config();
    config.auth.routes = vec![tokengate::auth::ScopedRoute {
        path_prefix: "/orders".into(),
        methods: vec!["POST".into()],
        scopes: vec!["orders:write".into()],
        ..Default::default()
    }];
    let service = redis_service(&server, &config).await;
    let reader = new_scoped_token(&service, "acme", &["orders:read"]).await;
    let writer = new_scoped_token(&service, "acme", &["orders:*", "reports:read"]).await;
    let auth = Authenticator::new(service, &config.auth).unwrap();
    let scopes = |Extension(auth): Extension<AuthContext>, headers: HeaderMap| async move {
        json!({
            "scopes": auth.scopes,
            "header": headers.get("x-token-scopes").map(|v| v.to_str().unwrap().to_owned()),
        })
        .to_string()
    };
    let app = Router::new()
        .route("/orders", get(scopes).post(scopes))
        .route(
            "/reports",
            get(scopes).route_layer(RequireScopes::new(["reports:read"]).unwrap()),
        )
        .layer(TokenGateLayer::new(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: &str, path: &str, token: &str| {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-token-scopes", "*")
            .body(Full::default())
            .unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let www = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, www, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };

    let (status, _, body) = call("GET", "/orders", &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"scopes": ["orders:read"], "header": "orders:read"})
    );
    let (status, www, body) = call("POST", "/orders", &reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.as_deref(),
        Some(r#"Bearer realm="tokengate", error="insufficient_scope", scope="orders:write""#)
    );
    assert_eq!(body["error"], "insufficient_scope");
    let (status, _, _) = call("POST", "/orders", &writer).await;
    assert_eq!(status, StatusCode::OK);

    let (status, www, body) = call("GET", "/reports", &reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        www.as_deref(),
        Some(r#"Bearer realm="tokengate", error="insufficient_scope", scope="reports:read""#)
    );
    assert_eq!(body["error"], "insufficient_scope");
    let (status, _, body) = call("GET", "/reports", &writer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["header"], "orders:* reports:read");
}

/// examples/axum.rs, as built by `cargo test` (beside this test's binary),
/// or built now when only this test was asked for.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join("examples").join("axum");
    if !binary.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "axum"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example axum");
    }
    binary
}

#[tokio::test]
async fn the_example_listens_where_told_and_names_an_address_it_cannot_bind() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = Command::new(example_binary())
        .env("EXAMPLE_LISTEN", &address)
        .env_remove("TOKENGATE_REDIS_URL")
        .output()
        .expect("run examples/axum (built by cargo test)");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on {address} (set EXAMPLE_LISTEN)"
        )),
        "{stderr}"
    );

    drop(taken);
    let mut child = Command::new(example_binary())
        .env("EXAMPLE_LISTEN", &address)
        .env_remove("TOKENGATE_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let token = lines.next().unwrap().unwrap();
    let token = token.strip_prefix("demo token: ").unwrap().to_owned();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        format!("listening on http://{address}")
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{address}/whoami"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("account demo"));
}

/// Issue 21 at the Layer: letter case, HEAD and method overrides cannot
/// walk around `[[routes]]` (the Layer decides before axum routes, so
/// `/ADMIN` is refused even though axum itself would answer 404).
#[tokio::test]
async fn case_head_and_method_overrides_do_not_walk_around_routes_at_the_layer() {
    let server = RedisServer::start();
    let mut config = test_config();
    let route = |prefix: &str, methods: &[&str], scope: &str| tokengate::auth::ScopedRoute {
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        scopes: vec![scope.into()],
        ..Default::default()
    };
    config.auth.routes = vec![
        route("/admin", &[], "admin"),
        route("/orders", &["DELETE"], "orders:delete"),
        route("/reports", &["GET"], "reports:read"),
    ];
    let service = redis_service(&server, &config).await;
    let reader = new_scoped_token(&service, "acme", &["orders:read"]).await;
    let auth = Authenticator::new(service, &config.auth).unwrap();
    let app = Router::new()
        .fallback(|| async { "reached" })
        .layer(TokenGateLayer::new(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let call = |method: &str, path: &str, header: Option<(&str, &str)>| {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("authorization", format!("Bearer {reader}"));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let request = request.body(Full::default()).unwrap();
        let client = client.clone();
        async move {
            let response = client.request(request).await.unwrap();
            let www = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (response.status(), www)
        }
    };
    let refused = |(status, www): (StatusCode, String), scope: &str| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{www}");
        assert!(www.contains(&format!(r#"scope="{scope}""#)), "{www}");
    };
    assert_eq!(call("GET", "/orders/1", None).await.0, StatusCode::OK);
    assert_eq!(call("POST", "/orders/1", None).await.0, StatusCode::OK);
    for path in ["/ADMIN", "/Admin/users", "/%41dmin"] {
        refused(call("GET", path, None).await, "admin");
    }
    refused(call("HEAD", "/reports/q1", None).await, "reports:read");
    for header in [
        "X-HTTP-Method-Override",
        "X_HTTP_Method",
        "x.method.override",
    ] {
        refused(
            call("POST", "/orders/1", Some((header, "DELETE"))).await,
            "orders:delete",
        );
    }
    refused(
        call("POST", "/orders/1?_method=DELETE", None).await,
        "orders:delete",
    );
}

/// `Authenticator::watch` in a service behind the Layer: an upgraded
/// connection that selects on the watch is closed within a second of its
/// token being revoked by another process sharing the Redis.
#[tokio::test]
async fn a_service_behind_the_layer_ends_an_upgrade_when_its_token_is_revoked() {
    use hyper_util::rt::TokioIo;
    use tokengate::AuthRequest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = RedisServer::start();
    let config = test_config();
    let service = redis_service(&server, &config).await;
    let created = service
        .create_token(tokengate::CreateTokenParams {
            account_id: "acme".into(),
            name: "ws".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = created.token.expose_secret().to_owned();
    let auth = Authenticator::new(service, &config.auth).unwrap();
    let watcher = auth.clone();
    let app = Router::new()
        .route(
            "/ws",
            get(move |mut request: Request<axum::body::Body>| {
                let watcher = watcher.clone();
                async move {
                    let identity = request.extensions().get::<AuthContext>().cloned().unwrap();
                    let mut watch = watcher.watch(
                        &identity,
                        AuthRequest {
                            method: request.method(),
                            uri: request.uri(),
                            headers: request.headers(),
                            peer: None,
                        },
                    );
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(upgrade.await.unwrap());
                        let mut buf = [0u8; 64];
                        loop {
                            tokio::select! {
                                _ = watch.ended() => return,
                                read = io.read(&mut buf) => match read {
                                    Ok(n) if n > 0 => {
                                        if io.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                    _ => return,
                                },
                            }
                        }
                    });
                    axum::response::Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .body(axum::body::Body::empty())
                        .unwrap()
                }
            }),
        )
        .layer(TokenGateLayer::new(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    // Another process revokes it.
    let other = redis_service(&server, &config).await;
    other.revoke_token(created.info.id, "acme").await.unwrap();
    let revoked = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the upgraded connection outlived its token");
    eprintln!("closed {:?} after the revocation", revoked.elapsed());
}
