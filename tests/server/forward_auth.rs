//! Forward-auth: the endpoint, and real nginx and Caddy in front of it with the
//! published snippets.

use http::StatusCode;

use crate::common::{
    FORGED, INVALID, REALM, assert_identity, bearer, revoke_elsewhere_and_wait, start_stack,
};
use crate::support::procs::{Caddy, Nginx};
use crate::support::stack::Stack;
use crate::support::{free_port, http};

/// `docs/guide/integrations/<file>` as published, with only its ports
/// changed: the quick start's forward-auth address (from
/// config/quickstart.toml, so the two cannot drift apart) becomes this
/// stack's forward-auth listener, the API's this stack's upstream.
fn integration_snippet(stack: &Stack, file: &str) -> String {
    let path = format!(
        "{}/docs/guide/integrations/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let forward_auth = quickstart_forward_auth();
    assert!(
        text.contains(&forward_auth),
        "{file} does not send auth checks to the quick start's forward-auth listener {forward_auth}"
    );
    text.replace(&forward_auth, &format!("127.0.0.1:{}", stack.forward_auth))
        .replace("127.0.0.1:3000", &stack.upstream().addr.to_string())
}

/// `[forward_auth] listen` of config/quickstart.toml.
fn quickstart_forward_auth() -> String {
    let path = format!("{}/config/quickstart.toml", env!("CARGO_MANIFEST_DIR"));
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["forward_auth"]["listen"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every shipped integration snippet, and the commented reference config,
/// use the quick start's ports: forward-auth on 8082 (the admin API, 8081,
/// answers an auth check with 404, which nginx turns into 500).
#[test]
fn every_snippet_uses_the_quick_start_ports() {
    let forward_auth = quickstart_forward_auth();
    let port = forward_auth.rsplit_once(':').unwrap().1.to_owned();
    let dir = format!("{}/docs/guide/integrations", env!("CARGO_MANIFEST_DIR"));
    for file in ["nginx.conf", "Caddyfile", "traefik.yml", "envoy.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        assert!(text.contains(&port), "{file}: no forward-auth port {port}");
        assert!(
            !text.contains("8081"),
            "{file} points at the admin API's port 8081"
        );
    }
    let reference = std::fs::read_to_string(format!(
        "{}/config/tokengate.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let listen_after = |section: &str| {
        let rest = &reference[reference.find(section).unwrap()..];
        let line = rest.lines().find(|l| l.contains("listen = ")).unwrap();
        line.trim_start_matches("# ").to_owned()
    };
    assert_eq!(
        listen_after("[forward_auth]"),
        format!("listen = \"{forward_auth}\"")
    );
    assert_eq!(listen_after("[admin]"), "listen = \"127.0.0.1:8081\"");
}

#[tokio::test]
async fn the_forward_auth_endpoint_answers_for_any_path_and_method() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let auth = bearer(&token);
    for (method, path) in [("GET", "/"), ("POST", "/anything/at/all"), ("DELETE", "/x")] {
        let reply = http(
            method,
            &Stack::url(stack.forward_auth, path),
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
        assert_eq!(reply.header("x-account-id"), Some("acme"));
        assert_eq!(reply.header("x-token-id"), Some(id.as_str()));
    }
    let reply = http("GET", &Stack::url(stack.forward_auth, "/"), &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(REALM));
    // From a trusted proxy (loopback), the original URI decides public routes,
    // in nginx's and in Traefik's / Caddy's spelling.
    for header in ["x-original-uri", "x-forwarded-uri"] {
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/"),
            &[(header, "/public/x")],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{header}");
        assert!(reply.header("x-account-id").is_none());
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/"),
            &[(header, "/public/../private")],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header}");
    }
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_tokengate() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let http_block = integration_snippet(&stack, "nginx.conf")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let _nginx = Nginx::start(&http_block, port);
    // The other proxies' family of original-request headers, forged.
    let forged_route = [
        ("x-forwarded-uri", "/public/x"),
        ("x-forwarded-method", "GET"),
    ];
    check_a_proxy_in_front(&stack, port, &token, &id, &forged_route).await;
}

/// The nginx snippet next to Debian's default site (`listen 80
/// default_server`): requests for the API's host name reach the snippet's
/// server, not the default site's.
#[tokio::test]
async fn the_nginx_snippet_wins_over_debians_default_site() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let listen = format!("listen 127.0.0.1:{port}");
    let default_site = format!(
        "server {{\n    {listen} default_server;\n    server_name _;\n    return 404;\n}}\n"
    );
    let http_block = default_site
        + &integration_snippet(&stack, "nginx.conf").replace("listen 80;", &format!("{listen};"));
    let _nginx = Nginx::start(&http_block, port);
    let reply = http(
        "GET",
        &format!("http://127.0.0.1:{port}/orders"),
        &[
            ("host", "api.example.com"),
            ("authorization", &bearer(&token)),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.seen("x-token-id"), [id.as_str()]);
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_tokengate() {
    let stack = start_stack("", "").await;
    let (token, id) = stack.mint("acme").await;
    let port = free_port();
    let sites = integration_snippet(&stack, "Caddyfile").replace(
        "http://api.example.com",
        &format!("http://127.0.0.1:{port}"),
    );
    let _caddy = Caddy::start(&sites, port);
    let forged_route = [
        ("x-original-uri", "/public/x"),
        ("x-original-method", "GET"),
    ];
    check_a_proxy_in_front(&stack, port, &token, &id, &forged_route).await;
}

/// What a client of nginx or Caddy in front of tokengate's forward-auth must
/// see: the real identity and no forgery upstream; 401 with the right
/// `WWW-Authenticate` for no token and a bad one; public routes open; a
/// forged original-request header opening nothing; a revocation by another
/// process honoured within 1 s.
async fn check_a_proxy_in_front(
    stack: &Stack,
    port: u16,
    token: &str,
    id: &str,
    forged_route: &[(&str, &str)],
) {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(FORGED);
    assert_identity(
        &http("GET", &url("/orders"), &headers, "").await,
        Some(("acme", id)),
    );

    let reply = http("GET", &url("/orders"), &FORGED, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(REALM));
    let bad = format!("Bearer {}", &token[..54]);
    let reply = http("GET", &url("/orders"), &[("authorization", &bad)], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some(INVALID));

    assert_identity(&http("GET", &url("/public/docs"), &FORGED, "").await, None);
    let reply = http("GET", &url("/orders"), forged_route, "").await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{forged_route:?} opened a route"
    );
    revoke_elsewhere_and_wait(stack, "acme", id, &url("/orders"), token).await;
}

#[tokio::test]
async fn original_uri_headers_count_only_from_trusted_proxies() {
    // Loopback is not trusted here, so the test client is an untrusted peer.
    let stack = start_stack("", "[client_ip]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").await;
    for header in ["x-original-uri", "x-forwarded-uri"] {
        let reply = http(
            "GET",
            &Stack::url(stack.forward_auth, "/private"),
            &[(header, "/public/x")],
            "",
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{header} from an untrusted peer opened a route"
        );
    }
    // Its own request line still counts.
    let reply = http("GET", &Stack::url(stack.forward_auth, "/public/x"), &[], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    // And an untrusted peer's X-Forwarded-For is replaced, not appended to.
    let (token, _) = stack.mint("acme").await;
    let auth = bearer(&token);
    let reply = stack
        .through_proxy(
            "/orders",
            &[("authorization", &auth), ("x-forwarded-for", "6.6.6.6")],
        )
        .await;
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn forward_auth_refuses_a_mix_of_original_request_header_families() {
    let stack = start_stack("", "").await;
    let url = Stack::url(stack.forward_auth, "/");
    for headers in [
        [
            ("x-original-uri", "/orders"),
            ("x-forwarded-uri", "/public/x"),
        ],
        [
            ("x-original-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
        ],
        [
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
        ],
    ] {
        let reply = http("GET", &url, &headers, "").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(reply.json()["error"], "invalid_request");
    }
    // One family alone is read as usual.
    let reply = http(
        "GET",
        &url,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}
