//! The crate's top-level modules must not import each other in a circle, and
//! the CLI layer (`commands`, `bench`) stays on top: what a second program
//! links must not drag the command line in. Read from the source, so a new
//! `use` that closes a circle fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its files name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item in `{a::b, c, d::{e, f}}` (`s` starts after the `{`).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            c if expect_head && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                heads.push(ident(&s[i..]).to_string());
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

/// Modules named after `crate::` (and `backstop::`, which is how the binary's
/// modules reach the library's) in one file's code, comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for prefix in ["crate::", "backstop::"] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                match rest.strip_prefix('{') {
                    Some(group) => found.extend(group_heads(group)),
                    None => {
                        found.insert(ident(rest).to_string());
                    }
                }
            }
        }
    }
    found.retain(|m| !m.is_empty() && m != "self" && m != "super");
    found
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g = Graph::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src/");
        let first = rel.components().next().expect("a path under src/");
        let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&f).expect("read a source file");
        let deps = g.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|m| *m != module));
    }
    g
}

fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, node: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_import_each_other_without_a_circle() {
    let g = graph();
    assert!(
        g.contains_key("contract") && g.contains_key("tui"),
        "src/ was not read: {g:?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("import circle among src/'s modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn only_the_cli_imports_the_cli() {
    let g = graph();
    for (module, deps) in &g {
        if module != "main" {
            assert!(!deps.contains("commands"), "{module} imports commands, the CLI layer");
        }
        if module != "main" && module != "commands" {
            assert!(
                !deps.contains("bench"),
                "{module} imports bench, which only the CLI runs"
            );
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let found = imports(
        "use crate::{policy, registry::{self, Tool}};\n// crate::commands in a comment\nlet x = backstop::db::open();\nmycrate::nothing;",
    );
    let want: BTreeSet<String> = ["policy", "registry", "db"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert!(find_cycle(&g).is_some());
}
