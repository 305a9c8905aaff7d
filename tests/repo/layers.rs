//! The crate's layers point one way (ARCHITECTURE.md, "Layers"):
//!
//! ```text
//! {settings, wire} ← {token, tls} ← {audit, hashing} ← store ← service ← auth
//!   ← telemetry ← {layer, doors} ← server ← config ← cli
//! ```
//!
//! This test reads `src/**/*.rs`, finds every `crate::<module>` path (in
//! `use` items and inline), and fails on one that names a module of a higher
//! layer, or on an import cycle between top-level modules. `lib.rs` (the
//! re-exports) and `main.rs` (the binary) are outside the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may use its own layer's and lower
/// ones'.
const LAYERS: &[(&str, u8)] = &[
    ("settings", 0),
    ("wire", 0),
    ("token", 1),
    ("tls", 1),
    ("audit", 2),
    ("hashing", 2),
    ("store", 3),
    ("service", 4),
    ("auth", 5),
    ("telemetry", 6),
    ("layer", 7),
    ("doors", 7),
    ("server", 8),
    ("config", 9),
    ("cli", 10),
];

/// Imports within one layer that are part of the design; any other
/// sideways import fails, as an upward one does.
const SIDEWAYS: &[(&str, &str)] = &[];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to tests/repo/layers.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/auth/cache.rs` → `auth`.
fn owner(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_str().unwrap().trim_end_matches(".rs").to_owned()
}

/// The top-level modules `text` names with `crate::…`, including each
/// item of a grouped `use crate::{a::X, b::{Y, Z}}` over several lines.
/// Comments are skipped.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(code_of).collect::<Vec<_>>().join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // The group's top-level items, up to its closing brace.
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    found.insert(ident(&group[start..i]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    found.insert(ident(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    found.remove("");
    found
}

/// A line without its `//` comment (a `//` inside a string, as in
/// `"http://…"`, is not one).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '/' if !in_string && line[i..].starts_with("//") => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Every top-level module's imports of other top-level modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = owner(&src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // A `use super::…` at the top of a file directly under src/ names
        // the crate root: a path around this test. (Indented ones are in
        // nested modules, such as `mod tests { use super::*; }`.)
        let top_level = file.parent() == Some(src.as_path())
            || file.file_name().is_some_and(|n| n == "mod.rs")
                && file.parent().and_then(Path::parent) == Some(src.as_path());
        if let Some(line) = text.lines().find(|line| {
            top_level
                && code_of(line)
                    .trim_start_matches("pub ")
                    .starts_with("use super::")
        }) {
            panic!(
                "{}: `{line}` names the crate root; use `crate::<module>`",
                file.display()
            );
        }
        let mut names = imports(&text);
        names.remove(&module);
        // Every name must be a module with a layer: a path through the
        // crate root's re-exports (`crate::Config`) would hide where it
        // points.
        if let Some(other) = names.iter().find(|n| !LAYERS.iter().any(|(m, _)| m == n)) {
            panic!(
                "{}: `crate::{other}` is not a module with a layer: name the module (or add it to tests/repo/layers.rs)",
                file.display()
            );
        }
        graph.entry(module).or_default().extend(names);
    }
    graph
}

#[test]
fn every_import_points_down_a_layer() {
    let mut upward = Vec::new();
    for (module, names) in graph() {
        for name in names {
            let sideways = layer(&name) == layer(&module)
                && !SIDEWAYS.contains(&(module.as_str(), name.as_str()));
            if layer(&name) > layer(&module) || sideways {
                upward.push(format!(
                    "{module} (layer {}) imports {name} (layer {})",
                    layer(&module),
                    layer(&name)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn there_is_no_import_cycle() {
    let graph = graph();
    // Depth-first search, reporting the first cycle found.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} → {module}", path[at..].join(" → "));
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_store_knows_nothing_above_it() {
    let graph = graph();
    let store: Vec<&String> = graph["store"].iter().collect();
    for name in &store {
        assert!(
            ["settings", "wire", "token", "audit"].contains(&name.as_str()),
            "store imports {name}"
        );
    }
    let wire: Vec<&String> = graph.get("wire").into_iter().flatten().collect();
    assert!(wire.is_empty(), "wire imports {wire:?}");
    let settings: Vec<&String> = graph.get("settings").into_iter().flatten().collect();
    assert!(settings.is_empty(), "settings imports {settings:?}");
}

#[test]
fn the_scanner_sees_imports() {
    let found = imports(
        "use crate::auth::{A, B};\nuse crate::{\n    store::{X, Y},\n    token,\n};\n// crate::cli\nlet x = crate::service::f();\n",
    );
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["auth", "service", "store", "token"]);
}

/// The soft budget ARCHITECTURE.md states: no file in `src/` over 800
/// lines (a file that grows past it holds more than one concept).
#[test]
fn no_source_file_is_over_800_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (lines > 800).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 800 lines:\n{}", long.join("\n"));
}

/// ARCHITECTURE.md's layer table names every top-level module of `src/`
/// with the layer this test gives it.
#[test]
fn the_architecture_map_matches_the_layers() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let mut missing = Vec::new();
    for (module, layer) in LAYERS {
        // A row of the table: the layer's number, then its modules.
        let listed = text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(layer.to_string().as_str()) && words.any(|w| w == *module)
        });
        if !listed {
            missing.push(format!("{module} (layer {layer})"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's layer table: {missing:?}"
    );
}
