//! Replays the committed fuzz inputs of the backplane payload target on stable: every seed
//! under `fuzz/corpus/redis_payloads/` and every crasher kept under
//! `fuzz/artifacts/redis_payloads/` goes through `signalr_redis::fuzzing::payloads`, the body
//! cargo-fuzz runs.

use std::path::{Path, PathBuf};

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

#[test]
fn redis_payloads() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = inputs(&fuzz.join("corpus/redis_payloads"));
    assert!(
        seeds.len() >= 5,
        "the seed corpus is missing ({} files)",
        seeds.len()
    );
    let crashers = inputs(&fuzz.join("artifacts/redis_payloads"));
    let failures: Vec<String> = seeds
        .iter()
        .chain(&crashers)
        .filter_map(|path| {
            let data = std::fs::read(path).expect("a readable input");
            std::panic::catch_unwind(|| signalr_redis::fuzzing::payloads(&data))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(failures.is_empty(), "redis_payloads fails on {failures:#?}");
}
