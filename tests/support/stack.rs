//! The test stack every server test starts from: a real Redis, an upstream
//! and one `tokengate serve` with a proxy, forward-auth and the admin API
//! (and `/metrics` when asked), configured by a [`StackBuilder`].

use http::StatusCode;

use super::procs::{ADMIN_KEY, Tokengate};
use super::upstream::Upstream;
use super::{HttpReply, RedisServer, free_port, http};

/// Redis, an upstream and tokengate with its listeners.
pub struct Stack {
    pub redis: RedisServer,
    /// The test upstream, unless the builder was given another one.
    upstream: Option<Upstream>,
    pub tokengate: Tokengate,
    pub proxy: u16,
    pub forward_auth: u16,
    pub admin: u16,
    /// `[metrics] listen`, when [`StackBuilder::metrics`] asked for it.
    pub metrics: Option<u16>,
}

/// What goes into the stack's config, around the listeners it always has.
#[derive(Default)]
pub struct StackBuilder {
    proxy: String,
    routes: String,
    extra: String,
    upstream: Option<String>,
    metrics: bool,
}

impl StackBuilder {
    /// Keys added to `[proxy]` (after `listen` and `upstream`).
    pub fn proxy(mut self, keys: &str) -> Self {
        self.proxy = keys.to_owned();
        self
    }

    /// `[[routes]]` / `[[public_routes]]` tables, after the listeners.
    pub fn routes(mut self, routes: &str) -> Self {
        self.routes = routes.to_owned();
        self
    }

    /// More config, at the very end.
    pub fn extra(mut self, extra: &str) -> Self {
        self.extra = extra.to_owned();
        self
    }

    /// Proxy to `url` instead of starting the test upstream.
    pub fn upstream(mut self, url: &str) -> Self {
        self.upstream = Some(url.to_owned());
        self
    }

    /// Add a `[metrics]` listener.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    pub async fn start(self) -> Stack {
        let redis = RedisServer::start();
        let (upstream, upstream_url) = match self.upstream {
            Some(url) => (None, url),
            None => {
                let upstream = Upstream::start().await;
                let url = upstream.url();
                (Some(upstream), url)
            }
        };
        let (proxy, forward_auth, admin) = (free_port(), free_port(), free_port());
        let metrics = self.metrics.then(free_port);
        let metrics_section = metrics
            .map(|port| format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "[redis]\nurl = \"{redis}\"\n[security]\nbcrypt_cost = 4\n\
             [proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"{upstream_url}\"\n{proxy_keys}\n\
             [forward_auth]\nlisten = \"127.0.0.1:{forward_auth}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n{metrics_section}{routes}\n{extra}\n",
            redis = redis.url(),
            proxy_keys = self.proxy,
            routes = self.routes,
            extra = self.extra,
        );
        // Every listener is bound before any is served: waiting for these
        // covers the metrics listener as well.
        let tokengate = Tokengate::start(
            &config,
            &[("TOKENGATE_ADMIN_KEY", ADMIN_KEY)],
            &[proxy, forward_auth, admin],
        );
        Stack {
            redis,
            upstream,
            tokengate,
            proxy,
            forward_auth,
            admin,
            metrics,
        }
    }
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The test upstream this stack started.
    pub fn upstream(&self) -> &Upstream {
        self.upstream
            .as_ref()
            .expect("this stack proxies to an upstream of the test's own")
    }

    pub fn url(port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    /// `method path` on the admin API with the admin key.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> HttpReply {
        self.admin_with(method, path, body, &[]).await
    }

    /// `POST /v1/accounts/acme/tokens` with `body` (as JSON), through the
    /// admin API.
    pub async fn create(&self, body: &str) -> HttpReply {
        let json = [("content-type", "application/json")];
        self.admin_with("POST", "/v1/accounts/acme/tokens", body, &json)
            .await
    }

    /// `method path` on the admin API with the admin key and `headers`.
    async fn admin_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> HttpReply {
        let auth = format!("Bearer {ADMIN_KEY}");
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        http(method, &Self::url(self.admin, path), &all, body).await
    }

    /// Mints a token of `account` through the admin API: (token, id).
    pub async fn mint(&self, account: &str) -> (String, String) {
        let reply = self
            .admin(
                "POST",
                &format!("/v1/accounts/{account}/tokens"),
                r#"{"name": "test"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let json = reply.json();
        (
            json["token"].as_str().unwrap().to_owned(),
            json["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Mints a token of `acme` with these scopes through the admin API.
    pub async fn mint_scoped(&self, scopes: &[&str]) -> String {
        let body = serde_json::json!({ "name": "scoped", "scopes": scopes }).to_string();
        let reply = self.admin("POST", "/v1/accounts/acme/tokens", &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// `GET path` through the proxy with `headers`.
    pub async fn through_proxy(&self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        http("GET", &Self::url(self.proxy, path), headers, "").await
    }

    /// `GET /orders` through the proxy, bearing `token`.
    pub async fn get(&self, token: &str) -> HttpReply {
        let auth = format!("Bearer {token}");
        self.through_proxy("/orders", &[("authorization", &auth)])
            .await
    }

    /// SIGTERM to tokengate; its exit status once it has exited.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Self) {
        tokio::task::spawn_blocking(move || (self.tokengate.terminate(), self))
            .await
            .unwrap()
    }
}
