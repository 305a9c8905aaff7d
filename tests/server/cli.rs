//! The `tokengate` binary end to end, against a real redis-server: what a
//! script sees on stdout, stderr and in the exit code.

use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use tokengate::{RedisStore, TokenError, TokenService};

use crate::support::RedisServer;

/// Runs the binary with a clean environment (no stray `TOKENGATE_*`).
fn tokengate(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run tokengate")
}

/// Runs with `--redis-url` pointing at `server`.
fn run(server: &RedisServer, args: &[&str]) -> Output {
    let url = server.url();
    let mut all = vec!["--redis-url", url.as_str()];
    all.extend_from_slice(args);
    // Cost 4 keeps the suite fast; the default (10) is tested by the service.
    tokengate(&all, &[("TOKENGATE_SECURITY_BCRYPT_COST", "4")])
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// Exit code `code` with exactly one line on stderr, which contains `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
}

/// `token create --account … --name … --json`, parsed.
fn create_json(server: &RedisServer, account: &str, name: &str) -> Value {
    json(&run(
        server,
        &[
            "token",
            "create",
            "--account",
            account,
            "--name",
            name,
            "--json",
        ],
    ))
}

async fn service(server: &RedisServer) -> TokenService {
    TokenService::new(Arc::new(
        RedisStore::connect(&server.url(), "tokengate:")
            .await
            .unwrap(),
    ))
}

#[tokio::test]
async fn create_list_get_revoke_end_to_end() {
    let server = RedisServer::start();

    let created = json(&run(
        &server,
        &[
            "token",
            "create",
            "--account",
            "acme",
            "--name",
            "ci",
            "--expires-in-days",
            "30",
            "--json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["account_id"], "acme");
    assert_eq!(created["name"], "ci");
    assert_eq!(token.len(), 55);
    let created_at = created["created_at"].as_i64().unwrap();
    assert_eq!(
        created["expires_at"].as_i64(),
        Some(created_at + 30 * 86_400)
    );

    let forever = create_json(&server, "acme", "bot");
    assert_eq!(forever["expires_at"], Value::Null);
    create_json(&server, "globex", "x");

    // The token the CLI printed is a working token.
    let auth = service(&server).await.validate_token(&token).await.unwrap();
    assert_eq!(auth.token_id.to_string(), id);
    assert_eq!(auth.account_id, "acme");

    let listed = json(&run(
        &server,
        &["token", "list", "--account", "acme", "--json"],
    ));
    let listed = listed.as_array().unwrap();
    // Both created in the same second: their order is the id's, so compare sets.
    let mut ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![id.as_str(), forever["id"].as_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for record in listed {
        assert!(
            record.get("token").is_none() && record.get("hash").is_none(),
            "{record}"
        );
        assert_eq!(record["status"], "active");
    }

    let got = json(&run(
        &server,
        &["token", "get", "--account", "acme", "--id", &id, "--json"],
    ));
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["name"], "ci");
    assert!(got.get("token").is_none() && got.get("hash").is_none());

    // The id can also be given in its base62 form, read off the token.
    let got = json(&run(
        &server,
        &[
            "token",
            "get",
            "--account",
            "acme",
            "--id",
            &token[3..25],
            "--json",
        ],
    ));
    assert_eq!(got["id"], id.as_str());

    let out = run(
        &server,
        &["token", "revoke", "--account", "acme", "--id", &id],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("Revoked token {id}")));
    let got = json(&run(
        &server,
        &["token", "get", "--account", "acme", "--id", &id, "--json"],
    ));
    assert_eq!(got["status"], "revoked");
    assert!(got["revoked_at"].is_i64());
    let err = service(&server)
        .await
        .validate_token(&token)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Revoked), "{err:?}");

    // Nothing the CLI printed after creation holds a token or a hash.
    for args in [
        vec!["token", "list", "--account", "acme"],
        vec!["token", "get", "--account", "acme", "--id", &id],
    ] {
        let out = run(&server, &args);
        let text = stdout(&out);
        assert!(out.status.success());
        assert!(text.contains(&id), "{text}");
        assert!(!text.contains("mk_") && !text.contains("$2"), "{text}");
    }
}

#[tokio::test]
async fn human_create_shows_the_token_once_with_a_warning() {
    let server = RedisServer::start();
    let out = run(
        &server,
        &["token", "create", "--account", "acme", "--name", "laptop"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("mk_").count(), 1, "{text}");
    assert!(text.contains("Store this token now"), "{text}");
    assert!(text.contains("never expires"), "{text}");
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("mk_"))
        .unwrap();
    service(&server).await.validate_token(token).await.unwrap();
}

#[tokio::test]
async fn cleanup_reports_what_it_removed() {
    let server = RedisServer::start();
    let created = create_json(&server, "acme", "old");
    let id = created["id"].as_str().unwrap();
    assert!(
        run(
            &server,
            &["token", "revoke", "--account", "acme", "--id", id]
        )
        .status
        .success()
    );

    let kept = json(&run(&server, &["token", "cleanup", "--json"]));
    assert_eq!(
        kept["removed"], 0,
        "revoked just now: inside the 30-day default retention"
    );
    let removed = json(&run(
        &server,
        &["token", "cleanup", "--retention-days", "0", "--json"],
    ));
    assert_eq!(removed["removed"], 1);
    let listed = json(&run(
        &server,
        &["token", "list", "--account", "acme", "--json"],
    ));
    assert_eq!(listed, Value::Array(vec![]));
    let out = run(&server, &["token", "cleanup"]);
    assert!(
        stdout(&out).starts_with("Removed 0 token(s)"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn errors_are_one_line_with_the_right_exit_code() {
    let server = RedisServer::start();
    let created = create_json(&server, "acme", "n");
    let id = created["id"].as_str().unwrap();

    // Usage errors: exit 2.
    assert_fails(
        &run(
            &server,
            &[
                "token",
                "create",
                "--account",
                "a",
                "--name",
                "n",
                "--bogus",
            ],
        ),
        2,
        "--bogus",
    );
    assert_fails(
        &run(&server, &["token", "create", "--account", "a"]),
        2,
        "--name",
    );
    assert_fails(
        &run(
            &server,
            &[
                "token",
                "create",
                "--account",
                "a",
                "--name",
                "n",
                "--expires-in-days",
                "0",
            ],
        ),
        2,
        "--expires-in-days",
    );
    assert_fails(
        &run(&server, &["token", "get", "--account", "a", "--id", "nope"]),
        2,
        "--id",
    );
    assert_fails(&run(&server, &["tokens"]), 2, "tokens");

    // Everything else: exit 1.
    assert_fails(
        &run(
            &server,
            &["token", "get", "--account", "globex", "--id", id],
        ),
        1,
        "not found",
    );
    assert_fails(
        &run(
            &server,
            &["token", "revoke", "--account", "globex", "--id", id],
        ),
        1,
        "not found",
    );
    assert_fails(
        &run(
            &server,
            &["token", "create", "--account", "", "--name", "n"],
        ),
        1,
        "account_id",
    );
    assert_fails(
        &run(
            &server,
            &[
                "token",
                "create",
                "--account",
                "a",
                "--name",
                "bad\u{1b}name",
            ],
        ),
        1,
        "name",
    );
    let long = "x".repeat(300);
    assert_fails(
        &run(
            &server,
            &["token", "create", "--account", "a", "--name", &long],
        ),
        1,
        "name",
    );
}

#[test]
fn token_commands_refuse_the_in_memory_store() {
    let out = tokengate(&["token", "list", "--account", "acme"], &[]);
    assert_fails(&out, 1, "no Redis URL");
    assert!(stderr(&out).contains("in-memory"));
}

#[test]
fn unreachable_redis_is_one_line_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let out = tokengate(
        &["--redis-url", &url, "token", "list", "--account", "acme"],
        &[],
    );
    assert_fails(&out, 1, "cannot connect to Redis");
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
}

#[test]
fn redis_url_precedence_is_flag_then_env_then_file() {
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("tokengate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dead = "redis://127.0.0.1:1";
    let good = server.url();
    let config = dir.join("good.toml");
    std::fs::write(
        &config,
        format!("[redis]\nurl = \"{good}\"\n[security]\nbcrypt_cost = 4\n"),
    )
    .unwrap();
    let dead_config = dir.join("dead.toml");
    std::fs::write(&dead_config, format!("[redis]\nurl = \"{dead}\"\n")).unwrap();
    let list = ["token", "list", "--account", "acme", "--json"];
    let with = |pre: &[&str], env: &[(&str, &str)]| {
        let mut args = pre.to_vec();
        args.extend_from_slice(&list);
        tokengate(&args, env)
    };

    let cfg = config.to_str().unwrap();
    let dead_cfg = dead_config.to_str().unwrap();
    assert!(with(&["--config", cfg], &[]).status.success(), "file");
    assert!(
        with(&[], &[("TOKENGATE_CONFIG", cfg)]).status.success(),
        "TOKENGATE_CONFIG"
    );
    assert!(
        with(&["--config", dead_cfg], &[("TOKENGATE_REDIS_URL", &good)])
            .status
            .success(),
        "env over file"
    );
    assert!(
        with(
            &["--config", dead_cfg, "--redis-url", &good],
            &[("TOKENGATE_REDIS_URL", dead)]
        )
        .status
        .success(),
        "flag over env"
    );
    assert!(
        !with(&["--config", cfg], &[("TOKENGATE_REDIS_URL", dead)])
            .status
            .success(),
        "env over file"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[security]\nbcrypt_costt = 4\n").unwrap();
    assert_fails(
        &with(&["--config", bad.to_str().unwrap()], &[]),
        1,
        "security.bcrypt_costt",
    );
    assert_fails(
        &with(&["--config", "/nonexistent/tokengate.toml"], &[]),
        1,
        "/nonexistent/tokengate.toml",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn quotas_are_set_at_creation_and_changed_later() {
    let server = RedisServer::start();
    let created = json(&run(
        &server,
        &[
            "token",
            "create",
            "--account",
            "acme",
            "--name",
            "metered",
            "--quota",
            "1000",
            "--refill",
            "1000/1d",
            "--json",
        ],
    ));
    let quota = &created["quota"];
    assert_eq!(quota["remaining"], 1000);
    assert_eq!(quota["refill"]["amount"], 1000);
    assert_eq!(quota["refill"]["interval"], "1day");
    assert_eq!(
        quota["next_refill_at"].as_i64().unwrap(),
        quota["refilled_at"].as_i64().unwrap() + 86_400
    );
    let id = created["id"].as_str().unwrap();
    // In Redis, beside the record (docs/design/redis-layout.md).
    let stored: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(format!("tokengate:token:{id}"))
        .arg(&[
            "quota_remaining",
            "quota_refill_amount",
            "quota_refill_interval",
        ])
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    assert_eq!(
        stored,
        [
            Some("1000".into()),
            Some("1000".into()),
            Some("86400".into())
        ]
    );

    let out = run(
        &server,
        &[
            "token",
            "quota",
            "--account",
            "acme",
            "--id",
            id,
            "--remaining",
            "5",
            "--refill",
            "50/month",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("quota:     5 left, refills to 50 every month (next "),
        "{text}"
    );
    let removed = json(&run(
        &server,
        &[
            "token",
            "quota",
            "--account",
            "acme",
            "--id",
            id,
            "--remove",
            "--json",
        ],
    ));
    assert_eq!(removed["quota"], Value::Null);
    let got = stdout(&run(
        &server,
        &["token", "get", "--account", "acme", "--id", id],
    ));
    assert!(got.contains("quota:     none (unlimited)"), "{got}");

    assert_bad_quotas_refused(&server, id);
}

/// Bad quota values: one line, exit 2, saying what is wrong.
fn assert_bad_quotas_refused(server: &RedisServer, id: &str) {
    let create = ["token", "create", "--account", "a", "--name", "n"];
    let with = |extra: &[&'static str]| {
        let mut args = create.to_vec();
        args.extend_from_slice(extra);
        run(server, &args)
    };
    assert_fails(
        &with(&["--quota", "10", "--refill", "10"]),
        2,
        "AMOUNT/INTERVAL",
    );
    assert_fails(
        &with(&["--quota", "10", "--refill", "10/fortnight"]),
        2,
        "month",
    );
    assert_fails(
        &with(&["--quota", "10", "--refill", "0/1d"]),
        2,
        "refill amount",
    );
    assert_fails(&with(&["--refill", "10/1d"]), 2, "--quota");
    assert_fails(&with(&["--quota=-1"]), 2, "--quota");
    assert_fails(
        &run(server, &["token", "quota", "--account", "acme", "--id", id]),
        2,
        "--remaining",
    );
}

/// A leaked token can be revoked from its text alone: `--id` takes the
/// whole token, and only its id is shown.
#[tokio::test]
async fn a_leaked_token_is_revoked_by_its_text() {
    let server = RedisServer::start();
    let created = create_json(&server, "acme", "leaked");
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let out = run(
        &server,
        &["token", "revoke", "--account", "acme", "--id", token],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("Revoked token {id} ")), "{text}");
    assert!(!text.contains(token) && !stderr(&out).contains(token));
    // A broken checksum is a usage error, not a lookup.
    let mut broken = token.to_owned();
    broken.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
    assert_fails(
        &run(
            &server,
            &["token", "get", "--account", "acme", "--id", &broken],
        ),
        2,
        "not a token id",
    );
}

#[test]
fn a_misspelt_variable_stops_start_up_with_the_nearest_name() {
    for (var, suggestion) in [
        ("TOKENGATE_REDDIS_URL", "TOKENGATE_REDIS_URL"),
        (
            "TOKENGATE_FORWARDAUTH_LISTEN",
            "TOKENGATE_FORWARD_AUTH_LISTEN",
        ),
        ("TOKENGATE_ADMIN_KEYY", "TOKENGATE_ADMIN_KEY"),
    ] {
        for args in [&["serve"][..], &["token", "list", "--account", "acme"]] {
            let out = tokengate(args, &[(var, "redis://127.0.0.1:6379")]);
            assert_fails(&out, 1, var);
            assert!(
                stderr(&out).contains(&format!("did you mean {suggestion}?")),
                "{}",
                stderr(&out)
            );
        }
    }
    // Far from every name: refused all the same.
    let out = tokengate(&["serve"], &[("TOKENGATE_WHATEVER", "1")]);
    assert_fails(&out, 1, "TOKENGATE_WHATEVER: names no setting");
}

#[test]
fn serve_on_a_public_address_needs_redis_or_embedded_on_purpose() {
    let upstream = "http://127.0.0.1:9";
    let port = free_port().to_string();
    let listen = format!("0.0.0.0:{port}");
    let env = [
        ("TOKENGATE_PROXY_LISTEN", listen.as_str()),
        ("TOKENGATE_PROXY_UPSTREAM", upstream),
    ];
    let out = tokengate(&["serve"], &env);
    assert_fails(&out, 1, "no Redis URL is set");
    assert!(stderr(&out).contains("embedded = true"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&listen), "{}", stderr(&out));

    // Both a URL and embedded: which one was meant?
    let out = tokengate(
        &["serve"],
        &[
            ("TOKENGATE_REDIS_URL", "redis://127.0.0.1:6379"),
            ("TOKENGATE_REDIS_EMBEDDED", "true"),
        ],
    );
    assert_fails(&out, 1, "redis.embedded");

    // On purpose: it starts (and says the tokens are in memory).
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("serve")
        .env_clear()
        .envs(env)
        .env("TOKENGATE_REDIS_EMBEDDED", "true")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    while !log.contains("in-memory") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("tokengate started"), "{log}");
    assert!(log.contains("in-memory"), "{log}");
}

#[test]
fn start_up_errors_are_one_line_without_an_unrelated_warning() {
    // A port in use: one line, not a log line and the error again, and no
    // in-memory-store warning before it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = tokengate(
        &["serve"],
        &[
            ("TOKENGATE_ADMIN_LISTEN", &address),
            ("TOKENGATE_ADMIN_ALLOW_UNAUTHENTICATED_LOOPBACK", "true"),
        ],
    );
    assert_fails(&out, 1, &format!("error: cannot listen on {address}"));

    // A Redis URL pointing at something that is not Redis (an HTTP
    // server): one line that says so, not the RESP parser's dump.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", http.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in http.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>nope</html>\n",
                );
            });
        }
    });
    for args in [&["serve"][..], &["token", "list", "--account", "acme"]] {
        let out = tokengate(
            args,
            &[
                ("TOKENGATE_REDIS_URL", &url),
                ("TOKENGATE_ADMIN_LISTEN", "127.0.0.1:0"),
                ("TOKENGATE_ADMIN_ALLOW_UNAUTHENTICATED_LOOPBACK", "true"),
            ],
        );
        assert_fails(&out, 1, "not the Redis protocol");
    }
}

#[test]
fn config_range_errors_name_the_file_line_and_value_as_written() {
    let dir = std::env::temp_dir().join(format!("tokengate-cli-range-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokengate.toml");
    std::fs::write(
        &path,
        "[security]\nbcrypt_cost = 12\n\n[cache]\nttl = \"120m\"\n",
    )
    .unwrap();
    let out = tokengate(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_fails(
        &out,
        1,
        &format!(
            "config file {}: line 5, key cache.ttl = \"120m\": 2h is outside 1s–1h",
            path.display()
        ),
    );
    // From a variable: the variable is named.
    let out = tokengate(&["serve"], &[("TOKENGATE_CACHE_TTL", "3h")]);
    assert_fails(
        &out,
        1,
        "environment variable TOKENGATE_CACHE_TTL: cache.ttl: 3h is outside 1s–1h",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clap_suggestions_survive_the_one_line_error() {
    let out = tokengate(&["tokn", "list"], &[]);
    assert_fails(&out, 2, "a similar subcommand exists: 'token'");
    let out = tokengate(&["token", "list", "--acount", "acme"], &[]);
    assert_fails(&out, 2, "a similar argument exists: '--account'");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tokengate completions <shell>` and returns its script.
fn completion_script(shell: &str) -> String {
    let out = tokengate(&["completions", shell], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn completions_cover_every_command_and_bash_accepts_its_script() {
    let bash = completion_script("bash");
    for word in [
        "serve",
        "token",
        "create",
        "revoke",
        "migrate",
        "--account",
        "--config",
    ] {
        assert!(bash.contains(word), "{word} not in the bash completions");
    }
    let dir = crate::support::procs::TempDir::new("completions");
    let script = dir.write("tokengate.bash", &bash);
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash ({e}); install it (apt-get install -y bash)"));
    assert!(
        check.status.success(),
        "bash -n rejects the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let script = completion_script(shell);
        for word in ["serve", "token", "cleanup", "migrate"] {
            assert!(
                script.contains(word),
                "{word} not in the {shell} completions"
            );
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    let out = tokengate(&["completions", "tcsh"], &[]);
    assert_fails(&out, 2, "invalid value 'tcsh'");
    assert!(stderr(&out).contains("bash"), "{}", stderr(&out));
    assert_fails(&tokengate(&["completions"], &[]), 2, "<SHELL>");
}

#[test]
fn man_prints_a_roff_page_covering_every_command() {
    let out = tokengate(&["man"], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let page = stdout(&out);
    let header = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH header");
    assert!(header.starts_with(".TH tokengate 1"), "{header}");
    // Only roff's string definitions come before the header.
    assert!(
        page.lines()
            .take_while(|l| !l.starts_with(".TH "))
            .all(|l| l.starts_with(".ie") || l.starts_with(".el")),
        "{page}"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH \"TOKENGATE SERVE\"",
        ".SH \"TOKENGATE TOKEN CREATE\"",
        ".SH \"TOKENGATE HEALTHCHECK\"",
    ] {
        assert!(page.contains(section), "{section} not in the man page");
    }
    assert!(page.contains("\\-\\-expires\\-in\\-days"), "create's flags");
    assert!(page.contains("TOKENGATE_CONFIG"), "the --config variable");
}

#[test]
fn healthcheck_exits_0_while_serve_answers_and_1_with_one_line_after() {
    use crate::support::procs::{TempDir, Tokengate};
    let admin = crate::support::free_port();
    let config =
        format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\nallow_unauthenticated_loopback = true\n");
    let mut serve = Tokengate::start(&config, &[], &[admin]);
    let url = format!("http://127.0.0.1:{admin}/healthz");

    let out = tokengate(&["healthcheck", "--url", &url], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{url}: 200 OK\n"));

    // Without --url: /healthz on the config's [admin] listen.
    let dir = TempDir::new("healthcheck");
    let file = dir.write("tokengate.toml", &config);
    let file = file.to_str().unwrap();
    let out = tokengate(&["healthcheck"], &[("TOKENGATE_CONFIG", file)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{url}: 200 OK\n"));

    // Anything but 200 is a failure.
    let missing = format!("http://127.0.0.1:{admin}/nothing-here");
    assert_fails(
        &tokengate(&["healthcheck", "--url", &missing], &[]),
        1,
        "answered 404 Not Found",
    );

    assert!(serve.terminate().success());
    assert_fails(
        &tokengate(&["healthcheck", "--config", file], &[]),
        1,
        "cannot connect",
    );
    // Nothing to check: one line saying what to give.
    assert_fails(
        &tokengate(&["healthcheck"], &[]),
        1,
        "[admin] listen is not set",
    );
    assert_fails(
        &tokengate(&["healthcheck", "--url", "https://127.0.0.1/healthz"], &[]),
        1,
        "only http://",
    );
}

#[tokio::test]
async fn a_redis_that_wants_a_password_the_url_lacks_stops_start_up() {
    let server = RedisServer::start();
    let mut conn = server.connection().await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("sekrit-password")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let url = server.url();
    let env = [
        ("TOKENGATE_REDIS_URL", url.as_str()),
        ("TOKENGATE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("TOKENGATE_ADMIN_ALLOW_UNAUTHENTICATED_LOOPBACK", "true"),
    ];
    // Not a server that starts and then answers 503 to every new token.
    for args in [&["serve"][..], &["token", "list", "--account", "acme"]] {
        let out = tokengate(args, &env);
        assert_fails(&out, 1, "cannot connect to Redis");
        assert!(stderr(&out).contains("NOAUTH"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("redis://:password@host:port"),
            "{}",
            stderr(&out)
        );
    }
    let with_password = url.replace("redis://", "redis://:sekrit-password@");
    let out = tokengate(
        &[
            "--redis-url",
            &with_password,
            "token",
            "list",
            "--account",
            "acme",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A `TOKENGATE_HASH_KEY` for the HMAC tests.
const HASH_KEY: &str = "cli-test-hash-key-of-more-than-32-bytes";

#[tokio::test]
async fn hmac_needs_its_key_and_then_the_cli_creates_hmac_tokens() {
    let server = RedisServer::start();
    let url = server.url();
    let url = url.as_str();
    let hmac = ("TOKENGATE_SECURITY_HASH", "hmac-sha256");
    let create = [
        "token",
        "create",
        "--account",
        "acme",
        "--name",
        "ci",
        "--json",
    ];

    // hash = "hmac-sha256" without the key: serve and the token commands
    // stop at once, in one line naming the variable.
    for args in [&["serve"][..], &create[..]] {
        let out = tokengate(args, &[("TOKENGATE_REDIS_URL", url), hmac]);
        assert_fails(&out, 1, "needs TOKENGATE_HASH_KEY");
    }
    let out = tokengate(
        &create,
        &[
            ("TOKENGATE_REDIS_URL", url),
            hmac,
            ("TOKENGATE_HASH_KEY", "too-short"),
        ],
    );
    assert_fails(&out, 1, "TOKENGATE_HASH_KEY must be at least 32 bytes");
    let out = tokengate(
        &create,
        &[
            ("TOKENGATE_REDIS_URL", url),
            ("TOKENGATE_SECURITY_HASH", "md5"),
        ],
    );
    assert_fails(&out, 1, "TOKENGATE_SECURITY_HASH: unknown variant `md5`");
    let out = tokengate(
        &create,
        &[
            ("TOKENGATE_REDIS_URL", url),
            ("TOKENGATE_HASH_KEYY", HASH_KEY),
        ],
    );
    assert_fails(&out, 1, "did you mean TOKENGATE_HASH_KEY?");
    assert!(server.dump().await.is_empty(), "a refused command wrote");

    // With it, the CLI hashes with HMAC under the key.
    let out = tokengate(
        &create,
        &[
            ("TOKENGATE_REDIS_URL", url),
            hmac,
            ("TOKENGATE_HASH_KEY", HASH_KEY),
        ],
    );
    let created = json(&out);
    let token = created["token"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let mut conn = server.connection().await;
    let hash: String =
        redis::AsyncCommands::hget(&mut conn, format!("tokengate:token:{id}"), "hash")
            .await
            .unwrap();
    let key = tokengate::hashing::HashKey::new(HASH_KEY.as_bytes());
    assert_eq!(hash, key.hash(token));
    for (name, value) in server.dump().await {
        assert!(!value.contains(&token[25..49]), "{name}: {value}");
    }
    let service = service(&server).await;
    let err = service.validate_token(token).await.unwrap_err();
    assert!(matches!(err, TokenError::HashKey(_)), "{err:?}");
    service
        .with_hash_key(key)
        .validate_token(token)
        .await
        .unwrap();
}
