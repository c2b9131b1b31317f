//! The backplane's metrics (the `metrics` feature) follow real traffic through a real Redis:
//! a broadcast from one process is published there, and received, with its lag, in another.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`) with a channel prefix of its own.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use signalr_core::test_util::TestClient;
use signalr_core::Hub;
use signalr_redis::RedisBackplane;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test]
async fn publishes_receipts_and_lag_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    signalr_redis::describe_metrics();

    let url = redis_url();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("Metrics.{nonce:x}");
    let connect = || async {
        match RedisBackplane::builder(url.as_str(), prefix.as_str())
            .connect()
            .await
        {
            Ok(backplane) => Some(backplane),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("\n!!!!!!!!!! WARNING: no Redis at {url} ({e}); SKIPPED (this would fail under CI) !!!!!!!!!!\n");
                None
            }
            Err(e) => panic!("this test needs Redis at {url}: {e}"),
        }
    };
    let (Some(here), Some(there)) = (connect().await, connect().await) else {
        return;
    };
    let receiving = Hub::builder().backplane(here.clone()).build();
    let sending = Hub::builder().backplane(there.clone()).build();
    let mut client = TestClient::connect(&receiving).await.unwrap();

    // The receiving process must have subscribed before the broadcast: retry until it lands.
    let mut delivered = false;
    for n in 0..50u32 {
        sending
            .context()
            .clients()
            .all()
            .send("Tick", (n,))
            .await
            .unwrap();
        if let Ok(Some((target, _))) =
            tokio::time::timeout(Duration::from_millis(200), client.recv_invocation()).await
        {
            assert_eq!(target, "Tick");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "a broadcast from the other process arrived");

    let (mut published, mut received, mut lag_samples) = (0, 0, 0);
    let mut lag_unit = None;
    for (key, unit, help, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        // Each backplane metric carries the help text `describe_metrics` gave it (the hub's
        // own, recorded too when signalr-core's `metrics` feature is on, are described there).
        if key.name().starts_with("signalr.backplane.") {
            assert!(
                help.is_some_and(|h| !h.is_empty()),
                "{} is not described",
                key.name()
            );
        }
        if key.name() == "signalr.backplane.lag" {
            lag_unit = unit;
        }
        match (kind, key.name(), value) {
            (MetricKind::Counter, "signalr.backplane.published", DebugValue::Counter(n)) => {
                published += n
            }
            (MetricKind::Counter, "signalr.backplane.received", DebugValue::Counter(n)) => {
                received += n
            }
            (MetricKind::Histogram, "signalr.backplane.lag", DebugValue::Histogram(samples)) => {
                assert!(samples
                    .iter()
                    .all(|s| s.into_inner() >= 0.0 && s.into_inner() < 5.0));
                lag_samples += samples.len() as u64
            }
            _ => {}
        }
    }
    // What the recorder heard is what the backplanes counted: every publication, and every
    // message from the other process (the delivered one at least); every push, our own
    // publications coming back included, was timed.
    assert_eq!(published, here.stats().published + there.stats().published);
    assert!(published >= 1);
    assert_eq!(received, here.stats().received + there.stats().received);
    assert!(received >= 1);
    assert!(lag_samples >= received);
    assert_eq!(lag_unit, Some(metrics::Unit::Seconds));
}
