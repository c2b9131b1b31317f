//! The test helpers' `npm ci` (`common::npm`) when several tests find a suite's packages missing
//! at once: CI once failed with two installs deleting each other's files in one directory.
//!
//! Four threads install a copy of the Node suite's manifest and lockfile into one fresh
//! directory; every one must succeed and leave every pinned package in place.

mod common;

use std::path::Path;

#[test]
fn concurrent_installs_in_one_directory_all_succeed() {
    if !["node", "npm"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) {
        common::skip_or_fail("the npm install test needs node and npm on PATH");
        return;
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("npm-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }

    let installs: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || common::npm::ensure_installed(&dir))
        })
        .collect();
    let failed = installs
        .into_iter()
        .map(|t| t.join())
        .filter(Result::is_err)
        .count();
    assert_eq!(failed, 0, "{failed} of 4 concurrent installs failed");

    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("package-lock.json")).unwrap()).unwrap();
    let packages = lock["packages"].as_object().expect("a v3 lockfile");
    let mut checked = 0;
    for path in packages.keys().filter(|p| !p.is_empty()) {
        assert!(
            dir.join(path).join("package.json").exists(),
            "{path} is missing after the concurrent installs"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the lockfile pins the official client and its protocol"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
