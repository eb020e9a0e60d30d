//! Scenario: someone calls sled's `flush_async` again. sled 0.34 deadlocks when several of
//! those run at once (spacejam/sled#1308: every `sled-io` thread stuck in
//! `make_stable_inner`, the checkpoint frozen, SIGTERM never finishing). binsync's store has
//! one writer thread that alone flushes (`src/checkpoint/writer.rs`); the receiver flushes one
//! at a time on a blocking thread. This reads every Rust file of the product (`src/`,
//! `crates/`) and fails naming each line that mentions the call.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_product_never_calls_flush_async() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("crates"), &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let needle = ["flush", "_async"].concat();
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(&needle) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "sled's {needle} deadlocks when called concurrently (sled#1308); write through the \
         store's writer (checkpoint::Store::write) instead:\n{}",
        found.join("\n")
    );
}
