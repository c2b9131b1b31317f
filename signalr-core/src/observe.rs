//! What the operator sees: metrics (the `metrics` feature) and the names logs and spans use.
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade, so the application
//! picks the exporter (Prometheus, OpenTelemetry, StatsD) by installing a recorder; without
//! one every call below is a load of the global recorder and nothing else, and without the
//! feature they compile to nothing. Names and attributes follow ASP.NET Core's SignalR meter
//! (OpenTelemetry's semantic conventions) where it has one; the rest extend it in kind.
//!
//! Counts that happen per message are recorded per batch (one read of the socket, one write),
//! never per message, and a method is labelled only by a name the hub registered, never by
//! the name a client sent, so a hostile client cannot grow the recorder's label set.

use std::time::Duration;

use crate::transport::TransportKind;

/// The connection ended normally: the client closed, or the transport went away.
pub(crate) const STATUS_NORMAL: &str = "normal_closure";
/// The connection ended because the client timed out (no message within the client timeout,
/// no handshake in time, a long-polling client that stopped polling).
pub(crate) const STATUS_TIMEOUT: &str = "timeout";
/// The connection ended because the server shut down.
pub(crate) const STATUS_SHUTDOWN: &str = "app_shutdown";

/// An invocation's outcome, the `signalr.invocation.outcome` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The method returned an error (a `HubError`), or a stream ended with one.
    Error,
    UnknownMethod,
    Unauthorized,
    /// The arguments did not bind to the method's parameters.
    BindError,
    Panic,
}

impl Outcome {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::UnknownMethod => "unknown_method",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BindError => "bind_error",
            Outcome::Panic => "panic",
        }
    }
}

/// The `signalr.transport` attribute: OpenTelemetry's values.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn transport_attribute(transport: TransportKind) -> &'static str {
    match transport {
        TransportKind::WebSockets => "web_sockets",
        TransportKind::ServerSentEvents => "server_sent_events",
        TransportKind::LongPolling => "long_polling",
    }
}

/// When an invocation started, for its duration metric. Without the `metrics` feature it holds
/// nothing and reads no clock: two clock reads per invocation that nothing would record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(#[cfg(feature = "metrics")] tokio::time::Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch(
            #[cfg(feature = "metrics")]
            tokio::time::Instant::now(),
        )
    }

    /// The time since `start` (zero without the `metrics` feature, where nothing reads it).
    pub(crate) fn elapsed(self) -> Duration {
        #[cfg(feature = "metrics")]
        return self.0.elapsed();
        #[cfg(not(feature = "metrics"))]
        Duration::ZERO
    }
}

/// The method label for an invocation: registered names only.
pub(crate) const UNKNOWN_METHOD: &str = "_unknown";

#[cfg(feature = "metrics")]
mod record {
    use super::*;
    use metrics::{counter, gauge, histogram};

    const TRANSPORT: &str = "signalr.transport";

    pub(crate) fn connection_opened(transport: TransportKind) {
        gauge!("signalr.server.active_connections", TRANSPORT => transport_attribute(transport))
            .increment(1.0);
    }

    pub(crate) fn connection_closed(
        transport: TransportKind,
        status: &'static str,
        lasted: Duration,
    ) {
        let transport = transport_attribute(transport);
        gauge!("signalr.server.active_connections", TRANSPORT => transport).decrement(1.0);
        histogram!(
            "signalr.server.connection.duration",
            TRANSPORT => transport,
            "signalr.connection.status" => status
        )
        .record(lasted.as_secs_f64());
    }

    pub(crate) fn received(transport: TransportKind, messages: u64, bytes: u64) {
        let transport = transport_attribute(transport);
        if messages > 0 {
            counter!("signalr.server.messages.received", TRANSPORT => transport)
                .increment(messages);
        }
        if bytes > 0 {
            counter!("signalr.server.bytes.received", TRANSPORT => transport).increment(bytes);
        }
    }

    pub(crate) fn sent(transport: TransportKind, messages: u64, bytes: u64) {
        let transport = transport_attribute(transport);
        counter!("signalr.server.messages.sent", TRANSPORT => transport).increment(messages);
        counter!("signalr.server.bytes.sent", TRANSPORT => transport).increment(bytes);
    }

    pub(crate) fn invocation(method: &str, outcome: Outcome, lasted: Option<Duration>) {
        let method = method.to_owned();
        let outcome = outcome.as_str();
        counter!(
            "signalr.server.invocations",
            "signalr.method" => method.clone(),
            "signalr.invocation.outcome" => outcome
        )
        .increment(1);
        if let Some(lasted) = lasted {
            histogram!(
                "signalr.server.invocation.duration",
                "signalr.method" => method,
                "signalr.invocation.outcome" => outcome
            )
            .record(lasted.as_secs_f64());
        }
    }

    pub(crate) fn slow_client_closed(transport: TransportKind) {
        counter!("signalr.server.slow_client_closes", TRANSPORT => transport_attribute(transport))
            .increment(1);
    }

    pub(crate) fn handshake_refused(reason: &'static str) {
        counter!("signalr.server.handshake.refusals", "reason" => reason).increment(1);
    }

    pub(crate) fn authentication_refused(status: u16) {
        let status = match status {
            401 => "401",
            403 => "403",
            _ => "other",
        };
        counter!("signalr.server.authentication.refusals", "http.response.status_code" => status)
            .increment(1);
    }

    pub(crate) fn long_poll() {
        counter!("signalr.server.long_polls").increment(1);
    }

    pub(crate) fn sse_stream() {
        counter!("signalr.server.sse_streams").increment(1);
    }

    /// Gives the installed recorder every metric's unit and help text.
    pub fn describe_metrics() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_gauge!(
            "signalr.server.active_connections",
            "Hub connections open on this process"
        );
        describe_histogram!(
            "signalr.server.connection.duration",
            Unit::Seconds,
            "How long hub connections lasted"
        );
        describe_counter!("signalr.server.invocations", "Hub method invocations");
        describe_histogram!(
            "signalr.server.invocation.duration",
            Unit::Seconds,
            "Hub method invocations"
        );
        describe_counter!("signalr.server.messages.received", "Hub messages received");
        describe_counter!("signalr.server.messages.sent", "Hub messages sent");
        describe_counter!(
            "signalr.server.bytes.received",
            "Hub payload bytes received"
        );
        describe_counter!("signalr.server.bytes.sent", "Hub payload bytes sent");
        describe_counter!(
            "signalr.server.slow_client_closes",
            "Connections closed because the client read too slowly"
        );
        describe_counter!(
            "signalr.server.handshake.refusals",
            "Handshakes refused, by reason"
        );
        describe_counter!(
            "signalr.server.authentication.refusals",
            "Requests refused by authentication, by HTTP status"
        );
        describe_counter!("signalr.server.long_polls", "Long-polling requests");
        describe_counter!(
            "signalr.server.sse_streams",
            "Server-Sent Events streams opened"
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod record {
    use super::*;

    pub(crate) fn connection_opened(_: TransportKind) {}
    pub(crate) fn connection_closed(_: TransportKind, _: &'static str, _: Duration) {}
    pub(crate) fn received(_: TransportKind, _: u64, _: u64) {}
    pub(crate) fn sent(_: TransportKind, _: u64, _: u64) {}
    pub(crate) fn invocation(_: &str, _: Outcome, _: Option<Duration>) {}
    pub(crate) fn slow_client_closed(_: TransportKind) {}
    pub(crate) fn handshake_refused(_: &'static str) {}
    pub(crate) fn authentication_refused(_: u16) {}
    pub(crate) fn long_poll() {}
    pub(crate) fn sse_stream() {}
}

#[cfg(feature = "metrics")]
pub use record::describe_metrics;
pub(crate) use record::*;
