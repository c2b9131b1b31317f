//! One hub at several paths, each with its own transports: one registry, one HubContext.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use signalr_core::{EndpointOptions, Hub, TransportKind};
use tower::ServiceExt;

async fn call(service: signalr_core::HubService, method: &str, uri: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn offered(body: &str) -> Vec<String> {
    let negotiated: serde_json::Value = serde_json::from_str(body).unwrap();
    negotiated["availableTransports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transport"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_endpoint_offers_and_serves_its_own_transports() {
    let hub = Hub::builder().build();
    let everything = hub.service();
    let without_websockets = hub.service_with(
        EndpointOptions::new()
            .transports([TransportKind::ServerSentEvents, TransportKind::LongPolling]),
    );
    let (_, body) = call(everything.clone(), "POST", "/negotiate?negotiateVersion=1").await;
    assert_eq!(
        offered(&body),
        ["WebSockets", "ServerSentEvents", "LongPolling"]
    );
    let (status, body) = call(
        without_websockets.clone(),
        "POST",
        "/negotiate?negotiateVersion=1",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(offered(&body), ["ServerSentEvents", "LongPolling"]);

    // A WebSocket request at the endpoint without WebSockets: the reference's 404.
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["connectionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = http::Request::builder()
        .uri(format!("/?id={token}"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = without_websockets.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 404);
    // Long polling is served there, and the connection is the hub's (one registry).
    assert_eq!(
        call(without_websockets.clone(), "GET", &format!("/?id={token}"))
            .await
            .0,
        200
    );
    let (status, _) = call(without_websockets, "DELETE", &format!("/?id={token}")).await;
    assert_eq!(status, 202);
}

#[test]
#[should_panic(expected = "an endpoint needs at least one transport")]
fn an_endpoint_without_transports_is_refused() {
    let _ = EndpointOptions::new().transports([]);
}
