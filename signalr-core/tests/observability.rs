//! What an operator sees: the metrics the `metrics` feature records (ASP.NET Core's SignalR
//! meter names) and the spans and levels of the logs, following real connections through the
//! test kit on every transport.
//!
//! One recorder per process, so everything is one test, in steps.

use std::collections::HashMap;
use std::time::Duration;

use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use signalr_core::test_util::TestClient;
use signalr_core::{Hub, HubError, TransportKind};

mod common;
use common::Logs;

/// Everything recorded so far, by name and labels: the debugging recorder's snapshots are
/// deltas (each resets what it read), so values and histogram sample counts are summed.
struct Recorded {
    snapshotter: Snapshotter,
    histograms: HashMap<String, usize>,
    values: HashMap<String, f64>,
    /// Unit and help text of each metric name, as `describe_metrics` gave them.
    described: HashMap<String, (Option<Unit>, String)>,
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Recorded {
    fn take(&mut self) {
        for (composite, unit, help, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key_) = composite.into_parts();
            if let Some(help) = help {
                self.described
                    .insert(key_.name().to_owned(), (unit, help.to_string()));
            }
            let labels: Vec<(String, String)> = key_
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let name = key(key_.name(), &labels);
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    *self.values.entry(name).or_default() += n as f64;
                }
                (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                    *self.values.entry(name).or_default() += v.into_inner();
                }
                (MetricKind::Histogram, DebugValue::Histogram(samples)) => {
                    *self.histograms.entry(name).or_default() += samples.len();
                }
                _ => {}
            }
        }
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.take();
        self.values.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.take();
        self.histograms
            .get(&key(name, labels))
            .copied()
            .unwrap_or(0)
    }
}

async fn echo(value: String) -> String {
    tracing::info!(%value, "echoing");
    value
}

async fn fails() -> Result<(), HubError> {
    Err(HubError::internal("the database is gone"))
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_and_logs_follow_connections_and_invocations() {
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded {
        snapshotter: recorder.snapshotter(),
        histograms: HashMap::new(),
        values: HashMap::new(),
        described: HashMap::new(),
    };
    recorder
        .install()
        .expect("the only recorder of this test binary");
    signalr_core::describe_metrics();
    let logs = Logs::default();
    let _guard = logs.capture(tracing::Level::INFO);

    let hub = Hub::builder()
        .method("Echo", echo)
        .method("Fails", fails)
        .build();
    const ACTIVE: &str = "signalr.server.active_connections";
    const DURATION: &str = "signalr.server.connection.duration";

    for (transport, attribute) in [
        (TransportKind::WebSockets, "web_sockets"),
        (TransportKind::ServerSentEvents, "server_sent_events"),
        (TransportKind::LongPolling, "long_polling"),
    ] {
        let connect = || TestClient::builder().transport(transport).connect(&hub);
        let mut first = connect().await.unwrap();
        let second = connect().await.unwrap();
        settle().await;
        let by_transport = [("signalr.transport", attribute)];
        assert_eq!(recorded.value(ACTIVE, &by_transport), 2.0, "{attribute}");

        assert_eq!(
            first.invoke::<String>("Echo", ("hi",)).await.as_deref(),
            Ok("hi")
        );
        second.close().await;
        settle().await;
        assert_eq!(recorded.value(ACTIVE, &by_transport), 1.0, "{attribute}");
        let normal = [
            ("signalr.transport", attribute),
            ("signalr.connection.status", "normal_closure"),
        ];
        assert_eq!(recorded.samples(DURATION, &normal), 1, "{attribute}");
        assert!(recorded.value("signalr.server.messages.received", &by_transport) >= 1.0);
        assert!(recorded.value("signalr.server.bytes.sent", &by_transport) > 0.0);
        first.close().await;
        settle().await;
        assert_eq!(recorded.value(ACTIVE, &by_transport), 0.0, "{attribute}");
    }

    // Invocations by registered method and outcome; a name the client made up is one label.
    let mut client = TestClient::connect(&hub).await.unwrap();
    assert!(client.invoke::<String>("ECHO", ("case",)).await.is_ok());
    assert!(client.invoke::<()>("NoSuchMethod", ()).await.is_err());
    assert!(client.invoke::<()>("AnotherMadeUpName", ()).await.is_err());
    assert!(client.invoke::<()>("Fails", ()).await.is_err());
    settle().await;
    const INVOCATIONS: &str = "signalr.server.invocations";
    let outcome = |method, outcome| {
        [
            ("signalr.method", method),
            ("signalr.invocation.outcome", outcome),
        ]
    };
    assert_eq!(recorded.value(INVOCATIONS, &outcome("Echo", "ok")), 4.0);
    assert_eq!(
        recorded.value(INVOCATIONS, &outcome("_unknown", "unknown_method")),
        2.0
    );
    assert_eq!(recorded.value(INVOCATIONS, &outcome("Fails", "error")), 1.0);
    assert_eq!(
        recorded.samples(
            "signalr.server.invocation.duration",
            &outcome("Fails", "error")
        ),
        1
    );

    // A client that goes quiet is let go with the status "timeout".
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(client.closed().await.is_some());
    settle().await;
    let timed_out = [
        ("signalr.transport", "web_sockets"),
        ("signalr.connection.status", "timeout"),
    ];
    assert_eq!(recorded.samples(DURATION, &timed_out), 1);

    // A refused handshake is counted and logged at warn.
    let refused = TestClient::builder()
        .handshake_version(99)
        .connect(&hub)
        .await;
    assert!(refused.is_err());
    settle().await;
    assert_eq!(
        recorded.value(
            "signalr.server.handshake.refusals",
            &[("reason", "protocol")]
        ),
        1.0
    );

    // Logs: connect and disconnect at info, inside the connection's span; a method's own
    // event carries the connection and the invocation; an internal failure is an error.
    let connected = logs.lines(" connected");
    assert_eq!(connected.len(), 7, "{connected:#?}");
    assert!(connected
        .iter()
        .all(|l| l.contains("INFO") && l.contains("connection{id=")));
    let disconnected = logs.lines("disconnected");
    assert!(disconnected
        .iter()
        .any(|l| l.contains("status=\"timeout\"") || l.contains("status=timeout")));
    let echoing = logs.lines("echoing");
    assert!(!echoing.is_empty());
    assert!(echoing
        .iter()
        .all(|l| l.contains("connection{id=") && l.contains("invocation{method=")));
    let failed = logs.lines("hub method failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].contains("ERROR") && failed[0].contains("method=Fails"));
    let refusal = logs.lines("handshake refused");
    assert_eq!(refusal.len(), 1);
    assert!(refusal[0].contains("WARN") && refusal[0].contains("connection{id="));

    // Every metric that was recorded carries the help text `describe_metrics` gave it, and
    // the durations their unit (which gives Prometheus names their `_seconds` suffix).
    recorded.take();
    for name in [
        ACTIVE,
        DURATION,
        "signalr.server.invocations",
        "signalr.server.messages.sent",
    ] {
        assert!(
            recorded
                .described
                .get(name)
                .is_some_and(|(_, help)| !help.is_empty()),
            "{name} is not described: {:?}",
            recorded.described
        );
    }
    for name in [DURATION, "signalr.server.invocation.duration"] {
        assert_eq!(recorded.described[name].0, Some(Unit::Seconds), "{name}");
    }
}
