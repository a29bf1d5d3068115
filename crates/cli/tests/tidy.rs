//! ARCHITECTURE.md's invariants, checked mechanically so a change that blurs a boundary
//! fails the build instead of waiting for a reviewer to notice.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The `[dependencies]` table of a crate's manifest (not dev- or build-dependencies).
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml"))
        .expect("manifest");
    let doc: toml::Table = manifest.parse().expect("valid toml");
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn pure_crates_depend_on_no_io_crate() {
    let io = [
        "tokio",
        "rusqlite",
        "r2d2",
        "r2d2_sqlite",
        "tokio-postgres",
        "deadpool-postgres",
        "axum",
        "reqwest",
        "hyper",
        "tracing-subscriber",
    ];
    for krate in ["core", "engine"] {
        let deps = dependencies(krate);
        let bad: Vec<&String> = deps.iter().filter(|d| io.contains(&d.as_str())).collect();
        assert!(
            bad.is_empty(),
            "crates/{krate} must do no I/O but depends on {bad:?}"
        );
    }
}

#[test]
fn only_the_binary_chooses_a_storage_backend() {
    for krate in ["core", "engine", "store", "server"] {
        let deps = dependencies(krate);
        assert!(
            !deps.iter().any(|d| d.starts_with("waymark-store-")),
            "crates/{krate} depends on a storage backend; code above the store traits must not know which one runs"
        );
    }
}

#[test]
fn sql_lives_only_in_store_backends() {
    let mut files = Vec::new();
    for krate in ["core", "engine", "store", "server", "runtime", "cli"] {
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for keyword in [
            "SELECT ",
            "INSERT INTO",
            "DELETE FROM",
            "UPDATE journeys",
            "CREATE TABLE",
        ] {
            assert!(
                !text.contains(keyword),
                "{} contains SQL ({keyword:?}); SQL belongs in crates/store-*",
                file.display()
            );
        }
    }
}

#[test]
fn only_the_runtime_talks_to_providers() {
    // Provider protocols (SMTP, TLS sockets of our own) belong to the channels.
    for krate in [
        "core",
        "engine",
        "store",
        "store-sqlite",
        "store-postgres",
        "server",
        "cli",
    ] {
        let deps = dependencies(krate);
        for provider_crate in ["lettre", "tokio-rustls", "webpki-roots"] {
            assert!(
                !deps.iter().any(|d| d == provider_crate),
                "crates/{krate} depends on {provider_crate}; talking to providers is crates/runtime's"
            );
        }
    }
    for krate in [
        "core",
        "engine",
        "store",
        "store-sqlite",
        "store-postgres",
        "server",
    ] {
        assert!(
            !dependencies(krate).iter().any(|d| d == "reqwest"),
            "crates/{krate} makes HTTP calls; outgoing calls are crates/runtime's"
        );
    }
    // The binary calls a Waymark server only (`journeys apply`, `audiences apply`, the
    // bench tools).
    let mut files = Vec::new();
    rust_files(&root().join("crates/cli/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if text.contains("reqwest::") {
            assert!(
                ["bench.rs", "journeys.rs", "audiences.rs"].contains(&name),
                "{} makes HTTP calls; calls to providers and webhooks belong in crates/runtime",
                file.display()
            );
        }
    }
    let deps = dependencies("runtime");
    for above in [
        "waymark-server",
        "waymark-store-sqlite",
        "waymark-store-postgres",
    ] {
        assert!(
            !deps.iter().any(|d| d == above),
            "crates/runtime depends on {above}; it runs over the store traits only"
        );
    }
}

#[test]
fn backends_hold_no_journey_logic() {
    // The run (what to read, the plan, what to write) is `waymark_store::pipeline`; a
    // backend only answers its reads and writes (`RunTx`).
    let mut files = Vec::new();
    for krate in ["store-sqlite", "store-postgres"] {
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for pipeline_step in [
            "plan_events",
            "plan_timers",
            "plan_webhook",
            "plan_jump",
            "state_keys",
            "compile_into",
            "count_state_change",
            "stop_all",
            "update_traits",
        ] {
            assert!(
                !text.contains(pipeline_step),
                "{} calls {pipeline_step}: journey logic belongs in waymark_store::pipeline, above the backends",
                file.display()
            );
        }
    }
}

/// The top-level module a file of a crate's `src` belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!["lib", "main"].contains(&name)).then(|| name.to_owned())
}

/// The modules a file names as `crate::module`.
fn crate_references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn modules_import_each_other_without_circles() {
    for krate in [
        "core",
        "engine",
        "store",
        "store-sqlite",
        "store-postgres",
        "server",
        "runtime",
        "cli",
    ] {
        let src = root().join("crates").join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for file in &files {
            let Some(from) = top_module(&src, file) else {
                continue;
            };
            let text = std::fs::read_to_string(file).expect("read");
            let modules = edges.entry(from.clone()).or_default();
            for to in crate_references(&text) {
                if to != from {
                    modules.insert(to);
                }
            }
        }
        // Depth-first search for a path back to where it started.
        fn path_back(
            edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            start: &str,
            at: &str,
            seen: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            for next in edges.get(at).into_iter().flatten() {
                if next == start {
                    return Some(vec![at.to_owned(), next.clone()]);
                }
                if seen.contains(next) {
                    continue;
                }
                seen.push(next.clone());
                if let Some(mut path) = path_back(edges, start, next, seen) {
                    path.insert(0, at.to_owned());
                    return Some(path);
                }
            }
            None
        }
        for start in edges.keys() {
            if let Some(circle) = path_back(&edges, start, start, &mut Vec::new()) {
                panic!(
                    "crates/{krate}: modules import each other in a circle: {}",
                    circle.join(" -> ")
                );
            }
        }
    }
}

#[test]
fn the_code_map_names_every_crate() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for entry in std::fs::read_dir(root().join("crates"))
        .expect("crates")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            map.contains(&format!("\n  {name}/ ")),
            "ARCHITECTURE.md's code map does not describe crates/{name}"
        );
    }
}
