//! What several server test files share: their stacks, requests and checks.

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::procs::{ADMIN_KEY, Replica, Tokengate};
use crate::support::stack::Stack;
use crate::support::{HttpReply, RedisServer, http};

pub(crate) const REALM: &str = r#"Bearer realm="tokengate""#;

pub(crate) const INVALID: &str = r#"Bearer realm="tokengate", error="invalid_token""#;

/// The stack of these tests: `proxy` keys go into `[proxy]`, `extra` after
/// a public route at `/public`.
pub(crate) async fn start_stack(proxy: &str, extra: &str) -> Stack {
    Stack::builder()
        .proxy(proxy)
        .routes("[[public_routes]]\npath_prefix = \"/public\"\n")
        .extra(extra)
        .start()
        .await
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Forged identity headers in the spellings a proxy or framework may fold
/// into the real ones (hyper sends names in lowercase).
pub(crate) const FORGED: [(&str, &str); 6] = [
    ("x-account-id", "evil"),
    ("x_account_id", "evil"),
    ("x.account.id", "evil"),
    ("x-token-id", "evil"),
    ("x_token_id", "evil"),
    ("x.token.id", "evil"),
];

/// The upstream got exactly the real identity (or none), and no forgery.
pub(crate) fn assert_identity(reply: &HttpReply, expected: Option<(&str, &str)>) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(!body.contains("evil"), "a forged header arrived: {body}");
    for name in reply.seen_names() {
        let folded = tokengate::auth::fold_header_name(&name);
        if folded == "x-account-id" || folded == "x-token-id" {
            assert!(
                name == "x-account-id" || name == "x-token-id",
                "{name} arrived: {body}"
            );
        }
    }
    match expected {
        Some((account, id)) => {
            assert_eq!(reply.seen("x-account-id"), [account], "{body}");
            assert_eq!(reply.seen("x-token-id"), [id], "{body}");
        }
        None => {
            assert!(
                reply.seen("x-account-id").is_empty() && reply.seen("x-token-id").is_empty(),
                "{body}"
            );
        }
    }
}

/// The status seen through `url` once `token` has been revoked by another
/// process (the CLI), polled for at most 1 s.
pub(crate) async fn revoke_elsewhere_and_wait(
    stack: &Stack,
    account: &str,
    id: &str,
    url: &str,
    token: &str,
) {
    let auth = bearer(token);
    assert_eq!(
        http("GET", url, &[("authorization", &auth)], "")
            .await
            .status,
        StatusCode::OK
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args([
            "--redis-url",
            &stack.redis.url(),
            "token",
            "revoke",
            "--account",
            account,
            "--id",
            id,
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();
    loop {
        let reply = http("GET", url, &[("authorization", &auth)], "").await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply.header("www-authenticate"), Some(INVALID));
            return;
        }
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted 1 s after revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log once it says "tokengate started": the ports accept as soon as
/// they are bound, and the workers start and the log lines follow.
pub(crate) async fn started_log(tokengate: &Tokengate) -> String {
    tokengate.log_once("started").await
}

/// The route table of these tests: writes to /orders need orders:write,
/// reads orders:read, the catalog nothing, /reports two scopes.
pub(crate) const ROUTES: &str = r#"
[[routes]]
path_prefix = "/orders"
methods = ["POST", "PUT", "DELETE"]
scopes = ["orders:write"]

[[routes]]
path_prefix = "/orders"
scopes = ["orders:read"]

[[routes]]
path_prefix = "/orders/catalog"

[[routes]]
path_prefix = "/reports"
scopes = ["reports:read", "orders:read"]
"#;

/// The stack of these tests, with [`ROUTES`].
pub(crate) async fn scoped_stack() -> Stack {
    scoped_stack_with("").await
}

/// With [`ROUTES`] and `extra` after them (more config).
pub(crate) async fn scoped_stack_with(extra: &str) -> Stack {
    Stack::builder().routes(ROUTES).extra(extra).start().await
}

/// The `tokengate` binary on `redis`, with a clean environment.
pub(crate) fn cli(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["--redis-url", &redis.url()])
        .args(args)
        .env_clear()
        .env("TOKENGATE_SECURITY_BCRYPT_COST", "4")
        .output()
        .unwrap()
}

/// `method` on acme's token `id` (then `rest` of the path) through
/// `replica`'s admin API, with the admin key.
pub(crate) async fn on_token(
    replica: &Replica,
    method: &str,
    id: &str,
    rest: &str,
    body: &str,
) -> HttpReply {
    let url = format!(
        "http://127.0.0.1:{}/v1/accounts/acme/tokens/{id}{rest}",
        replica.admin
    );
    let auth = format!("Bearer {ADMIN_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    http(method, &url, &headers, body).await
}

/// `PATCH …/tokens/{id}` through `replica`'s admin API.
pub(crate) async fn patch(replica: &Replica, id: &str, body: &str) -> HttpReply {
    on_token(replica, "PATCH", id, "", body).await
}

/// How long until `replica` answers `token`'s GET /orders with `status`
/// (polled every 20 ms; fails past 1 s).
pub(crate) async fn seen_within_a_second(
    replica: &Replica,
    token: &str,
    status: StatusCode,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = replica.get(token).await;
        if reply.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still {} after 1 s, not {status}: {:?}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
