//! tokengate in an axum service, in a few lines.
//!
//! ```sh
//! cargo run --example axum                          # embedded store, prints a demo token
//! TOKENGATE_REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum
//! curl -H "Authorization: Bearer mk_…" http://127.0.0.1:3000/whoami
//! ```

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use tokengate::{
    AuthContext, Authenticator, Config, CreateTokenParams, TokenGateLayer, TokenService,
};

async fn whoami(Extension(auth): Extension<AuthContext>) -> String {
    format!("account {} (token {})\n", auth.account_id, auth.token_id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let config = Config::load(None)?; // TOKENGATE_* variables apply
    let store = tokengate::store::open(&config.redis).await?;
    let service = TokenService::from_config(store, &config);
    if config.redis.url.is_none() {
        let demo = service
            .create_token(CreateTokenParams {
                account_id: "demo".into(),
                name: "example".into(),
                expires_in_days: Some(1),
            })
            .await?;
        println!("demo token: {}", demo.token.expose_secret());
    }

    let auth = Authenticator::new(service, &config)?;
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
