//! What an operator sees: `GET /metrics` in the Prometheus text format, one log line per HTTP
//! request, and the `http.server.request.duration` histogram.
//!
//! Everything is recorded on the [`metrics`] facade: the hub's own metrics (signalr-core's and
//! signalr-redis's `metrics` features), the app's (`chat.db.*`, `chat.assistant.*`) and the
//! request histogram here. [`install_recorder`] puts the Prometheus exporter behind it once per
//! process, with OpenTelemetry's names turned into Prometheus's (dots become underscores,
//! counters end in `_total`, durations in `_seconds`). Without a recorder (metrics off) each
//! call is a no-op.
//!
//! Nothing recorded or logged carries a request's query string (SignalR clients put the access
//! token there for WebSockets and Server-Sent Events, and the connection token for the HTTP
//! transports), and metric labels come from fixed sets (route templates, known methods), so
//! no request can add series.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::trace::TraceLayer;

use crate::config::{MetricsAccess, Secret};
use crate::store::Store;
use crate::Service;

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (upper bounds, seconds) for request and invocation durations: OpenTelemetry's
/// default for HTTP servers, from 5 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Invocations mostly take a database round trip or less: from 0.5 ms.
const INVOCATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Connections last from a failed start (under a second) to a working day.
const CONNECTION_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0,
];
/// The wait of a message from Redis before local delivery: well under a millisecond when healthy.
const BACKPLANE_LAG_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// A language model's streamed reply: seconds to minutes.
const ASSISTANT_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// How often histogram samples are folded into their buckets between scrapes, so that memory
/// stays bounded when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's global recorder, the first time it is
/// called (later calls return the same handle), and starts its upkeep thread.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): this
            // handle then renders only what reaches it, which is nothing, and says so below.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows none of its metrics");
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded at each scrape only");
            }
            handle
        })
        .clone()
}

/// The exporter's settings: Prometheus naming, and buckets fitting each duration histogram.
fn builder() -> PrometheusBuilder {
    let overrides: [(&str, &[f64]); 5] = [
        ("http.server.request.duration", REQUEST_BUCKETS),
        ("signalr.server.invocation.duration", INVOCATION_BUCKETS),
        ("signalr.server.connection.duration", CONNECTION_BUCKETS),
        ("signalr.backplane.lag", BACKPLANE_LAG_BUCKETS),
        ("chat.assistant.duration", ASSISTANT_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets(REQUEST_BUCKETS)
        .expect("the bucket list is not empty");
    for (name, buckets) in overrides {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .expect("the bucket list is not empty");
    }
    builder
}

/// Units and help texts: the units give Prometheus names their `_seconds` suffix.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "http.server.request.duration",
        Unit::Seconds,
        "HTTP requests, until the response head (a WebSocket upgrade, an SSE stream's start)"
    );
    // The libraries describe their own metrics (units, help texts).
    signalr_core::describe_metrics();
    signalr_redis::describe_metrics();
    describe_gauge!("chat.db.pool.size", "Database connections open");
    describe_gauge!("chat.db.pool.idle", "Database connections open and idle");
    describe_gauge!(
        "chat.db.pool.max_size",
        "Most database connections the pool opens"
    );
    describe_counter!("chat.db.errors", "Failed database calls");
    describe_counter!(
        "chat.assistant.requests",
        "Assistant replies asked of the provider, by outcome"
    );
    describe_counter!(
        "chat.assistant.failures",
        "Assistant replies that failed, by reason"
    );
    describe_histogram!(
        "chat.assistant.duration",
        Unit::Seconds,
        "Assistant replies, from the request to the last chunk"
    );
    describe_gauge!(
        "chat.assistant.in_flight",
        "Assistant replies being generated"
    );
    describe_counter!(
        "chat.assistant.tokens",
        "Tokens the provider reported (type: input or output)"
    );
}

/// `GET /metrics`'s state: the exporter (absent when metrics are off), who may read it, and the
/// store whose pool is sampled at each scrape.
#[derive(Clone)]
pub struct MetricsEndpoint {
    handle: Option<PrometheusHandle>,
    token: Option<Secret>,
    store: Store,
}

impl MetricsEndpoint {
    /// Installs the recorder unless `access` is [`MetricsAccess::Off`].
    pub fn new(access: &MetricsAccess, store: Store) -> Self {
        let (handle, token) = match access {
            MetricsAccess::Off => (None, None),
            MetricsAccess::Open => (Some(install_recorder()), None),
            MetricsAccess::Token(token) => (Some(install_recorder()), Some(token.clone())),
        };
        MetricsEndpoint {
            handle,
            token,
            store,
        }
    }

    /// Whether `/metrics` is served at all.
    pub fn enabled(&self) -> bool {
        self.handle.is_some()
    }
}

impl FromRef<Service> for MetricsEndpoint {
    fn from_ref(service: &Service) -> MetricsEndpoint {
        service.metrics.clone()
    }
}

/// Equal secrets, compared in time that depends on the length only.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && std::hint::black_box(
            given
                .iter()
                .zip(expected)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b)),
        ) == 0
}

/// `GET /metrics`: the Prometheus text format, after sampling the database pool. 404 when
/// metrics are off (as any unknown path), 401 without the configured bearer token.
pub async fn metrics(State(endpoint): State<MetricsEndpoint>, headers: HeaderMap) -> Response {
    let Some(handle) = &endpoint.handle else {
        return crate::api::not_found().await.into_response();
    };
    if let Some(token) = &endpoint.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), token.expose().as_bytes()) {
            let mut refused = (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "A valid metrics token is required."})),
            )
                .into_response();
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return refused;
        }
    }
    let pool = endpoint.store.pool_stats();
    metrics::gauge!("chat.db.pool.size").set(pool.size);
    metrics::gauge!("chat.db.pool.idle").set(pool.idle);
    metrics::gauge!("chat.db.pool.max_size").set(pool.max);
    let mut response = handle.render().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The longest path a log line shows; longer ones are cut (a request line may be kilobytes).
const LOGGED_PATH_CHARS: usize = 200;

/// A request's path for a log line: never its query string, at most [`LOGGED_PATH_CHARS`].
pub fn logged_path(path: &str) -> String {
    match path.char_indices().nth(LOGGED_PATH_CHARS) {
        Some((cut, _)) => format!("{}...", &path[..cut]),
        None => path.to_owned(),
    }
}

/// The `http.request.method` label: the methods HTTP defines, and `_OTHER` for the rest (as
/// OpenTelemetry says), so that made-up methods add no series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The `http.route` label: the route template that matched (`/api/v1/rooms/{id}/messages`);
/// for a request to a nested service (axum gives those no [`MatchedPath`]), its mount point
/// from `nested`, with the hub's negotiate told apart from its transport requests; else
/// `_unmatched`.
fn route_label(matched: Option<&MatchedPath>, path: &str, nested: &[&'static str]) -> String {
    if let Some(matched) = matched {
        return matched.as_str().to_owned();
    }
    for mount in nested {
        match path.strip_prefix(mount) {
            Some("/negotiate") => return format!("{mount}/negotiate"),
            Some(rest) if rest.is_empty() || rest.starts_with('/') => return (*mount).to_owned(),
            _ => {}
        }
    }
    "_unmatched".to_owned()
}

/// Records `http.server.request.duration` (method, route template, status) for each request,
/// until its response head.
async fn record_request(nested: &[&'static str], request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(
        request.extensions().get::<MatchedPath>(),
        request.uri().path(),
        nested,
    );
    let response = next.run(request).await;
    metrics::histogram!(
        "http.server.request.duration",
        "http.request.method" => method,
        "http.route" => route,
        "http.response.status_code" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Wraps every route (the hub and the fallback included) in the request metric and the
/// request log: one `info` line per request when its response head is sent, with the method,
/// the path without its query, the status and the latency, inside a span of the first two so
/// that what handlers log carries them too. `nested` are the mount points of the router's
/// nested services (the hub), which label their requests.
pub fn instrument(router: Router, nested: &'static [&'static str]) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %logged_path(request.uri().path()),
            )
        })
        .on_request(())
        .on_response(
            |response: &Response, latency: Duration, _span: &tracing::Span| {
                tracing::info!(
                    status = response.status().as_u16(),
                    latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3,
                    "served"
                );
            },
        )
        // The status is on the response line already; a body cut midway (a client leaving a
        // stream) is no fault of the service.
        .on_failure(());
    router
        .layer(axum::middleware::from_fn(move |request, next| {
            record_request(nested, request, next)
        }))
        .layer(trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assistant::{measured, Failure, Kind, Reason};
    use futures_util::StreamExt;

    /// Runs `work` with a fresh Prometheus recorder of this module's settings on this thread,
    /// and returns what a scrape would show.
    fn rendered(work: impl FnOnce()) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            work();
        });
        handle.render()
    }

    #[test]
    fn names_follow_prometheus_and_each_duration_has_its_buckets() {
        let text = rendered(|| {
            metrics::histogram!("signalr.server.connection.duration", "signalr.transport" => "web_sockets", "signalr.connection.status" => "normal_closure").record(42.0);
            metrics::histogram!("http.server.request.duration", "http.route" => "/health")
                .record(0.003);
            metrics::counter!("signalr.server.invocations", "signalr.method" => "_unknown", "signalr.invocation.outcome" => "unknown_method").increment(1);
            metrics::counter!("signalr.server.bytes.sent", "signalr.transport" => "web_sockets")
                .increment(10);
            metrics::gauge!("signalr.server.active_connections", "signalr.transport" => "web_sockets").increment(2.0);
        });
        for line in [
            "signalr_server_connection_duration_seconds_bucket{signalr_transport=\"web_sockets\",signalr_connection_status=\"normal_closure\",le=\"60\"} 1",
            "signalr_server_connection_duration_seconds_bucket{signalr_transport=\"web_sockets\",signalr_connection_status=\"normal_closure\",le=\"30\"} 0",
            "signalr_server_connection_duration_seconds_count{signalr_transport=\"web_sockets\",signalr_connection_status=\"normal_closure\"} 1",
            "http_server_request_duration_seconds_bucket{http_route=\"/health\",le=\"0.005\"} 1",
            "signalr_server_invocations_total{signalr_method=\"_unknown\",signalr_invocation_outcome=\"unknown_method\"} 1",
            "signalr_server_bytes_sent_total{signalr_transport=\"web_sockets\"} 10",
            "signalr_server_active_connections{signalr_transport=\"web_sockets\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in:\n{text}");
        }
    }

    #[test]
    fn assistant_replies_count_by_outcome_reason_and_tokens() {
        let text = rendered(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let ok = futures_util::stream::iter([Ok("hi".to_owned())]).boxed();
                assert_eq!(measured(ok, Kind::Room).count().await, 1);
                let empty = futures_util::stream::iter([Ok("  ".to_owned())]).boxed();
                measured(empty, Kind::Room).count().await;
                let failed = futures_util::stream::iter([
                    Ok("a".to_owned()),
                    Err(Failure::new(Reason::Timeout, "slow")),
                ])
                .boxed();
                measured(failed, Kind::Stream).count().await;
                // Dropped after its first chunk: the client cancelled.
                let cancelled = futures_util::stream::iter([Ok("a".to_owned()), Ok("b".into())]);
                let mut cancelled = measured(cancelled.boxed(), Kind::Stream);
                cancelled.next().await;
                drop(cancelled);
                // A usage chunk after the text, as OpenAI sends it with include_usage.
                let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
                    "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
                )]);
                let deltas = crate::assistant::sse_deltas(body, Duration::from_secs(1));
                assert_eq!(deltas.count().await, 1);
            });
        });
        for line in [
            "chat_assistant_requests_total{kind=\"room\",outcome=\"ok\"} 1",
            "chat_assistant_requests_total{kind=\"room\",outcome=\"error\"} 1",
            "chat_assistant_failures_total{kind=\"room\",reason=\"empty\"} 1",
            "chat_assistant_requests_total{kind=\"stream\",outcome=\"error\"} 1",
            "chat_assistant_failures_total{kind=\"stream\",reason=\"timeout\"} 1",
            "chat_assistant_requests_total{kind=\"stream\",outcome=\"cancelled\"} 1",
            "chat_assistant_duration_seconds_count{kind=\"room\",outcome=\"ok\"} 1",
            "chat_assistant_in_flight 0",
            "chat_assistant_tokens_total{type=\"input\"} 12",
            "chat_assistant_tokens_total{type=\"output\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line} in:\n{text}"
            );
        }
    }

    #[test]
    fn labels_come_from_fixed_sets_and_paths_lose_their_query() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        let hub = &["/hubs/chat"];
        assert_eq!(route_label(None, "/a/b", hub), "_unmatched");
        assert_eq!(route_label(None, "/hubs/chat", hub), "/hubs/chat");
        assert_eq!(
            route_label(None, "/hubs/chat/negotiate", hub),
            "/hubs/chat/negotiate"
        );
        assert_eq!(route_label(None, "/hubs/chat/x/y", hub), "/hubs/chat");
        assert_eq!(route_label(None, "/hubs/chatty", hub), "_unmatched");
        assert_eq!(logged_path("/hubs/chat"), "/hubs/chat");
        let long = "é".repeat(300);
        let cut = logged_path(&long);
        assert_eq!(cut.chars().count(), LOGGED_PATH_CHARS + 3);
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem") && !same_secret(b"token", b"token2"));
    }
}
