//! tokengate in an axum service, in a few lines.
//!
//! Needs only the library: `default-features = false` leaves out the
//! server, the CLI and their dependencies.
//!
//! ```sh
//! cargo run --no-default-features --example axum    # embedded store, prints a demo token
//! TOKENGATE_REDIS_URL=redis://127.0.0.1:6379 cargo run --no-default-features --example axum
//! curl -H "Authorization: Bearer mk_…" http://127.0.0.1:3000/whoami
//! ```

#![allow(clippy::print_stdout)] // an example talks to its user on stdout

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use tokengate::{
    AuthConfig, AuthContext, Authenticator, CreateTokenParams, RedisConfig, SecurityConfig,
    TokenGateLayer, TokenService,
};

async fn whoami(Extension(auth): Extension<AuthContext>) -> String {
    format!("account {} (token {})\n", auth.account_id, auth.token_id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
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
                quota: None,
            })
            .await?;
        println!("demo token: {}", demo.token.expose_secret());
    }

    let auth = Authenticator::new(service, &AuthConfig::default())?;
    let app = Router::new().route("/whoami", get(whoami)).layer(
        TokenGateLayer::new(auth)
            // Lets the per-IP failure limit see the client's address.
            .peer_addr_with(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
