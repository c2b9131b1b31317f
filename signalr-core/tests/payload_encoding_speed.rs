//! How long the echo path's encoding takes per message, in both protocols: a received
//! argument (`Payload`) written back as a Completion result and as an Invocation argument,
//! and typed values written from scratch.
//!
//! Timing is only meaningful in an optimized build, so the measurement is ignored by default:
//! `cargo test --release -p signalr-core --test payload_encoding_speed -- --ignored --nocapture`.
//! It still checks every encoded record, so a wrong encoding fails it.

use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;
use signalr_core::protocol::{
    Completion, CompletionResult, Headers, InboundMessage, InputBuffer, Invocation, Message,
    NoValue, Payload, Protocol,
};

const ROUNDS: u32 = 100_000;

/// Decodes one client invocation record and returns its arguments.
fn received_arguments(protocol: Protocol, arguments: impl Serialize) -> Vec<Payload> {
    let record = protocol
        .encode_to_bytes(&Message::<_, NoValue>::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: Some("1".into()),
            target: "Echo".into(),
            arguments,
            stream_ids: vec![],
        }))
        .unwrap();
    let mut buf = InputBuffer::from(&record[..]);
    match protocol.decode(&mut buf, 1 << 20).unwrap() {
        Some(InboundMessage::Invocation(invocation)) => invocation.arguments.into_vec(),
        other => panic!("not an invocation: {other:?}"),
    }
}

fn completion<V: Serialize>(value: V) -> Message<NoValue, V> {
    Message::Completion(Completion {
        headers: Headers::new(),
        invocation_id: "1".into(),
        result: CompletionResult::Value(value),
    })
}

fn invocation<A: Serialize>(arguments: A) -> Message<A, NoValue> {
    Message::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: None,
        target: "Receive".into(),
        arguments,
        stream_ids: vec![],
    })
}

/// Batches of ROUNDS encodings; the fastest batch is reported (the machine is shared, so
/// slower batches measure other work).
const BATCHES: u32 = 7;

/// Runs `encode` in batches and prints the best mean; returns one encoded record.
fn measure(label: &str, mut encode: impl FnMut() -> bytes::Bytes) -> bytes::Bytes {
    let first = encode();
    let best = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                black_box(encode());
            }
            start.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
        })
        .fold(f64::INFINITY, f64::min);
    println!("{label:<58} {best:>8.1} ns/op");
    first
}

#[derive(Serialize, Clone)]
struct ChatMessage {
    user: String,
    text: String,
    sequence: u64,
    tags: Vec<String>,
}

#[test]
#[ignore = "a timing run: use --release -- --ignored --nocapture"]
fn echo_path_encoding_speed() {
    let text = "hello, a message of typical chat length";
    let typed = ChatMessage {
        user: "alice".into(),
        text: text.into(),
        sequence: 42,
        tags: vec!["a".into(), "b".into()],
    };
    for protocol in Protocol::ALL {
        let args = received_arguments(protocol, (text, 42));
        let echoed = measure(&format!("{protocol}: Completion(received string)"), || {
            protocol.encode_to_bytes(&completion(&args[0])).unwrap()
        });
        let direct = protocol.encode_to_bytes(&completion(text)).unwrap();
        assert_eq!(echoed, direct, "{protocol}: an echoed string is the string");

        let forwarded = measure(
            &format!("{protocol}: Invocation(received string, int)"),
            || protocol.encode_to_bytes(&invocation(&args)).unwrap(),
        );
        let direct = protocol.encode_to_bytes(&invocation((text, 42))).unwrap();
        assert_eq!(
            forwarded, direct,
            "{protocol}: forwarded arguments are the arguments"
        );

        measure(&format!("{protocol}: Invocation(typed struct)"), || {
            protocol.encode_to_bytes(&invocation((&typed,))).unwrap()
        });
    }
}
