//! Shared by the test binaries that drive our servers with other clients: running a Node.js
//! suite under `conformance-tests/node`, and skipping when a tool is missing.
//!
//! Without its tools a suite cannot run: locally that is a loud warning, under CI (`CI` set) a
//! failure, so a machine without them can never pass CI silently.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub mod npm;

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Skips the calling test with a loud warning, or fails it under CI.
pub fn skip_or_fail(message: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{message}: refusing to skip under CI");
    }
    eprintln!("\n!!!!!!!!!! WARNING: {message}; SKIPPED (this would fail under CI) !!!!!!!!!!\n");
}

/// Runs `node --test <suite_dir>` in `conformance-tests/node` with `server_env` set to
/// `server_bin`, installing the pinned packages first if they are missing.
pub fn run_node_suite(suite_dir: &str, server_env: &str, server_bin: &str) {
    let missing: Vec<&str> = ["node", "npm"]
        .into_iter()
        .filter(|tool| !tool_available(tool))
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "the Node.js suite {suite_dir} needs {} on PATH (Node.js 20+)",
            missing.join(" and ")
        );
        skip_or_fail(&message);
        return;
    }

    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    npm::ensure_installed(&node_dir);

    let status = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=2",
            "--test-reporter=spec",
            suite_dir,
        ])
        .current_dir(&node_dir)
        .env(server_env, server_bin)
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "the Node.js suite {suite_dir} failed (see its output above)"
    );
}
