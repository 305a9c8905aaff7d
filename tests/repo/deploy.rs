//! The deployment files (docs/guide/deployment.md) say what the code and CI do:
//! the Dockerfile builds as `.ci/run` does, runs as non-root with the
//! binary's own health check on the quick start's ports; the Kubernetes
//! sidecar manifest has what a sidecar needs and its config is a valid
//! tokengate config; the systemd unit passes `systemd-analyze verify`.
//! Docker is not available where CI runs, so the image itself is not built
//! here: `.ci/run` runs the Dockerfile's build command instead.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use tokengate::Config;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments
/// dropped: `(INSTRUCTION, arguments)`, split into stages at each `FROM`.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read("Dockerfile");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && logical.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            logical.push_str(part.trim());
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let (instruction, arguments) = logical.split_once(' ').unwrap_or((&logical, ""));
        let (instruction, arguments) = (instruction.to_uppercase(), arguments.trim().to_owned());
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push((instruction, arguments));
        logical.clear();
    }
    stages
}

fn instruction<'a>(stage: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// Cargo.toml's `rust-version`, as (major, minor).
fn declared_rust_version() -> (u32, u32) {
    let manifest = read("Cargo.toml");
    let value = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    let mut parts = value.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The listeners' ports of a tokengate config.
fn listener_ports(config: &Config) -> BTreeSet<u16> {
    [
        config.proxy.listen,
        config.admin.listen,
        config.forward_auth.listen,
    ]
    .into_iter()
    .flatten()
    .map(|a| a.port())
    .collect()
}

#[test]
fn the_dockerfile_builds_with_the_command_ci_runs() {
    let stages = dockerfile_stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let build = &stages[0];
    let runs = instruction(build, "RUN");
    let cargo_build: Vec<&str> = runs
        .iter()
        .copied()
        .filter(|r| r.starts_with("cargo build"))
        .collect();
    assert_eq!(
        cargo_build.len(),
        1,
        "one cargo build in the build stage: {runs:?}"
    );
    let command = cargo_build[0];
    for flag in ["--release", "--locked", "--bin tokengate"] {
        assert!(command.contains(flag), "{command:?} lacks {flag}");
    }
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run the Dockerfile's build command {command:?} on a line of its own"
    );

    // The toolchain: a pinned rust:<version>-bookworm, at least the declared
    // minimum.
    let from = instruction(build, "FROM")[0];
    let image = from.split_whitespace().next().unwrap();
    let version = image
        .strip_prefix("rust:")
        .and_then(|v| v.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("build stage is {image:?}, not rust:<version>-bookworm"));
    let mut parts = version.split('.').map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|_| panic!("{image:?}: pin a version, not a moving tag"))
    });
    let pinned = (parts.next().unwrap(), parts.next().expect("major.minor"));
    assert!(
        pinned >= declared_rust_version(),
        "{image:?} is older than Cargo.toml's rust-version {:?}",
        declared_rust_version()
    );
}

#[test]
fn the_image_runs_as_non_root_with_the_binarys_own_health_check() {
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let users = instruction(runtime, "USER");
    let user = users.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the runtime stage runs as {user}"
    );

    let copies = instruction(runtime, "COPY");
    let binary = copies
        .iter()
        .find(|c| c.starts_with("--from=") && c.contains("target/release/tokengate"))
        .and_then(|c| c.split_whitespace().last())
        .expect("the runtime stage copies the release binary");

    let healthcheck = instruction(runtime, "HEALTHCHECK");
    let healthcheck = healthcheck.first().expect("a HEALTHCHECK");
    let exec = healthcheck
        .split_once("CMD ")
        .map(|(_, cmd)| cmd)
        .expect("HEALTHCHECK … CMD [...]");
    let argv: Vec<String> = serde_json::from_str(exec)
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not an exec-form array ({e}): {exec}"));
    assert_eq!(argv[0], binary, "the health check runs the binary itself");
    assert_eq!(argv[1], "healthcheck");

    // That command exists in the binary (its own behaviour is tested in
    // tests/server/cli.rs against a running serve).
    let help = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(&argv[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{argv:?} --help failed");

    let entrypoint: Vec<String> =
        serde_json::from_str(instruction(runtime, "ENTRYPOINT")[0]).unwrap();
    assert_eq!(entrypoint, [binary]);
}

#[test]
fn the_image_exposes_the_quick_start_ports_and_its_config_listens_on_them() {
    let stages = dockerfile_stages();
    let runtime = stages.last().unwrap();
    let exposed: BTreeSet<u16> = instruction(runtime, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    let quickstart = Config::from_toml_str(&read("config/quickstart.toml")).unwrap();
    assert_eq!(exposed, listener_ports(&quickstart));

    // The image's own config: valid, the same ports, on every address (a
    // loopback listener is unreachable from outside a container), and no
    // Redis URL or key in it: those come from the environment.
    let image_config = read("deploy/docker/tokengate.toml");
    let config = Config::from_toml_str(&image_config)
        .unwrap_or_else(|e| panic!("deploy/docker/tokengate.toml: {e}"));
    assert_eq!(listener_ports(&config), exposed);
    for addr in [
        config.proxy.listen,
        config.admin.listen,
        config.forward_auth.listen,
    ]
    .into_iter()
    .flatten()
    {
        assert!(addr.ip().is_unspecified(), "{addr} in the image's config");
    }
    assert_eq!(config.redis.url, None);
    assert!(image_config.contains("TOKENGATE_REDIS_URL"));
    assert!(image_config.contains("TOKENGATE_ADMIN_KEY"));
    let copied = instruction(runtime, "COPY");
    assert!(
        copied
            .iter()
            .any(|c| c.starts_with("deploy/docker/tokengate.toml ")),
        "the image ships deploy/docker/tokengate.toml"
    );
    let env = instruction(runtime, "ENV");
    assert!(
        env.iter().any(|e| e.starts_with("TOKENGATE_CONFIG=")),
        "TOKENGATE_CONFIG points serve and healthcheck at it"
    );
}

/// Every document of a YAML file.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// A container port given by name or number.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().unwrap();
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The tokengate container's `serve --config FILE` is on a volume of the
/// manifest's ConfigMap.
fn assert_reads_the_config_map(tokengate: &Value, pod: &Value, config_map: &Value) {
    let args: Vec<&str> = tokengate["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("serve --config FILE");
    let mount = tokengate["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| config_path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the config file is on a mounted volume");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    assert!(config_path.ends_with("/tokengate.toml"));
}

#[test]
fn the_kubernetes_sidecar_manifest_has_what_a_sidecar_needs() {
    let documents = yaml_documents("deploy/kubernetes/sidecar.yaml");
    let of_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} in the manifest");
        found[0]
    };
    let deployment = of_kind("Deployment");
    let service = of_kind("Service");
    let config_map = of_kind("ConfigMap");

    // The config tokengate reads: valid, proxy to the API in the same pod.
    let config_text = config_map["data"]["tokengate.toml"]
        .as_str()
        .expect("the ConfigMap holds tokengate.toml");
    let config = Config::from_toml_str(config_text)
        .unwrap_or_else(|e| panic!("the ConfigMap's tokengate.toml: {e}"));
    let proxy_port = u64::from(config.proxy.listen.expect("[proxy] listen").port());
    let admin_port = u64::from(config.admin.listen.expect("[admin] listen").port());
    let upstream = config.proxy.upstream.as_ref().expect("[proxy] upstream");
    let upstream = upstream.authority().unwrap();
    assert_eq!(upstream.host(), "127.0.0.1", "the API is in the same pod");

    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "the API and tokengate");
    let tokengate = containers
        .iter()
        .find(|c| c["name"] == "tokengate")
        .expect("a container named tokengate");
    let api = containers
        .iter()
        .find(|c| c["name"] != "tokengate")
        .unwrap();
    assert!(
        api["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["containerPort"].as_u64() == upstream.port_u16().map(u64::from)),
        "the proxy's upstream is the API container's port"
    );

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &tokengate[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_number(tokengate, &get["port"]), admin_port, "{probe}");
    }

    let env = tokengate["env"].as_array().unwrap();
    for (variable, what) in [
        ("TOKENGATE_ADMIN_KEY", "the admin key"),
        ("TOKENGATE_REDIS_URL", "the Redis URL"),
    ] {
        let entry = env
            .iter()
            .find(|e| e["name"] == variable)
            .unwrap_or_else(|| panic!("{variable} is not set"));
        assert!(
            entry["valueFrom"]["secretKeyRef"]["name"].is_string() && entry.get("value").is_none(),
            "{what} must come from a Secret: {entry}"
        );
    }

    // The config file the container reads is the ConfigMap's.
    assert_reads_the_config_map(tokengate, pod, config_map);

    let resources = &tokengate["resources"];
    for kind in ["cpu", "memory"] {
        assert!(resources["requests"][kind].is_string(), "requests.{kind}");
    }
    assert!(resources["limits"]["memory"].is_string(), "limits.memory");

    let security = &tokengate["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(security["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true);

    // Enough time to drain: more than [server] shutdown_grace.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > config.server.shutdown_grace.as_secs(), "{grace} s");

    // The Service selects these pods and sends traffic to the proxy.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects the pods");
    }
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert_eq!(
            port_number(tokengate, &port["targetPort"]),
            proxy_port,
            "the Service must reach the API only through tokengate's proxy"
        );
    }
}

#[test]
fn the_integration_yaml_files_parse() {
    for path in [
        "docs/guide/integrations/traefik.yml",
        "docs/guide/integrations/envoy.yaml",
    ] {
        assert!(!yaml_documents(path).is_empty(), "{path} is empty");
    }
}

/// Envoy's `ext_authz` sends the check only the headers
/// `allowed_headers` lists: every spelling of a method override must be
/// among them (else a client's override is never checked), and none of the
/// original-request headers tokengate believes from a trusted proxy (else a
/// client names the method that is checked: `X-Forwarded-Method: GET` on a
/// DELETE).
#[test]
fn the_envoy_snippet_passes_method_overrides_and_no_original_request_header() {
    let documents = yaml_documents("docs/guide/integrations/envoy.yaml");
    let filter = documents[0]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .expect("the ext_authz filter");
    let patterns = filter["typed_config"]["http_service"]["authorization_request"]
        ["allowed_headers"]["patterns"]
        .as_array()
        .unwrap()
        .clone();
    // Envoy's StringMatcher, for the kinds the snippet may use.
    let allowed = |name: &str| {
        patterns.iter().any(|p| {
            let fold = |s: &str| {
                if p["ignore_case"] == true {
                    s.to_ascii_lowercase()
                } else {
                    s.to_owned()
                }
            };
            let name = fold(name);
            let text = |key: &str| p[key].as_str().map(fold);
            if let Some(exact) = text("exact") {
                name == exact
            } else if let Some(prefix) = text("prefix") {
                name.starts_with(&prefix)
            } else if let Some(suffix) = text("suffix") {
                name.ends_with(&suffix)
            } else if let Some(contains) = text("contains") {
                name.contains(&contains)
            } else {
                panic!("a pattern this test cannot read: {p}")
            }
        })
    };
    let mut spellings = Vec::new();
    for words in [
        &["x", "http", "method", "override"][..],
        &["x", "http", "method"],
        &["x", "method", "override"],
    ] {
        let mut names = vec![words[0].to_owned()];
        for word in &words[1..] {
            names = names
                .iter()
                .flat_map(|n| ["-", "_", "."].map(|sep| format!("{n}{sep}{word}")))
                .collect();
        }
        spellings.extend(names);
    }
    assert_eq!(spellings.len(), 27 + 9 + 9);
    for name in &spellings {
        assert!(allowed(name), "{name} does not reach the check");
        assert!(allowed(&name.to_ascii_uppercase()), "{name} upper-cased");
    }
    for name in [
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-original-method",
        "x-original-uri",
        "x_forwarded_method",
        "x-forwarded-host",
    ] {
        assert!(!allowed(name), "{name} reaches the check");
    }
    assert!(allowed("authorization"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("deploy/systemd/tokengate.service");
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let (program, args) = exec_start.split_once(' ').unwrap();
    assert_eq!(program, "/usr/local/bin/tokengate");
    assert_eq!(args, "serve --config /etc/tokengate/tokengate.toml");

    // Stopping waits longer than the drain.
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec=");
    let stop = humantime::parse_duration(stop).unwrap();
    let defaults = Config::default();
    assert!(
        stop > defaults.server.shutdown_grace,
        "TimeoutStopSec={stop:?}"
    );

    // verify needs ExecStart's program to exist: the binary under test.
    let dir = crate::support::procs::TempDir::new("systemd");
    let copy = dir.write(
        "tokengate.service",
        &unit.replace(
            "ExecStart=/usr/local/bin/tokengate ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_tokengate")),
        ),
    );
    // --man=no: Documentation=man:tokengate(1) is not installed here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}); install it (apt-get install -y systemd)")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown key is only a warning (exit 0): any output fails too.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
