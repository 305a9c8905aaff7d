//! The `rust-version` in Cargo.toml is the true minimum: not below what a
//! locked dependency or the crate's own code needs, and not above it.
//!
//! Only the installed toolchains (stable, nightly) can build here, so instead
//! of building with the declared version this reads the lockfile through
//! `cargo metadata --locked`: every package's own `rust-version`, for the
//! packages actually built for this machine's target with every feature.
//! The crate's own needs are its edition and the language features found in
//! its source; std APIs newer than the declared version are clippy's
//! `incompatible_msrv` lint's job (CI runs clippy with `-D warnings`).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A Rust version, `1.89` or `1.89.0` (a missing patch counts as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version([u64; 3]);

impl Version {
    fn parse(text: &str) -> Self {
        let mut parts = [0u64; 3];
        for (slot, part) in parts.iter_mut().zip(text.split('.')) {
            *slot = part
                .parse()
                .unwrap_or_else(|e| panic!("rust-version {text:?}: {e}"));
        }
        Self(parts)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, patch] = self.0;
        if patch == 0 {
            write!(f, "{major}.{minor}")
        } else {
            write!(f, "{major}.{minor}.{patch}")
        }
    }
}

/// What sets a minimum, and the minimum it sets.
#[derive(Debug, Clone)]
struct Need {
    version: Version,
    why: String,
}

/// `cargo metadata --locked` for this machine's target with every feature.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let host = Command::new("rustc")
        .args(["--print", "host-tuple"])
        .output()
        .expect("run rustc --print host-tuple");
    assert!(host.status.success(), "rustc --print host-tuple failed");
    let host = String::from_utf8(host.stdout).unwrap();
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--all-features",
        ])
        .args(["--filter-platform", host.trim()])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata --locked failed (is Cargo.lock up to date?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The highest `rust-version` among the packages a build of this crate
/// compiles: its normal and build dependencies, transitively (its
/// dev-dependencies build only for its own tests and benches).
fn dependencies_need(metadata: &Value) -> Option<Need> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = metadata["resolve"]["root"].as_str().unwrap();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let dev_only = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["kind"] == "dev");
            let dep_id = dep["pkg"].as_str().unwrap();
            if !dev_only && seen.insert(dep_id) {
                stack.push(dep_id);
            }
        }
    }
    seen.iter()
        .filter_map(|id| {
            let package = packages[id];
            let version = Version::parse(package["rust_version"].as_str()?);
            let why = format!(
                "{} {} declares rust-version {version}",
                package["name"].as_str().unwrap(),
                package["version"].as_str().unwrap()
            );
            Some(Need { version, why })
        })
        .max_by(|a, b| a.version.cmp(&b.version).then_with(|| a.why.cmp(&b.why)))
}

/// `if let … && …` / `if … && let …` (let chains, stable since 1.88) in a
/// source file: the first line that has one.
fn let_chain_line(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    for keyword in ["if ", "while "] {
        let mut from = 0;
        while let Some(at) = source[from..].find(keyword).map(|i| i + from) {
            from = at + keyword.len();
            let starts_word =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            if !starts_word {
                continue;
            }
            // The condition runs to the block's `{` (or a `;` if this was
            // not a condition after all, e.g. inside a comment).
            let end = source[from..]
                .find(['{', ';'])
                .map_or(source.len(), |i| i + from);
            let condition = &source[from..end];
            let has_let = condition.starts_with("let ") || condition.contains("&& let ");
            if has_let && condition.contains("&&") {
                return Some(source[..at].matches('\n').count() + 1);
            }
        }
    }
    None
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// What the crate's own code needs: its edition, and the newest language
/// feature it uses.
fn own_need(root: &Value) -> Need {
    let edition = root["edition"].as_str().unwrap();
    let mut need = Need {
        version: Version::parse(match edition {
            "2024" => "1.85",
            "2021" => "1.56",
            _ => "1.31",
        }),
        why: format!("edition {edition} needs 1.85"),
    };
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&manifest_dir.join("src"), &mut files);
    files.sort();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        if let Some(line) = let_chain_line(&source) {
            let shown = file.strip_prefix(manifest_dir).unwrap_or(&file).display();
            need = Need {
                version: Version::parse("1.88"),
                why: format!("let chains (stable in 1.88) in {shown}:{line}"),
            };
            break;
        }
    }
    need
}

#[test]
fn declared_rust_version_is_the_true_minimum() {
    let metadata = metadata();
    let root_id = metadata["resolve"]["root"].as_str().unwrap();
    let root = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == root_id)
        .unwrap();
    let declared = Version::parse(
        root["rust_version"]
            .as_str()
            .expect("Cargo.toml declares no rust-version"),
    );
    let own = own_need(root);
    let deps = dependencies_need(&metadata);
    let needed = match &deps {
        Some(deps) if deps.version > own.version => deps.clone(),
        _ => own.clone(),
    };
    match declared.cmp(&needed.version) {
        Ordering::Less => panic!(
            "Cargo.toml's rust-version {declared} is too low: {} (set rust-version = \"{}\")",
            needed.why, needed.version
        ),
        Ordering::Greater => panic!(
            "Cargo.toml's rust-version {declared} is higher than anything needs: the newest \
             dependency needs {} ({}), the crate's own code {} ({}) (set rust-version = \"{}\")",
            deps.as_ref()
                .map_or("nothing".to_owned(), |d| d.version.to_string()),
            deps.as_ref().map_or("-", |d| d.why.as_str()),
            own.version,
            own.why,
            needed.version
        ),
        Ordering::Equal => {}
    }
}

#[test]
fn let_chains_are_found_and_plain_conditions_are_not() {
    assert_eq!(
        let_chain_line("fn f() {\n    if let Some(x) = y\n        && x > 1\n    {}\n}"),
        Some(2)
    );
    assert_eq!(let_chain_line("if a && let Some(b) = c {}"), Some(1));
    assert_eq!(let_chain_line("if let Some(x) = y { a && b; }"), None);
    assert_eq!(let_chain_line("if a && b { let c = d; }"), None);
    assert_eq!(let_chain_line("while let Some(x) = it.next() {}"), None);
    assert_eq!(let_chain_line("let diff = 1;"), None);
}
