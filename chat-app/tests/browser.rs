//! The web UI in headless Chromium (`conformance-tests/browser/ui.test.mjs`): `playwright-core`
//! pinned in that folder's `package-lock.json` drives Debian's `chromium` against the real
//! binary. Screenshots go to `target/browser-screenshots/`.
//!
//! Also checks that the official client's browser bundle the binary serves is byte for byte
//! the one in the pinned npm package, so it cannot silently fall behind.
//!
//! Missing Node, npm or Chromium is a loud warning locally and a failure under CI.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../conformance-tests/tests/common/npm.rs"]
mod npm;

fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the browser suite needs {what}: refusing to skip under CI");
    }
    eprintln!("\n!!!!!!!!!! WARNING: the browser suite needs {what}; SKIPPED (this would fail under CI) !!!!!!!!!!\n");
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance-tests/browser")
}

/// Node and the pinned packages are there (installing them if needed); `false` when skipped.
fn node_ready() -> bool {
    let available = ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !available {
        missing("node and npm");
        return false;
    }
    npm::ensure_installed(&suite());
    true
}

fn locked_version(lockfile: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(lockfile).expect("the lockfile is readable");
    let lock: serde_json::Value = serde_json::from_str(&text).expect("the lockfile is JSON");
    lock["packages"][format!("node_modules/{package}")]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("{} pins no {package}", lockfile.display()))
        .to_owned()
}

#[test]
fn served_signalr_bundle_is_the_pinned_package() {
    let conformance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance-tests");
    // The UI and the Node conformance suite use one version of the official client.
    assert_eq!(
        locked_version(
            &conformance.join("browser/package-lock.json"),
            "@microsoft/signalr"
        ),
        locked_version(
            &conformance.join("node/package-lock.json"),
            "@microsoft/signalr"
        ),
    );
    if !node_ready() {
        return;
    }
    let pinned =
        std::fs::read(suite().join("node_modules/@microsoft/signalr/dist/browser/signalr.min.js"))
            .expect("the pinned package has its browser bundle");
    let served =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/vendor/signalr.min.js"))
            .expect("the committed bundle");
    assert!(
        pinned == served,
        "chat-app/static/vendor/signalr.min.js differs from the pinned @microsoft/signalr: copy \
         conformance-tests/browser/node_modules/@microsoft/signalr/dist/browser/signalr.min.js"
    );
}

#[test]
fn web_ui_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        return missing(&format!(
            "Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !node_ready() {
        return;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let workdir = tmp.join(format!("browser-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).unwrap();
    let screenshots = tmp
        .parent()
        .expect("the temporary directory is inside target/")
        .join("browser-screenshots");
    let status = Command::new("node")
        .args(["--test", "--test-reporter=spec", "ui.test.mjs"])
        .current_dir(suite())
        .env("CHAT_APP_BIN", env!("CARGO_BIN_EXE_chat-app"))
        .env("CHAT_WORKDIR", &workdir)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("node runs");
    let _ = std::fs::remove_dir_all(&workdir);
    assert!(
        status.success(),
        "the browser suite failed (see above; screenshots in {})",
        screenshots.display()
    );
}
