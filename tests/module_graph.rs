//! Scenario: someone adds a `use` that ties two top-level modules of the product into a
//! cycle, or reaches into the reference receiver's internals. This reads `src/` the way a
//! dependency-graph tool does (every `crate::MODULE` path in code, per top-level module) and
//! fails with the cycle it finds, so the layering stays what `lib.rs`'s map says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The top-level module a file belongs to: `src/sink/http/mod.rs` -> `sink`.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Code without comments (doc links are not dependencies) and without string literals.
fn code_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().map(|line| {
        let mut out = String::new();
        let mut in_str = false;
        let mut prev = ' ';
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out
    })
}

/// Every `crate::NAME` in `line`.
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `binsync_receiver::...` is another crate; `crate::` must stand alone.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
            refs.push(name);
        }
        rest = after;
    }
    refs
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere; they are not part of the layering.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let entry = edges.entry(from.clone()).or_default();
        for line in code_lines(code) {
            for to in crate_refs(&line) {
                if to != from && modules.contains(&to) {
                    entry.insert(to);
                }
            }
        }
    }
    edges
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let edges = graph();
    assert!(edges.len() >= 10, "read too few modules: {edges:?}");
    for (from, to) in &edges {
        eprintln!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "import cycle between top-level modules: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let mut edges = graph();
    // Pretend the lowest layer reached back up to the wiring.
    edges
        .entry("gtid".into())
        .or_default()
        .insert("pipeline".into());
    let cycle = find_cycle(&edges).expect("a planted cycle is found");
    assert!(cycle.contains(&"gtid".to_string()), "{cycle:?}");
    assert_eq!(crate_refs("use crate::sink::{self, Ack};"), vec!["sink"]);
    assert!(crate_refs("binsync_receiver::serve()").is_empty());
}

#[test]
fn the_product_uses_only_the_receivers_public_surface() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in code_lines(&text) {
            let mut rest = line.as_str();
            while let Some(i) = rest.find("binsync_receiver::") {
                let after = &rest[i + "binsync_receiver::".len()..];
                let segment: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let deeper = after[segment.len()..].starts_with("::");
                assert!(
                    !(deeper && segment.chars().next().is_some_and(|c| c.is_lowercase())),
                    "{} reaches into the receiver's module `{segment}`: use its root API",
                    file.display()
                );
                rest = after;
            }
        }
    }
}
