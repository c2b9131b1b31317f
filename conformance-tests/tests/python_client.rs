//! Runs `conformance-tests/python/test_pysignalr.py`: pysignalr, a SignalR client written
//! independently of Microsoft's, against `conformance-server`. Its packages are pinned in
//! `requirements.txt` and installed into a virtualenv under the target directory.
//!
//! Without Python 3 the suite cannot run: locally that is a loud warning, under CI (`CI` set) a
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// A virtualenv with the pinned requirements, rebuilt when `requirements.txt` changes.
fn virtualenv(python: &str, suite: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pysignalr-venv");
    let requirements =
        std::fs::read_to_string(suite.join("requirements.txt")).expect("requirements.txt");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python -m venv runs");
    assert!(
        status.success(),
        "could not create a virtualenv at {}",
        venv.display()
    );
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(suite.join("requirements.txt"))
        .status()
        .expect("pip runs");
    assert!(status.success(), "pip install -r requirements.txt failed");
    std::fs::write(&stamp, requirements).expect("stamp written");
    venv
}

#[test]
fn pysignalr_client_conformance() {
    let Some(python) = python() else {
        common::skip_or_fail("the Python conformance suite needs python3 on PATH");
        return;
    };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let venv = virtualenv(python, &suite);
    let status = Command::new(venv.join("bin/python"))
        .arg(suite.join("test_pysignalr.py"))
        .env(
            "SIGNALR_SERVER_BIN",
            env!("CARGO_BIN_EXE_conformance-server"),
        )
        .status()
        .expect("python runs");
    assert!(
        status.success(),
        "the pysignalr conformance suite failed (see its output above)"
    );
}
