//! The backplane's metrics (the `metrics` feature), on the `metrics` facade: nothing is
//! recorded until the application installs a recorder, and without the feature nothing is
//! compiled. [`BackplaneStats`](crate::BackplaneStats) has the same counts without one.

use std::time::Duration;

#[cfg(feature = "metrics")]
mod record {
    use super::Duration;
    use metrics::{counter, histogram};

    pub(crate) fn published() {
        counter!("signalr.backplane.published").increment(1);
    }
    pub(crate) fn publish_failed() {
        counter!("signalr.backplane.publish_failures").increment(1);
    }
    pub(crate) fn received() {
        counter!("signalr.backplane.received").increment(1);
    }
    /// Every push from Redis, our own publications coming back included.
    pub(crate) fn waited(waited: Duration) {
        histogram!("signalr.backplane.lag").record(waited.as_secs_f64());
    }
    pub(crate) fn dropped() {
        counter!("signalr.backplane.dropped").increment(1);
    }
    pub(crate) fn reconnected() {
        counter!("signalr.backplane.reconnects").increment(1);
    }

    /// Gives the installed recorder every backplane metric's unit and help text.
    pub fn describe_metrics() {
        use metrics::{describe_counter, describe_histogram, Unit};
        describe_counter!("signalr.backplane.published", "Messages published to Redis");
        describe_counter!(
            "signalr.backplane.publish_failures",
            "Messages Redis did not take"
        );
        describe_counter!("signalr.backplane.received", "Messages received from Redis");
        describe_counter!(
            "signalr.backplane.dropped",
            "Received messages dropped because local delivery fell too far behind"
        );
        describe_counter!("signalr.backplane.reconnects", "Reconnections to Redis");
        describe_histogram!(
            "signalr.backplane.lag",
            Unit::Seconds,
            "How long a message from Redis waited before local delivery"
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod record {
    use super::Duration;

    pub(crate) fn published() {}
    pub(crate) fn publish_failed() {}
    pub(crate) fn received() {}
    pub(crate) fn waited(_: Duration) {}
    pub(crate) fn dropped() {}
    pub(crate) fn reconnected() {}
}

#[cfg(feature = "metrics")]
pub use record::describe_metrics;
pub(crate) use record::*;
