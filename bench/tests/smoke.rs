//! The benchmark in smoke mode (well under a minute; peers run only when installed): every
//! scenario runs against our hub and the raw baseline and yields sane numbers. It asserts no
//! speed, only that each measurement works.

use std::process::Command;

/// Runs the benchmark with `args`, which must succeed, and reads its JSON report.
fn report_of(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_signalr-bench"))
        .args(args)
        .output()
        .expect("the benchmark runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

#[test]
fn every_scenario_runs_and_reports_sane_numbers() {
    let report = report_of(&["run", "--smoke", "--json"]);
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
        // socketioxide is served by the benchmark itself, so it is never skipped where it
        // applies: the JSON WebSocket scenarios.
        if name.contains("json, WebSockets") || name.contains("broadcast") {
            let primary_figure = &scenario["results"]["socketioxide"][primary]["median"];
            assert!(
                primary_figure.as_f64() > Some(0.0),
                "{name}: socketioxide: {}",
                scenario["skipped"]
            );
        }
    }
}

/// `attack` with tiny sizes (a few seconds): every figure is present and sane. Asserts no speed.
#[test]
fn attack_reports_receive_cost_and_probe_latency() {
    let report = report_of(&["attack", "--smoke", "--json"]);
    let receive = report["receive"].as_array().expect("receive costs");
    let protocols: Vec<&str> = receive
        .iter()
        .filter_map(|r| r["protocol"].as_str())
        .collect();
    assert_eq!(
        protocols,
        ["json", "messagepack", "raw records (the floor)"]
    );
    for row in receive {
        assert!(row["record_bytes"].as_u64() > Some(1_000), "{row}");
        for framing in ["one_message", "one_byte_messages"] {
            let cost = &row[framing];
            assert!(cost["records"].as_u64() >= Some(1), "{framing}: {cost}");
            let cpu = cost["server_cpu_seconds"].as_f64().expect("CPU seconds");
            assert!(cpu.is_finite() && cpu >= 0.0, "{framing}: {cost}");
        }
        // The ratio is left out only when the one-message side stayed under one /proc tick.
        assert!(
            row["ratio"].is_null() || row["ratio"].as_f64() > Some(0.0),
            "{row}"
        );
    }
    let phases = report["fairness"]["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3, "baseline, JSON and MessagePack attackers");
    assert_eq!(phases[0]["attackers"], 0);
    for phase in phases {
        let ms = |key: &str| phase[key].as_f64().expect(key);
        assert!(phase["probe_answered"].as_u64() > Some(0), "{phase}");
        assert!(
            0.0 < ms("p50_ms") && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"),
            "{phase}"
        );
        if phase["attackers"].as_u64() > Some(0) {
            assert!(phase["attacker_connections"].as_u64() > Some(0), "{phase}");
            assert!(ms("attacker_bytes_per_second") > 0.0, "{phase}");
        }
    }
}

/// `ir` on one scenario (about 10 s under callgrind): every target yields a positive cost per
/// echo from two runs of different length, and the report has the shape documented in
/// BENCHMARKS.md. Asserts no speed.
#[test]
fn instruction_counts_come_from_two_runs_under_callgrind() {
    let report = report_of(&["ir", "--json", "--only", "echo json"]);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 1, "{report}");
    let scenario = &scenarios[0];
    assert_eq!(scenario["scenario"], "echo json");
    for target in ["ours", "raw", "socketioxide"] {
        let result = &scenario["results"][target];
        let ir = result["ir_per_message"].as_f64().expect("instructions");
        let allocs = result["allocs_per_message"].as_f64().expect("allocations");
        assert!(ir > 100.0 && allocs >= 0.0, "{target}: {result}");
        let runs = &result["runs"];
        assert!(
            runs["long"]["instructions"].as_u64() > runs["short"]["instructions"].as_u64(),
            "{target}: {runs}"
        );
    }
    assert!(
        scenario["ratios"]["ours/raw"].as_f64() > Some(0.0),
        "{scenario}"
    );
    assert!(
        scenario["ratios"]["ours/socketioxide"].as_f64() > Some(0.0),
        "{scenario}"
    );
}

/// `scale` with a few hundred connections over two server processes joined by the Redis
/// backplane (`REDIS_URL`) and two generators with their own source addresses: every
/// connection opens, and every broadcast reaches every connection, whichever process holds it.
#[test]
fn scale_reaches_every_connection_across_processes() {
    let report = report_of(&["scale", "--smoke", "--json"]);
    assert_eq!(report["server_processes"], 2, "{report}");
    assert_eq!(report["connections_opened"], 400, "{report}");
    assert_eq!(report["connections_failed"], 0, "{report}");
    assert_eq!(report["connections_lost_before_report"], 0, "{report}");
    assert_eq!(report["deliveries_expected"], 800, "{report}");
    assert_eq!(report["deliveries"], 800, "{report}");
    let p99 = report["latency_p99_ms"].as_f64().expect("p99");
    assert!(
        p99 > 0.0 && p99 <= report["latency_max_ms"].as_f64().unwrap(),
        "{report}"
    );
    let per_process = report["server_rss_kib_per_process"]
        .as_array()
        .expect("RSS");
    assert_eq!(per_process.len(), 2);
    assert!(
        report["server_rss_bytes_per_connection"].as_f64() > Some(0.0),
        "{report}"
    );
}
