//! tokengate in an axum service, in a few lines.
//!
//! Needs only the library: `default-features = false` leaves out the
//! server, the CLI and their dependencies.
//!
//! ```sh
//! cargo run --no-default-features --example axum    # embedded store, prints a demo token
//! TOKENGATE_REDIS_URL=redis://127.0.0.1:6379 cargo run --no-default-features --example axum
//! EXAMPLE_LISTEN=127.0.0.1:3001 cargo run --no-default-features --example axum
//! curl -H "Authorization: Bearer mk_…" http://127.0.0.1:3000/whoami
//! curl -H "Authorization: Bearer mk_…" http://127.0.0.1:3000/orders   # needs the scope orders:read
//! ```

#![allow(clippy::print_stdout)] // an example talks to its user on stdout

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use tokengate::{
    AuthConfig, AuthContext, Authenticator, CreateTokenParams, RedisConfig, RequireScopes, Scopes,
    SecurityConfig, TokenGateLayer, TokenService,
};

async fn whoami(Extension(auth): Extension<AuthContext>) -> String {
    format!("account {} (token {})\n", auth.account_id, auth.token_id)
}

async fn orders(Extension(auth): Extension<AuthContext>) -> String {
    format!("orders of account {}\n", auth.account_id)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt::init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Each component's settings, at their defaults; a service with a config
    // file of its own can embed these types in it (they are serde types).
    let redis = RedisConfig {
        url: std::env::var("TOKENGATE_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty()),
        ..RedisConfig::default()
    };
    redis.validate()?;
    let store = tokengate::store::open(&redis).await?;
    let service = TokenService::from_config(store, &SecurityConfig::default());
    if redis.url.is_none() {
        let demo = service
            .create_token(CreateTokenParams {
                account_id: "demo".into(),
                name: "example".into(),
                expires_in_days: Some(1),
                scopes: Scopes::new(["orders:read"])?,
                allowed_ips: Default::default(),
                meta: Default::default(),
                quota: None,
                rate_limit: None,
            })
            .await?;
        println!("demo token: {}", demo.token.expose_secret());
    }

    let auth = Authenticator::new(service, &AuthConfig::default())?;
    let app = Router::new()
        .route("/whoami", get(whoami))
        // Only tokens holding orders:read (or orders:*): 403 for the others.
        .route(
            "/orders",
            get(orders).route_layer(RequireScopes::new(["orders:read"])?),
        )
        .layer(
            TokenGateLayer::new(auth)
                // Lets the per-IP failure limit see the client's address.
                .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())),
        );

    // 3000 is where the quick start's API usually is: pick another with
    // EXAMPLE_LISTEN.
    let address = std::env::var("EXAMPLE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {address} (set EXAMPLE_LISTEN): {e}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
