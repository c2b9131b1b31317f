//! Runs the Node.js conformance suite (`conformance-tests/node/test`): the official
//! `@microsoft/signalr` client, pinned in `package-lock.json`, against `conformance-server`.

mod common;

#[test]
fn official_js_client_conformance() {
    common::run_node_suite(
        "test/",
        "SIGNALR_SERVER_BIN",
        env!("CARGO_BIN_EXE_conformance-server"),
    );
}
