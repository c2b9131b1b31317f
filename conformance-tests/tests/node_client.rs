//! Runs the Node.js conformance suite (`conformance-tests/node`): the official
//! `@microsoft/signalr` client, pinned in `package-lock.json`, against `conformance-server`.
//!
//! Without Node.js or npm the suite cannot run: locally that is a loud warning, under CI
//! (`CI` set) a failure, so a machine without Node can never pass CI silently.

use std::path::Path;
use std::process::Command;

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn official_js_client_conformance() {
    let missing: Vec<&str> = ["node", "npm"]
        .into_iter()
        .filter(|tool| !tool_available(tool))
        .collect();
    if !missing.is_empty() {
        let message = format!(
            "the JS conformance suite needs {} on PATH (Node.js 20+)",
            missing.join(" and ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}: refusing to skip under CI");
        }
        eprintln!(
            "\n!!!!!!!!!! WARNING: {message}; SKIPPED (this would fail under CI) !!!!!!!!!!\n"
        );
        return;
    }

    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    if !suite.join("node_modules/@microsoft/signalr").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&suite)
            .status()
            .expect("npm ci runs");
        assert!(status.success(), "npm ci failed in {}", suite.display());
    }

    let status = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=2",
            "--test-reporter=spec",
            "test/",
        ])
        .current_dir(&suite)
        .env(
            "SIGNALR_SERVER_BIN",
            env!("CARGO_BIN_EXE_conformance-server"),
        )
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "the JS conformance suite failed (see its output above)"
    );
}
