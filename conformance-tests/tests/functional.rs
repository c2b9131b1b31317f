//! Runs our functional suite (`conformance-tests/node/functional`): the official
//! `@microsoft/signalr` client against `functional-server`, the counterpart of the test app
//! behind Microsoft's own JavaScript-client functional tests.

mod common;

#[test]
fn official_js_client_functional() {
    common::run_node_suite(
        "functional/",
        "FUNCTIONAL_SERVER_BIN",
        env!("CARGO_BIN_EXE_functional-server"),
    );
}
