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
    for part in [
        "pool",
        "db",
        "state.rs",
        "config.rs",
        "upstream.rs",
        "credentials.rs",
        "net.rs",
        "health.rs",
        "dialects",
        "sse.rs",
        "clients",
        "metrics.rs",
        "ids.rs",
        "names.rs",
        "catalog",
        "connect.rs",
        "vault",
    ] {
        found.extend(imports(part, &["admin", "proxy"]));
    }
    // The bottom floor does not reach into the pool either (key masking and
    // the strategy's name live below it).
    found.extend(imports("db", &["pool", "metrics", "clients", "credentials", "state", "health"]));
    found.extend(imports("config.rs", &["pool", "db"]));
    found.extend(imports("upstream.rs", &["pool", "db"]));
    found.extend(imports("ids.rs", &["pool", "db", "config"]));
    found.extend(imports("names.rs", &["pool", "db", "config", "clients", "aliases"]));
    // The vault is cryptography alone: the database work on keys is db's.
    found.extend(imports("vault", &["pool", "db", "config", "credentials", "state"]));
    // The pool's surface is `pool::` (its re-exports): nothing outside the
    // pool names the actor's files, nor the import workflow's insides.
    for part in ["admin", "proxy", "startup.rs", "state.rs", "health.rs"] {
        found.extend(imports(part, &["pool::actor"]));
    }
    found.extend(imports("admin", &["proxy"]));
    found.extend(imports("proxy", &["admin"]));
    assert!(found.is_empty(), "imports that point up or sideways:\n{}", found.join("\n"));
    // The check can fail: it finds what it looks for.
    assert!(!imports("startup.rs", &["admin"]).is_empty());
}

#[test]
fn every_proxied_route_is_in_the_log_filters_endpoint_list() {
    let routes =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy/mod.rs")).unwrap();
    let mut seen = 0;
    for line in routes.lines().map(str::trim).filter(|l| l.starts_with(".route(\"/")) {
        let path = format!("/v1{}", line.split('"').nth(1).unwrap());
        let listed = siliconflow_proxy::upstream::ENDPOINTS
            .iter()
            .any(|e| path == *e || path.strip_prefix(e).is_some_and(|rest| rest.starts_with('/')));
        assert!(listed, "{path} is routed but not in upstream::ENDPOINTS");
        seen += 1;
    }
    assert!(seen >= 20, "found the routes ({seen})");
}

/// Dialects are pure translations: of the crate they use only each other and
/// the SSE line splitter, so they can be tested on fixtures and reused anywhere.
#[test]
fn dialects_depend_on_nothing_of_the_crate_but_themselves_and_the_sse_splitter() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in sources(&src.join("dialects")).into_iter().chain(sources(&src.join("sse.rs"))) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let path = &rest[at + "crate::".len()..];
                if !path.starts_with("sse") && !path.starts_with("dialects") {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
                rest = &rest[at + 1..];
            }
        }
    }
    assert!(found.is_empty(), "dialects reaching into the crate:\n{}", found.join("\n"));
    assert!(!sources(&src.join("dialects")).is_empty(), "the check reads the dialect files");
}

/// Every file and folder under `src/` in the README's Layout drawing, and
/// nothing that is not there: the drawing is the map a newcomer reads.
#[test]
fn the_readme_layout_drawing_matches_the_source_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let layout = readme.split("## Layout").nth(1).expect("a Layout section");
    let drawing = layout.split("```text").nth(1).and_then(|d| d.split("```").next()).expect("a drawing");
    // Each line: tree characters, then a name, then (after two spaces) what it holds.
    let mut drawn = std::collections::BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for line in drawing.lines().filter(|l| !l.trim().is_empty()) {
        let start = line.find(|c: char| c.is_alphanumeric() || c == '_').unwrap_or(line.len());
        let depth = line[..start].chars().count() / 4;
        let name = line[start..].split("  ").next().unwrap().trim().to_string();
        stack.truncate(depth);
        stack.push(name.trim_end_matches('/').to_string());
        drawn.insert(stack.join("/"));
    }
    let mut actual = std::collections::BTreeSet::new();
    for file in sources(&root.join("src")) {
        let rel = file.strip_prefix(root).unwrap();
        let mut path = PathBuf::new();
        for part in rel.components() {
            path.push(part);
            actual.insert(path.to_string_lossy().replace('\\', "/"));
        }
    }
    let missing: Vec<_> = actual.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&actual).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not drawn: {missing:?}; drawn but absent: {extra:?}");
    assert!(drawn.contains("src/pool/actor/mod.rs"), "the drawing was read: {drawn:?}");
}
