//! `npm ci` for a Node suite directory, safe when several tests ask at once.
//!
//! Test threads of one binary, and test binaries run side by side, may all find a suite's
//! packages missing. Two `npm ci` runs in one directory delete each other's files (CI failed on
//! `ENOENT ... node_modules/ws`), so callers take an exclusive lock on `.npm-ci.lock` beside the
//! lockfile, and the install records the lockfile it came from only after `npm ci` succeeded: an
//! interrupted or outdated install is redone, a finished one is not repeated.
//!
//! Used by `conformance-tests` (through `common`) and by `chat-app`'s tests (by path).

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

/// Where a finished install keeps a copy of the lockfile it installed.
const MARKER: &str = "node_modules/.installed-package-lock.json";

/// Makes sure `dir/node_modules` holds exactly what `dir/package-lock.json` pins, running
/// `npm ci` if it does not. Panics when npm fails.
pub fn ensure_installed(dir: &Path) {
    let lockfile = fs::read(dir.join("package-lock.json"))
        .unwrap_or_else(|e| panic!("{}/package-lock.json: {e}", dir.display()));
    let installed = || fs::read(dir.join(MARKER)).is_ok_and(|marker| marker == lockfile);
    if installed() {
        return;
    }
    let lock = File::create(dir.join(".npm-ci.lock"))
        .unwrap_or_else(|e| panic!("{}/.npm-ci.lock: {e}", dir.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {}/.npm-ci.lock: {e}", dir.display()));
    // Whoever held the lock before us may have installed everything meanwhile.
    if installed() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci failed in {}", dir.display());
    fs::write(dir.join(MARKER), &lockfile)
        .unwrap_or_else(|e| panic!("recording the install in {}: {e}", dir.display()));
    // The lock is released when `lock` is dropped.
}
