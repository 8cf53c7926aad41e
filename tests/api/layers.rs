//! The layers point down: the bottom (config, db, pool, the upstream's rules,
//! credentials, request helpers, the shared state) imports nothing from the
//! two surfaces (`admin/`, `proxy/`), and the surfaces not from each other.

use std::path::{Path, PathBuf};

fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        out.extend(sources(&entry.unwrap().path()));
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    out
}

/// Lines of the files under `part` that name one of `banned` modules.
fn imports(part: &str, banned: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in sources(&src.join(part)) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for b in banned {
                // `crate::admin`, and `super::super::admin` from deeper files.
                if line.contains(&format!("crate::{b}")) || line.contains(&format!("super::super::{b}")) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn the_bottom_layers_import_nothing_from_admin_or_proxy_and_those_not_from_each_other() {
    let mut found = Vec::new();
    for part in
        ["pool", "db", "state.rs", "config.rs", "upstream.rs", "credentials.rs", "net.rs", "health.rs"]
    {
        found.extend(imports(part, &["admin", "proxy"]));
    }
    found.extend(imports("admin", &["proxy"]));
    found.extend(imports("proxy", &["admin"]));
    assert!(found.is_empty(), "imports that point up or sideways:\n{}", found.join("\n"));
    // The check can fail: it finds what it looks for.
    assert!(!imports("startup.rs", &["admin"]).is_empty());
}
