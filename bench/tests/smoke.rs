//! The benchmark in smoke mode (about ten seconds): every scenario runs against both targets
//! and yields sane numbers. It asserts no speed, only that the measurement works.

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
    assert_eq!(scenarios.len(), 3);
    for scenario in scenarios {
        for target in ["ours", "raw"] {
            let results = scenario["results"][target]
                .as_object()
                .expect("results per target");
            assert!(!results.is_empty());
            for (metric, value) in results {
                let median = value["median"].as_f64().expect("a median");
                assert!(
                    median.is_finite() && median > 0.0,
                    "{} {target} {metric}: {median}",
                    scenario["scenario"]
                );
                assert!(value["min"].as_f64() <= value["max"].as_f64());
            }
        }
    }
}
