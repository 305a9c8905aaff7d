use std::time::Duration;

use super::*;
use crate::doors::admin::AdminKey;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("tokengate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.toml", crc32fast::hash(text.as_bytes())));
    std::fs::write(&path, text).unwrap();
    let result = Config::load_with_env(Some(&path), env(vars));
    std::fs::remove_file(&path).unwrap();
    result
}

/// Found by tests/server/fuzz.rs (`config_toml_loads_or_fails_on_one_line`):
/// a key with a lone carriage return was quoted as is, and the error
/// took two lines.
#[test]
fn errors_quoting_control_characters_stay_on_one_line() {
    // Found by the AFL target fuzz/src/bin/config.rs: a Redis URL with
    // a `\n` escape, quoted by its validation error.
    let url = "[redis]\nurl = \"redis:::://1?7-1;{|}drj`ip]#trn\\nlhr\t=e~6379\"\n";
    for text in ["!\r!=", "\0\r\0=", "[a\rb]", url] {
        let error = Config::from_toml_str(text).unwrap_err().to_string();
        assert!(!error.contains(['\r', '\n', '\0']), "{error:?}");
    }
}

#[test]
fn defaults_without_a_file() {
    let config = Config::load_with_env(None, env(&[])).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.redis.url, None);
    assert_eq!(config.security.bcrypt_cost, 10);
}

#[test]
fn the_shipped_examples_parse() {
    for name in ["tokengate.toml", "quickstart.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        Config::load_with_env(Some(&path), env(&[])).unwrap();
    }
    // The reference file sets every key it shows to its default.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokengate.toml");
    let reference = Config::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(reference, Config::default());
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let err = load("[redis]\nurll = \"redis://x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, key redis.urll"), "{err}");
    let err = load("[reddis]\n", &[]).unwrap_err().to_string();
    assert!(err.contains("reddis"), "{err}");
    let err = load("[security]\nbcrypt_cost = \"ten\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, key security.bcrypt_cost"), "{err}");
    let err = load("[security]\nbcrypt_cost = 3\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("security.bcrypt_cost"), "{err}");
    let err = load("[redis]\nkey_prefix = \"a b\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis.key_prefix"), "{err}");
    let err = load("[redis]\nurl = \"http://nope\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis.url"), "{err}");
    let err = load("not toml at all", &[]).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn environment_overrides_the_file() {
    let text = "[redis]\nurl = \"redis://file:6379\"\n[security]\nbcrypt_cost = 11\n";
    let config = load(
        text,
        &[
            ("TOKENGATE_REDIS_URL", "redis://env:6379"),
            ("TOKENGATE_SECURITY_BCRYPT_COST", "12"),
            ("TOKENGATE_CONFIG", "ignored.toml"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    assert_eq!(config.redis.url.as_deref(), Some("redis://env:6379"));
    assert_eq!(config.security.bcrypt_cost, 12);
}

#[test]
fn bad_environment_values_name_the_variable() {
    let err = load("", &[("TOKENGATE_REDIS_PASSWORD", "x")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("TOKENGATE_REDIS_PASSWORD"), "{err}");
    let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "lots")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("TOKENGATE_SECURITY_BCRYPT_COST"), "{err}");
    let err = load("", &[("TOKENGATE_SECURITY_BCRYPT_COST", "99")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("security.bcrypt_cost"), "{err}");
}

#[test]
fn every_key_of_every_section_has_its_variable() {
    // `section_keys` reads serde's field names: a section missing from
    // it (or a `#[serde(flatten)]`, which hides them) would make its
    // variables refused.
    for &section in fields_of::<Config>() {
        let keys = section_keys(section);
        let lists = ["public_routes", "routes"];
        assert_eq!(keys.is_empty(), lists.contains(&section), "[{section}]");
    }
    let vars: Vec<String> = env_settings().map(|(_, _, var)| var).collect();
    for var in [
        "REDIS_URL",
        "REDIS_EMBEDDED",
        "PROXY_LISTEN",
        "FORWARD_AUTH_LISTEN",
        "LOG_FORMAT",
    ] {
        assert!(vars.iter().any(|v| v == var), "{var}");
    }
    // Every key the reference file shows can be set from a variable.
    let table = toml::Table::try_from(Config::default()).unwrap();
    for (section, entries) in table {
        let toml::Value::Table(entries) = entries else {
            continue;
        };
        for key in entries.keys() {
            let var = format!("{section}_{key}").to_ascii_uppercase();
            assert!(vars.contains(&var), "{var}");
        }
    }
}

#[test]
fn unknown_variables_are_refused_with_the_nearest_name() {
    for (var, hint) in [
        ("TOKENGATE_REDDIS_URL", "did you mean TOKENGATE_REDIS_URL?"),
        ("TOKENGATE_REDIS_URLL", "did you mean TOKENGATE_REDIS_URL?"),
        (
            "TOKENGATE_FORWARDAUTH_LISTEN",
            "did you mean TOKENGATE_FORWARD_AUTH_LISTEN?",
        ),
        ("TOKENGATE_ADMIN_KEYY", "did you mean TOKENGATE_ADMIN_KEY?"),
        ("TOKENGATE_HASH_KEYY", "did you mean TOKENGATE_HASH_KEY?"),
        ("TOKENGATE_CONFI", "did you mean TOKENGATE_CONFIG?"),
        (
            "TOKENGATE_PUBLIC_ROUTES_PATH_PREFIX",
            "set in the config file only",
        ),
        ("TOKENGATE_NOTHING_LIKE_IT", "names no setting"),
    ] {
        // Even empty: a typo is a typo.
        for value in ["redis://127.0.0.1", ""] {
            let err = load("", &[(var, value)]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("environment variable {var}: ")),
                "{err}"
            );
            assert!(err.contains(hint), "{var}: {err}");
        }
    }
    // Not ours, or not a setting: left alone.
    load("", &[("TOKENGATEWAY", "x"), ("TOKENGATE_CONFIG", "x.toml")]).unwrap();
}

#[test]
fn range_errors_say_where_the_value_was_written() {
    let text = "[log]\nformat = \"human\"\n\n[cache]\nttl = \"120m\"\n";
    let err = load(text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("config file "), "{err}");
    assert!(
        err.ends_with(": line 5, key cache.ttl = \"120m\": 2h is outside 1s–1h"),
        "{err}"
    );
    // The variable that overrides the file is the one to blame.
    let err = load(text, &[("TOKENGATE_CACHE_TTL", "2h")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "environment variable TOKENGATE_CACHE_TTL: cache.ttl: 2h is outside 1s–1h"
    );
    // A value the message already quotes is not shown twice.
    let err = load("[proxy]\nupstream = \"ftp://x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            r#": line 2, key proxy.upstream: "ftp://x": only http:// and https:// upstreams are supported"#
        ),
        "{err}"
    );
}

#[test]
fn durations_lists_and_ranges() {
    let config = load(
        "[cache]\nttl = \"1m\"\nnegative_ttl = \"500ms\"\n",
        &[(
            "TOKENGATE_CLIENT_IP_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.0.0/16",
        )],
    )
    .unwrap();
    assert_eq!(config.cache.ttl, Duration::from_secs(60));
    assert_eq!(config.cache.negative_ttl, Duration::from_millis(500));
    let nets: Vec<String> = config
        .client_ip
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.0.0/16"]);

    for (text, key) in [
        ("[cache]\nttl = \"soon\"\n", "line 2, key cache.ttl"),
        ("[cache]\nttl = \"2h\"\n", "cache.ttl"),
        ("[cache]\nnegative_ttl = \"1m\"\n", "cache.negative_ttl"),
        ("[cache]\ndegraded_ttl = \"2h\"\n", "cache.degraded_ttl"),
        (
            "[rate_limit]\nfailed_auth_ipv6_prefix = 16\n",
            "rate_limit.failed_auth_ipv6_prefix",
        ),
        ("[server]\nidle_timeout = \"1ms\"\n", "server.idle_timeout"),
        (
            "[server]\nhttp2_max_concurrent_streams = 0\n",
            "server.http2_max_concurrent_streams",
        ),
        (
            "[proxy]\nclient_body_timeout = \"0s\"\n",
            "proxy.client_body_timeout",
        ),
        (
            "[rate_limit]\nper_token_burst = 0\n",
            "rate_limit.per_token_burst",
        ),
        (
            "[headers]\naccount_id = \"Authorization\"\n",
            "headers.account_id",
        ),
        (
            "[headers]\ntoken_id = \"x_account.id\"\n",
            "headers.token_id",
        ),
        ("[sources]\nquery_param = \"a b\"\n", "sources.query_param"),
        (
            "[client_ip]\ntrusted_proxies = [\"nope\"]\n",
            "client_ip.trusted_proxies",
        ),
        (
            "[[public_routes]]\npath_prefix = \"/a/../b\"\n",
            "public_routes.path_prefix",
        ),
        (
            "[[public_routes]]\npath_prefix = \"/a\"\nmethods = [\"G T\"]\n",
            "public_routes.methods",
        ),
        (
            "[last_accessed]\nflush_interval = \"1ms\"\n",
            "last_accessed.flush_interval",
        ),
        ("[server]\nworkers = 0\n", "server.workers"),
        (
            "[proxy]\ntunnel_idle_timeout = \"2d\"\n",
            "proxy.tunnel_idle_timeout",
        ),
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{text:?}: {err}");
    }
}

#[test]
fn listener_certificates_and_the_upstream_ca_are_keys_of_each_section() {
    let text = "[proxy]\nupstream = \"https://api.internal:8443\"\n\
                upstream_ca_file = \"/etc/ca.crt\"\n\
                tls_cert = \"/etc/proxy.crt\"\ntls_key = \"/etc/proxy.key\"\n\
                [forward_auth]\ntls_cert = \"/etc/fa.crt\"\ntls_key = \"/etc/fa.key\"\n";
    let config = load(
        text,
        &[
            ("TOKENGATE_ADMIN_TLS_CERT", "/env/admin.crt"),
            ("TOKENGATE_ADMIN_TLS_KEY", "/env/admin.key"),
            ("TOKENGATE_PROXY_TLS_KEY", "/env/proxy.key"),
        ],
    )
    .unwrap();
    let upstream = config.proxy.upstream.as_ref().unwrap();
    assert!(upstream.is_https());
    assert_eq!(upstream.authority().unwrap().as_str(), "api.internal:8443");
    assert_eq!(
        config.proxy.upstream_ca_file.as_deref(),
        Some(Path::new("/etc/ca.crt"))
    );
    assert_eq!(
        config.proxy.tls_cert.as_deref(),
        Some(Path::new("/etc/proxy.crt"))
    );
    assert_eq!(
        config.proxy.tls_key.as_deref(),
        Some(Path::new("/env/proxy.key"))
    );
    assert!(config.forward_auth.tls_key.is_some());
    assert_eq!(
        config.admin.tls_cert.as_deref(),
        Some(Path::new("/env/admin.crt"))
    );

    for (text, message) in [
        (
            "[admin]\ntls_cert = \"/a.crt\"\n",
            "config key admin.tls_key: is required when admin.tls_cert is set (both or neither)",
        ),
        (
            "[forward_auth]\ntls_key = \"/a.key\"\n",
            "config key forward_auth.tls_cert: is required when forward_auth.tls_key is set (both or neither)",
        ),
        (
            "[proxy]\ntls_cert = \"/a.crt\"\n",
            "config key proxy.tls_key: is required when proxy.tls_cert is set (both or neither)",
        ),
        (
            "[proxy]\nupstream = \"http://x\"\nupstream_ca_file = \"/ca.crt\"\n",
            "line 3, key proxy.upstream_ca_file = \"/ca.crt\": is for an https:// proxy.upstream only",
        ),
    ] {
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.ends_with(message), "{err}");
    }
    let err = load("[admin]\ntls_crt = \"/a.crt\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, key admin.tls_crt"), "{err}");
    let err = load("[admin]\ntls_cert = 5\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, key admin.tls_cert"), "{err}");
}

#[test]
fn the_admin_key_comes_from_the_environment_only() {
    let text = "[admin]\nlisten = \"127.0.0.1:8081\"\n";
    // The token commands read the same file and need no admin key.
    let config = load(text, &[]).unwrap();
    assert_eq!(config.admin.key, None);
    let err = config.serve_config().validate().unwrap_err().to_string();
    assert!(err.contains("needs TOKENGATE_ADMIN_KEY"), "{err}");

    let key = "an-admin-key-of-24-chars";
    let config = load(text, &[("TOKENGATE_ADMIN_KEY", key)]).unwrap();
    assert_eq!(config.admin.key, Some(AdminKey::new(key)));
    config.serve_config().validate().unwrap();
    assert!(!format!("{config:?}").contains(key), "Debug shows the key");
    let short = load(text, &[("TOKENGATE_ADMIN_KEY", "short")]).unwrap();
    let err = short.serve_config().validate().unwrap_err().to_string();
    assert_eq!(err, "TOKENGATE_ADMIN_KEY must be at least 16 characters");
    // Never from the file.
    let err = load("[admin]\nkey = \"an-admin-key-of-24-chars\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("admin.key"), "{err}");
}

#[test]
fn the_hash_key_comes_from_the_environment_only() {
    use crate::hashing::{HashKey, HashKind};

    let key = "a-hash-key-of-at-least-32-bytes!!";
    // bcrypt by default; the key, when set, is read all the same.
    let config = load("", &[("TOKENGATE_HASH_KEY", key)]).unwrap();
    assert_eq!(config.security.hash, HashKind::Bcrypt);
    assert_eq!(config.security.hash_key, Some(HashKey::new(key.as_bytes())));
    assert!(!format!("{config:?}").contains(key), "Debug shows the key");
    let hmac = "[security]\nhash = \"hmac-sha256\"\n";
    let config = load(hmac, &[("TOKENGATE_HASH_KEY", key)]).unwrap();
    assert_eq!(config.security.hash, HashKind::HmacSha256);
    let config = load(
        "",
        &[
            ("TOKENGATE_SECURITY_HASH", "hmac-sha256"),
            ("TOKENGATE_HASH_KEY", key),
        ],
    )
    .unwrap();
    assert_eq!(config.security.hash, HashKind::HmacSha256);

    // hmac-sha256 without a key (or an empty one), a short key.
    for vars in [&[][..], &[("TOKENGATE_HASH_KEY", "")]] {
        let err = load(hmac, vars).unwrap_err().to_string();
        assert_eq!(
            err,
            "[security] hash = \"hmac-sha256\" needs TOKENGATE_HASH_KEY \
             (at least 32 bytes, in the environment only)"
        );
    }
    let err = load("", &[("TOKENGATE_HASH_KEY", "short")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "TOKENGATE_HASH_KEY must be at least 32 bytes (it has 5)"
    );
    // Never from the file; a bad kind names the key.
    let err = load(&format!("[security]\nhash_key = \"{key}\"\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("security.hash_key"), "{err}");
    assert!(!err.to_string().contains(key), "{err}");
    let err = load("[security]\nhash = \"md5\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, key security.hash"), "{err}");
    assert!(err.contains("hmac-sha256"), "{err}");
    let err = load("", &[("TOKENGATE_SECURITY_HASH", "sha1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("environment variable TOKENGATE_SECURITY_HASH: "),
        "{err}"
    );
}

#[test]
fn the_upstream_is_parsed_when_the_config_is_read() {
    let config = load("[proxy]\nupstream = \"http://127.0.0.1:9000/\"\n", &[]).unwrap();
    let upstream = config.proxy.upstream.unwrap();
    assert_eq!(upstream.authority().unwrap().as_str(), "127.0.0.1:9000");
    for (bad, message) in [
        (
            "ftp://x",
            r#"config key proxy.upstream: "ftp://x": only http:// and https:// upstreams are supported"#,
        ),
        (
            "http://u:p@x",
            r#"config key proxy.upstream: "http://u:p@x" needs a host, and no credentials"#,
        ),
        (
            "http://x/api",
            r#"config key proxy.upstream: "http://x/api": no path or query (requests keep their own path)"#,
        ),
    ] {
        let message = message.strip_prefix("config key ").unwrap();
        let err = load(&format!("[proxy]\nupstream = \"{bad}\"\n"), &[]).unwrap_err();
        let err = err.to_string();
        assert!(err.ends_with(&format!(": line 2, key {message}")), "{err}");
        let err = load("", &[("TOKENGATE_PROXY_UPSTREAM", bad)]).unwrap_err();
        let expected = format!("environment variable TOKENGATE_PROXY_UPSTREAM: {message}");
        assert_eq!(err.to_string(), expected);
    }
    // The environment replaces a bad value in the file.
    let config = load(
        "[proxy]\nupstream = \"ftp://x\"\n",
        &[("TOKENGATE_PROXY_UPSTREAM", "http://127.0.0.1:9001")],
    )
    .unwrap();
    let upstream = config.proxy.upstream.unwrap();
    assert_eq!(upstream.to_string(), "http://127.0.0.1:9001");
}
