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
    for krate in ["core", "engine", "store", "server", "cli"] {
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
