//! Logs: JSON lines and the access log.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::{bearer, start_stack, started_log};
use crate::support::procs::Tokengate;
use crate::support::stack::Stack;
use crate::support::{free_port, http};

#[tokio::test]
async fn logs_can_be_json_lines() {
    let admin = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n[log]\nformat = \"json\"\n"
    );
    let tokengate = Tokengate::start(&config, &[], &[admin]);
    let log = started_log(&tokengate).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "listening" && l["fields"]["front_door"] == "admin"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["store"] == "memory"),
        "{log}"
    );
}

/// JSON log fields are plain values: a rejected token's id and the client
/// IP as strings, an absent id left out (never Rust's `Some(…)` / `None`).
#[tokio::test]
async fn json_logs_carry_plain_fields() {
    let stack = start_stack("", "[log]\nformat = \"json\"\nlevel = \"debug\"\n").await;
    let (token, id) = stack.mint("acme").await;
    let wrong = {
        let parsed = tokengate::token::parse(&token).unwrap();
        tokengate::Token::from_parts(parsed, "WRONGWRONGWRONGWRONGWRON")
            .expose_secret()
            .to_owned()
    };
    for bad in [wrong.as_str(), "mk_garbage"] {
        let reply = stack
            .through_proxy("/orders", &[("authorization", &bearer(bad))])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let log = stack.tokengate.log();
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "token rejected")
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert_eq!(rejected[0]["fields"]["token_id"], id.as_str());
    assert_eq!(rejected[0]["fields"]["client_ip"], "127.0.0.1");
    assert_eq!(rejected[0]["fields"]["reason"], "wrong_secret");
    assert!(
        rejected[1]["fields"].get("token_id").is_none(),
        "{}",
        rejected[1]
    );
    assert!(!log.contains("Some(") && !log.contains("\"None\""), "{log}");
}

/// The access log (`[log] access`): one line per request on every front
/// door, with the outcome and who, never the token or the query string.
#[tokio::test]
async fn every_request_gets_one_access_line_without_secrets() {
    let stack = start_stack(
        "health_path = \"/ping\"",
        "[sources]\nquery_param = \"api_key\"\n[log]\nformat = \"json\"\n",
    )
    .await;
    let (token, id) = stack.mint("acme").await;
    let ok = stack
        .through_proxy("/orders/7?page=2", &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let by_query = stack
        .through_proxy(&format!("/orders?api_key={token}"), &[])
        .await;
    assert_eq!(by_query.status, StatusCode::OK);
    let missing = stack.through_proxy("/orders", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let health = stack.through_proxy("/ping", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let checked = http(
        "GET",
        &Stack::url(stack.forward_auth, "/auth"),
        &[
            ("authorization", &bearer(&token)),
            ("x-original-method", "POST"),
            ("x-original-uri", "/invoices?secret=1"),
        ],
        "",
    )
    .await;
    assert_eq!(checked.status, StatusCode::OK);

    // The mint, then the five requests above, in order (written within
    // 100 ms).
    let log = access_log(&stack, 6).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "tokengate::access")
        .map(|l| l["fields"].clone())
        .collect();
    assert_eq!(lines.len(), 6, "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("tokengate::access"))
            .all(|l| l.contains(r#""level":"INFO""#) && l.contains(r#""timestamp":""#)),
        "{log}"
    );
    let field = |i: usize, name: &str| lines[i][name].clone();
    assert_eq!(field(0, "door"), "admin");
    assert_eq!(field(0, "status"), 201);
    let authenticated = &lines[1];
    assert_eq!(authenticated["door"], "proxy");
    assert_eq!(authenticated["method"], "GET");
    assert_eq!(authenticated["path"], "/orders/7");
    assert_eq!(authenticated["status"], 200);
    assert_eq!(authenticated["outcome"], "authenticated");
    assert_eq!(authenticated["account_id"], "acme");
    assert_eq!(authenticated["token_id"], id.as_str());
    assert_eq!(authenticated["client_ip"], "127.0.0.1");
    assert_eq!(authenticated["upstream_status"], 200);
    assert!(authenticated["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        authenticated["duration_ms"].as_f64().unwrap()
            >= authenticated["upstream_ms"].as_f64().unwrap()
    );
    assert_eq!(field(2, "path"), "/orders");
    assert_eq!(field(2, "outcome"), "authenticated");
    let rejected = &lines[3];
    assert_eq!(rejected["status"], 401);
    assert_eq!(rejected["outcome"], "missing_token");
    for absent in ["account_id", "token_id", "upstream_status", "upstream_ms"] {
        assert!(rejected.get(absent).is_none(), "{absent}: {rejected}");
    }
    assert_eq!(field(4, "outcome"), "health");
    // Forward-auth names the request it was asked about.
    let decided = &lines[5];
    assert_eq!(decided["door"], "forward_auth");
    assert_eq!(decided["method"], "POST");
    assert_eq!(decided["path"], "/invoices");
    assert_eq!(decided["token_id"], id.as_str());
    // Never the token (nor its secret part), a query or a header.
    let secret = &token[token.len() - 20..];
    assert!(!log.contains(secret), "{log}");
    assert!(
        !log.contains("page=2") && !log.contains("secret=1"),
        "{log}"
    );
    assert!(!log.to_ascii_lowercase().contains("bearer"), "{log}");
}

/// `[log] access = false` turns the access log off; a sample logs that
/// share of requests, evenly spread.
#[tokio::test]
async fn the_access_log_can_be_turned_off_or_sampled() {
    for (setting, expected) in [("access = false", 0), ("access_sample_percent = 25", 2)] {
        let stack = start_stack("", &format!("[log]\n{setting}\n")).await;
        for _ in 0..8 {
            let reply = stack.through_proxy("/orders", &[]).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        let log = access_log(&stack, expected).await;
        let lines = log.matches("tokengate::access").count();
        assert_eq!(lines, expected, "{setting}: {log}");
    }
    // Human lines, as tracing's: the level, the target, key=value.
    let stack = start_stack("", "").await;
    let reply = stack.through_proxy("/orders?api_key=x", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let log = access_log(&stack, 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("tokengate::access"))
        .unwrap();
    assert!(
        line.contains(
            " INFO tokengate::access: request door=proxy method=GET path=/orders status=401 \
             outcome=missing_token client_ip=127.0.0.1 duration_ms="
        ),
        "{line}"
    );
    // A level that leaves the access target out turns it off too.
    let stack = start_stack("", "[log]\nlevel = \"info,tokengate::access=off\"\n").await;
    let reply = stack.through_proxy("/orders", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let log = access_log(&stack, 0).await;
    assert!(!log.contains("tokengate::access"), "{log}");
}

/// The log once `lines` access lines are in it, or after 2 s (the access
/// log is written every 100 ms).
async fn access_log(stack: &Stack, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = stack.tokengate.log();
        let found = log.matches("tokengate::access").count();
        if (lines > 0 && found >= lines) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
