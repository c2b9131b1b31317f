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
    pub(crate) fn received(waited: Duration) {
        counter!("signalr.backplane.received").increment(1);
        histogram!("signalr.backplane.lag").record(waited.as_secs_f64());
    }
    pub(crate) fn dropped() {
        counter!("signalr.backplane.dropped").increment(1);
    }
    pub(crate) fn reconnected() {
        counter!("signalr.backplane.reconnects").increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod record {
    use super::Duration;

    pub(crate) fn published() {}
    pub(crate) fn publish_failed() {}
    pub(crate) fn received(_: Duration) {}
    pub(crate) fn dropped() {}
    pub(crate) fn reconnected() {}
}

pub(crate) use record::*;
