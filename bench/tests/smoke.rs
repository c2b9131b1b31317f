//! The benchmark in smoke mode (well under a minute; peers run only when installed): every
//! scenario runs against our hub and the raw baseline and yields sane numbers. It asserts no
//! speed, only that each measurement works.

use std::process::Command;

#[test]
fn every_scenario_runs_and_reports_sane_numbers() {
    let output = Command::new(env!("CARGO_BIN_EXE_signalr-bench"))
        .args(["run", "--smoke", "--json"])
        .output()
        .expect("the benchmark runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    for expected in [
        "closed loop, json, WebSockets",
        "closed loop, messagepack, WebSockets",
        "long polling",
        "open loop",
        "broadcast",
        "small groups",
        "idle WebSocket connections",
        "connection storm",
    ] {
        assert!(
            names.iter().any(|name| name.contains(expected)),
            "no {expected:?} scenario in {names:?}"
        );
    }
    for scenario in scenarios {
        let name = scenario["scenario"].as_str().unwrap_or_default();
        let primary = scenario["primary"].as_str().unwrap_or_default();
        for target in ["ours", "raw"] {
            let results = scenario["results"][target].as_object().unwrap_or_else(|| {
                panic!("{name}: no results for {target}: {}", scenario["skipped"])
            });
            assert!(!results.is_empty(), "{name}: {target} reported nothing");
            for (metric, value) in results {
                let (median, min, max) = (
                    value["median"].as_f64().expect("a median"),
                    value["min"].as_f64().expect("a minimum"),
                    value["max"].as_f64().expect("a maximum"),
                );
                assert!(
                    median.is_finite() && median >= 0.0 && min <= median && median <= max,
                    "{name} {target} {metric}: {value}"
                );
                // Counts of errors may be zero, and so may CPU time: /proc counts it in 10 ms
                // ticks, and a smoke window can cost a fast server less than one. Everything
                // else measured must be positive.
                if metric != "errors" && !metric.contains("cpu") {
                    assert!(median > 0.0, "{name} {target} {metric}: {median}");
                }
            }
            if !primary.is_empty() {
                assert!(
                    results[primary]["median"].as_f64() > Some(0.0),
                    "{name} {target}: no {primary}"
                );
            }
            if name.contains("connection storm") {
                let errors = results["errors"]["median"].as_f64();
                assert!(errors.is_some(), "{name} {target}: errors are counted");
            }
        }
    }
}
