//! Byte-exact tests of the MessagePack hub protocol, through the public protocol API.

mod common;

use common::{decode_all_ways, encode};
use serde::{Deserialize, Serialize};
use signalr_core::protocol::{
    CancelInvocation, Close, Completion, CompletionResult, Headers, InputBuffer, Invocation,
    Message, NoValue, Protocol, ProtocolError, StreamItem,
};

const P: Protocol = Protocol::MessagePack;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn completion<V>(id: &str, result: CompletionResult<V>) -> Message<NoValue, V> {
    Message::Completion(Completion {
        headers: Headers::new(),
        invocation_id: id.into(),
        result,
    })
}

#[test]
fn encodes_every_message_type_byte_exact() {
    let mut with_headers = Headers::new();
    with_headers.insert("k".into(), "v".into());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // [1, {}, nil, "Target", ["a", 1], []]: six items, as the reference server writes.
        (
            encode(
                P,
                &Message::<_, NoValue>::Invocation(Invocation {
                    headers: Headers::new(),
                    invocation_id: None,
                    target: "Target".into(),
                    arguments: ("a", 1),
                    stream_ids: vec![],
                }),
            ),
            "10 96 01 80 c0 a6 54 61 72 67 65 74 92 a1 61 01 90",
        ),
        (
            encode(
                P,
                &Message::<_, NoValue>::Invocation(Invocation {
                    headers: with_headers,
                    invocation_id: Some("1".into()),
                    target: "M".into(),
                    arguments: [(); 0],
                    stream_ids: vec!["7".into()],
                }),
            ),
            "0f 96 01 81 a1 6b a1 76 a1 31 a1 4d 90 91 a1 37",
        ),
        (
            encode(
                P,
                &Message::<NoValue, _>::StreamItem(StreamItem {
                    headers: Headers::new(),
                    invocation_id: "1".into(),
                    item: "x",
                }),
            ),
            "07 94 02 80 a1 31 a1 78",
        ),
        (
            encode(P, &completion("1", CompletionResult::Value(42))),
            "07 95 03 80 a1 31 03 2a",
        ),
        // A void hub method: result kind 3 with nil, like the reference.
        (
            encode(P, &completion("1", CompletionResult::Value(()))),
            "07 95 03 80 a1 31 03 c0",
        ),
        (
            encode(P, &completion::<NoValue>("1", CompletionResult::Void)),
            "06 94 03 80 a1 31 02",
        ),
        (
            encode(
                P,
                &completion::<NoValue>("1", CompletionResult::Error("boom".into())),
            ),
            "0b 95 03 80 a1 31 01 a4 62 6f 6f 6d",
        ),
        (
            encode(
                P,
                &Message::<_, NoValue>::StreamInvocation(Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("2".into()),
                    target: "Counter".into(),
                    arguments: (10,),
                    stream_ids: vec![],
                }),
            ),
            "10 96 04 80 a1 32 a7 43 6f 75 6e 74 65 72 91 0a 90",
        ),
        (
            encode(
                P,
                &Message::<NoValue, NoValue>::CancelInvocation(CancelInvocation {
                    headers: Headers::new(),
                    invocation_id: "2".into(),
                }),
            ),
            "05 93 05 80 a1 32",
        ),
        (encode(P, &Message::<NoValue, NoValue>::Ping), "02 91 06"),
        (
            encode(P, &Message::<NoValue, NoValue>::Close(Close::default())),
            "04 93 07 c0 c2",
        ),
        (
            encode(
                P,
                &Message::<NoValue, NoValue>::Close(Close {
                    error: Some("x".into()),
                    allow_reconnect: true,
                }),
            ),
            "05 93 07 a1 78 c3",
        ),
        (
            encode(P, &Message::<NoValue, NoValue>::Ack(5)),
            "03 92 08 05",
        ),
        (
            encode(P, &Message::<NoValue, NoValue>::Sequence(300)),
            "05 92 09 cd 01 2c",
        ),
    ];
    for (actual, expected) in cases {
        assert_eq!(hex(&actual), expected);
    }
    assert_eq!(P.ping_record().to_vec(), unhex("02 91 06"));
}

#[test]
fn length_prefix_is_a_varint() {
    // A 200-byte string argument makes a body over 127 bytes: two prefix bytes.
    let long = "x".repeat(200);
    let bytes = encode(P, &completion("1", CompletionResult::Value(long.as_str())));
    let body_len = bytes.len() - 2;
    assert_eq!(bytes[0], (body_len as u8 & 0x7f) | 0x80);
    assert_eq!(bytes[1], (body_len >> 7) as u8);
    let decoded = decode_all_ways(P, &bytes);
    let Message::Completion(c) = &decoded[0] else {
        panic!()
    };
    let CompletionResult::Value(v) = &c.result else {
        panic!()
    };
    assert_eq!(v.deserialize::<String>().unwrap(), long);
}

#[test]
fn decodes_what_clients_send() {
    let input = [
        // JS client Invocation: five items (no stream id array).
        "0c 95 01 80 a1 30 a3 41 64 64 92 01 02",
        // Non-blocking, with headers, stream ids present.
        "0e 96 01 81 a1 6b a1 76 c0 a1 4d 90 91 a1 37",
        // StreamItem with a binary item.
        "09 94 02 80 a1 35 c4 02 01 02",
        // Completions: value, nil value, error, void.
        "07 95 03 80 a1 31 03 2a",
        "07 95 03 80 a1 31 03 c0",
        "0b 95 03 80 a1 31 01 a4 62 6f 6f 6d",
        "06 94 03 80 a1 31 02",
        // StreamInvocation, CancelInvocation, Ping.
        "10 96 04 80 a1 32 a7 43 6f 75 6e 74 65 72 91 0a 90",
        "05 93 05 80 a1 32",
        "02 91 06",
        // Close as the JS client writes it (two items) and with allowReconnect.
        "03 92 07 c0",
        "05 93 07 a1 78 c3",
        // Ack and Sequence with wider integer encodings.
        "04 92 08 cc 05",
        "07 92 09 ce 00 00 01 2c",
        // Extra trailing items are ignored.
        "04 93 06 01 02",
    ]
    .join(" ");
    let messages = decode_all_ways(P, &unhex(&input));
    assert_eq!(messages.len(), 15);

    let Message::Invocation(add) = &messages[0] else {
        panic!("{:?}", messages[0])
    };
    assert_eq!(add.invocation_id.as_deref(), Some("0"));
    assert_eq!(add.target, "Add");
    assert!(add.stream_ids.is_empty());
    let args: Vec<i64> = add
        .arguments
        .iter()
        .map(|p| p.deserialize().unwrap())
        .collect();
    assert_eq!(args, [1, 2]);

    let Message::Invocation(send) = &messages[1] else {
        panic!()
    };
    assert_eq!(send.invocation_id, None);
    assert_eq!(send.headers.get("k").map(String::as_str), Some("v"));
    assert_eq!(send.stream_ids, ["7"]);

    let Message::StreamItem(item) = &messages[2] else {
        panic!()
    };
    let bin: serde_bytes::ByteBuf = item.item.deserialize().unwrap();
    assert_eq!(bin.as_ref(), [1, 2]);

    let results: Vec<&CompletionResult<_>> = messages[3..7]
        .iter()
        .map(|m| match m {
            Message::Completion(c) => &c.result,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        matches!(results[0], CompletionResult::Value(v) if v.deserialize::<i32>().unwrap() == 42)
    );
    assert!(
        matches!(results[1], CompletionResult::Value(v) if v.as_msgpack() == Some(&[0xc0][..]))
    );
    assert_eq!(*results[2], CompletionResult::Error("boom".into()));
    assert_eq!(*results[3], CompletionResult::Void);

    assert!(matches!(&messages[7], Message::StreamInvocation(s) if s.target == "Counter"));
    assert!(matches!(&messages[8], Message::CancelInvocation(c) if c.invocation_id == "2"));
    assert_eq!(messages[9], Message::Ping);
    assert_eq!(messages[10], Message::Close(Close::default()));
    assert_eq!(
        messages[11],
        Message::Close(Close {
            error: Some("x".into()),
            allow_reconnect: true
        })
    );
    assert_eq!(messages[12], Message::Ack(5));
    assert_eq!(messages[13], Message::Sequence(300));
    assert_eq!(messages[14], Message::Ping);
}

#[test]
fn unknown_types_are_skipped_and_empty_ids_mean_non_blocking() {
    // [99, "anything"] then an Invocation whose id is the empty string.
    let input = unhex("0b 92 63 a8 61 6e 79 74 68 69 6e 67 08 95 01 80 a0 a1 54 90 90");
    let messages = decode_all_ways(P, &input);
    assert_eq!(messages.len(), 1);
    assert!(matches!(&messages[0], Message::Invocation(i) if i.invocation_id.is_none()));
}

#[test]
fn hostile_input_is_an_error_not_a_panic_or_a_wait() {
    let cases: &[(&str, &str)] = &[
        // A fifth prefix byte above 7 announces more than 2 GB.
        ("ff ff ff ff 0f", "Messages over 2GB"),
        ("ff ff ff ff ff", "Messages over 2GB"),
        ("00", "empty record"),
        ("01 90", "empty array"),
        // An array that claims a million elements in a 5-byte body.
        ("05 dd 00 0f 42 40", "Unexpected end"),
        ("03 92 01 80", "Invalid payload for Invocation"),
        ("06 94 03 80 a1 31 07", "Invalid invocation result kind."),
        ("04 93 07 c0 01", "expected a boolean"),
        ("03 92 08 ff", "must not be negative"),
        ("04 93 a1 31 01", "expected an integer"),
        ("06 95 01 80 c0 01 90", "expected a string"),
        ("08 95 01 80 c0 a2 ff fe 90", "Invalid UTF-8"),
        ("07 95 04 80 c0 a1 54 90", "Missing invocation id"),
        ("08 95 01 80 c0 a1 54 91 c1", "marker 0xc1"),
    ];
    for (input, expected) in cases {
        let mut buf = InputBuffer::from(&unhex(input)[..]);
        match P.decode(&mut buf, 1 << 20) {
            Err(ProtocolError::Invalid(message)) => {
                assert!(message.contains(expected), "{input}: got {message:?}")
            }
            other => panic!("{input}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn oversized_record_is_refused_from_its_prefix_alone() {
    // The prefix says 1,000,000 bytes; nothing of the body has arrived.
    let mut buf = InputBuffer::from(&unhex("c0 84 3d")[..]);
    assert_eq!(
        P.decode(&mut buf, 32 * 1024),
        Err(ProtocolError::MessageTooLarge { limit: 32 * 1024 })
    );
    // An incomplete prefix or body just waits.
    let mut buf = InputBuffer::from(&unhex("80")[..]);
    assert_eq!(P.decode(&mut buf, 32 * 1024), Ok(None));
    let mut buf = InputBuffer::from(&unhex("05 93 07")[..]);
    assert_eq!(P.decode(&mut buf, 32 * 1024), Ok(None));
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[allow(non_snake_case)]
struct ChatMessage {
    Id: u64,
    Text: String,
    #[serde(with = "serde_bytes")]
    Avatar: Vec<u8>,
}

#[test]
fn structs_are_maps_keyed_by_field_name() {
    let message = ChatMessage {
        Id: 7,
        Text: "hi".into(),
        Avatar: vec![9],
    };
    let bytes = encode(P, &completion("1", CompletionResult::Value(&message)));
    // ... 83 a2 "Id" 07 a4 "Text" a2 "hi" a6 "Avatar" c4 01 09
    assert!(hex(&bytes)
        .ends_with("83 a2 49 64 07 a4 54 65 78 74 a2 68 69 a6 41 76 61 74 61 72 c4 01 09"));
    let decoded = decode_all_ways(P, &bytes);
    let Message::Completion(c) = &decoded[0] else {
        panic!()
    };
    let CompletionResult::Value(v) = &c.result else {
        panic!()
    };
    assert_eq!(v.deserialize::<ChatMessage>().unwrap(), message);
}

/// Random and mutated input must only ever produce messages, `None` or errors.
#[test]
fn random_bytes_never_panic() {
    let valid = unhex("0c 95 01 80 a1 30 a3 41 64 64 92 01 02 07 95 03 80 a1 31 03 2a");
    let json_valid =
        b"{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[1,2]}\x1e".to_vec();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        for (protocol, seed) in [(P, &valid), (Protocol::Json, &json_valid)] {
            let mut input = seed.clone();
            if round % 2 == 0 {
                let flips = 1 + next() % 4;
                for _ in 0..flips {
                    let i = (next() as usize) % input.len();
                    input[i] = next() as u8;
                }
            } else {
                input = (0..(next() % 64)).map(|_| next() as u8).collect();
            }
            let mut buf = InputBuffer::from(&input[..]);
            for _ in 0..8 {
                match protocol.decode(&mut buf, 1024) {
                    Ok(Some(Message::Invocation(inv))) => {
                        for arg in &inv.arguments {
                            let _ = arg.deserialize::<serde_json::Value>();
                            let _ = arg.elements();
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
