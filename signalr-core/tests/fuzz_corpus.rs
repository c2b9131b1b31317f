//! Replays the committed fuzz inputs on stable: every seed under `fuzz/corpus/<target>/` and
//! every crasher kept as a regression input under `fuzz/artifacts/<target>/` goes through the
//! same target body cargo-fuzz runs (`signalr_core::fuzzing`). `fuzz/run.sh` fuzzes for longer.

use std::path::{Path, PathBuf};

use signalr_core::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of one target's directory, in name order; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory").path())
        .filter(|path| path.is_file())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    let seeds = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(
        seeds.len() >= 5,
        "the seed corpus of {target} is missing ({} files)",
        seeds.len()
    );
    let crashers = inputs(&fuzz_dir().join("artifacts").join(target));
    let failures: Vec<String> = seeds
        .iter()
        .chain(&crashers)
        .filter_map(|path| {
            let data = std::fs::read(path).expect("a readable input");
            std::panic::catch_unwind(|| body(&data))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(failures.is_empty(), "{target} fails on {failures:#?}");
}

#[test]
fn handshake() {
    replay("handshake", fuzzing::handshake);
}

#[test]
fn json_decode() {
    replay("json_decode", fuzzing::json_decode);
}

#[cfg(feature = "msgpack")]
#[test]
fn msgpack_decode() {
    replay("msgpack_decode", fuzzing::msgpack_decode);
}

#[test]
fn json_roundtrip() {
    replay("json_roundtrip", fuzzing::json_roundtrip);
}

#[cfg(feature = "msgpack")]
#[test]
fn msgpack_roundtrip() {
    replay("msgpack_roundtrip", fuzzing::msgpack_roundtrip);
}

#[cfg(feature = "msgpack")]
#[test]
fn length_prefix() {
    replay("length_prefix", fuzzing::length_prefix);
}

#[test]
fn negotiate_query() {
    replay("negotiate_query", fuzzing::negotiate_query);
}

#[test]
fn stateful() {
    replay("stateful", fuzzing::stateful);
}

#[test]
fn websocket_frames() {
    replay("websocket_frames", fuzzing::websocket_frames);
}
