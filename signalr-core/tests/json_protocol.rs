//! Byte-exact tests of the JSON hub protocol, through the public protocol API.

mod common;

use common::{decode_all_ways, encode};
use serde_json::json;
use signalr_core::protocol::{
    CancelInvocation, Close, Completion, CompletionResult, Headers, InputBuffer, Invocation,
    Message, NoValue, Payload, Protocol, ProtocolError, StreamItem,
};

const P: Protocol = Protocol::Json;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn invocation<A>(id: Option<&str>, target: &str, arguments: A) -> Invocation<A> {
    Invocation {
        headers: Headers::new(),
        invocation_id: id.map(Into::into),
        target: target.into(),
        arguments,
        stream_ids: Vec::new(),
    }
}

#[test]
fn encodes_every_message_type_byte_exact() {
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (
            encode(P, &Message::<_, NoValue>::Invocation(invocation(None, "Send", ("a", 1)))),
            b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"a\",1]}\x1e",
        ),
        (
            encode(P, &Message::<_, NoValue>::Invocation(Invocation {
                headers: headers(&[("k", "v")]),
                stream_ids: vec!["7".into()],
                ..invocation(Some("1"), "M", [(); 0])
            })),
            b"{\"type\":1,\"headers\":{\"k\":\"v\"},\"invocationId\":\"1\",\"target\":\"M\",\"arguments\":[],\"streamIds\":[\"7\"]}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, _>::StreamItem(StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: Option::<i32>::None,
            })),
            b"{\"type\":2,\"invocationId\":\"1\",\"item\":null}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, _>::Completion(Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Value(42),
            })),
            b"{\"type\":3,\"invocationId\":\"1\",\"result\":42}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, _>::Completion(Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Value(()),
            })),
            b"{\"type\":3,\"invocationId\":\"1\",\"result\":null}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, NoValue>::Completion(Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Void,
            })),
            b"{\"type\":3,\"invocationId\":\"1\"}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, NoValue>::Completion(Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                result: CompletionResult::Error("boom".into()),
            })),
            b"{\"type\":3,\"invocationId\":\"1\",\"error\":\"boom\"}\x1e",
        ),
        (
            encode(P, &Message::<_, NoValue>::StreamInvocation(invocation(Some("2"), "Counter", (10,)))),
            b"{\"type\":4,\"invocationId\":\"2\",\"target\":\"Counter\",\"arguments\":[10]}\x1e",
        ),
        (
            encode(P, &Message::<NoValue, NoValue>::CancelInvocation(CancelInvocation {
                headers: Headers::new(),
                invocation_id: "2".into(),
            })),
            b"{\"type\":5,\"invocationId\":\"2\"}\x1e",
        ),
        (encode(P, &Message::<NoValue, NoValue>::Ping), b"{\"type\":6}\x1e"),
        (encode(P, &Message::<NoValue, NoValue>::Close(Close::default())), b"{\"type\":7}\x1e"),
        (
            encode(P, &Message::<NoValue, NoValue>::Close(Close {
                error: Some("Connection closed with an error.".into()),
                allow_reconnect: true,
            })),
            b"{\"type\":7,\"error\":\"Connection closed with an error.\",\"allowReconnect\":true}\x1e",
        ),
        (encode(P, &Message::<NoValue, NoValue>::Ack(5)), b"{\"type\":8,\"sequenceId\":5}\x1e"),
        (encode(P, &Message::<NoValue, NoValue>::Sequence(300)), b"{\"type\":9,\"sequenceId\":300}\x1e"),
    ];
    for (actual, expected) in cases {
        assert_eq!(
            String::from_utf8_lossy(&actual),
            String::from_utf8_lossy(expected)
        );
    }
    assert_eq!(
        P.ping_record(),
        encode(P, &Message::<NoValue, NoValue>::Ping)
    );
}

#[test]
fn decodes_every_message_type() {
    let input = concat!(
        "{\"type\":1,\"invocationId\":\"0\",\"target\":\"Add\",\"arguments\":[1,2]}\x1e",
        "{\"arguments\":[\"x\"],\"target\":\"Send\",\"type\":1,\"headers\":{\"a\":\"b\"},\"unknown\":{\"n\":[1]}}\x1e",
        "{\"type\":2,\"invocationId\":\"5\",\"item\":null}\x1e",
        "{\"type\":3,\"invocationId\":\"s1\",\"result\":{\"x\":1}}\x1e",
        "{\"type\":3,\"invocationId\":\"s2\",\"result\":null}\x1e",
        "{\"type\":3,\"invocationId\":\"s3\",\"error\":\"no\"}\x1e",
        "{\"type\":3,\"invocationId\":\"5\"}\x1e",
        "{\"type\":4,\"invocationId\":\"1\",\"target\":\"Count\",\"arguments\":[3],\"streamIds\":[\"2\"]}\x1e",
        "{\"type\":5,\"invocationId\":\"1\"}\x1e",
        "{\"type\":6}\x1e",
        "{\"type\":7,\"error\":\"bye\",\"allowReconnect\":true}\x1e",
        "{\"type\":7}\x1e",
        "{\"type\":8,\"sequenceId\":12}\x1e",
        "{\"type\":9,\"sequenceId\":1}\x1e",
    );
    let messages = decode_all_ways(P, input.as_bytes());
    assert_eq!(messages.len(), 14);

    let Message::Invocation(add) = &messages[0] else {
        panic!("{:?}", messages[0])
    };
    assert_eq!(add.invocation_id.as_deref(), Some("0"));
    assert_eq!(add.target, "Add");
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
    assert_eq!(send.headers, headers(&[("a", "b")]));
    assert_eq!(send.arguments[0].as_json(), Some("\"x\""));

    let Message::StreamItem(item) = &messages[2] else {
        panic!()
    };
    assert_eq!(item.item.as_json(), Some("null"));

    let Message::Completion(c) = &messages[3] else {
        panic!()
    };
    let CompletionResult::Value(v) = &c.result else {
        panic!()
    };
    assert_eq!(
        v.deserialize::<serde_json::Value>().unwrap(),
        json!({"x": 1})
    );
    let Message::Completion(c) = &messages[4] else {
        panic!()
    };
    assert!(matches!(&c.result, CompletionResult::Value(v) if v.as_json() == Some("null")));
    let Message::Completion(c) = &messages[5] else {
        panic!()
    };
    assert_eq!(c.result, CompletionResult::Error("no".into()));
    let Message::Completion(c) = &messages[6] else {
        panic!()
    };
    assert_eq!(c.result, CompletionResult::Void);

    let Message::StreamInvocation(s) = &messages[7] else {
        panic!()
    };
    assert_eq!(s.stream_ids, ["2"]);
    assert!(matches!(&messages[8], Message::CancelInvocation(c) if c.invocation_id == "1"));
    assert!(matches!(messages[9], Message::Ping));
    assert_eq!(
        messages[10],
        Message::Close(Close {
            error: Some("bye".into()),
            allow_reconnect: true
        })
    );
    assert_eq!(messages[11], Message::Close(Close::default()));
    assert_eq!(messages[12], Message::Ack(12));
    assert_eq!(messages[13], Message::Sequence(1));
}

#[test]
fn unknown_types_are_skipped_and_empty_ids_mean_non_blocking() {
    let input = b"{\"type\":42,\"whatever\":true}\x1e{\"type\":1,\"invocationId\":\"\",\"target\":\"T\",\"arguments\":[]}\x1e";
    let messages = decode_all_ways(P, input);
    assert_eq!(messages.len(), 1);
    assert!(matches!(&messages[0], Message::Invocation(i) if i.invocation_id.is_none()));
}

#[test]
fn malformed_records_are_protocol_errors() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"target\":\"x\"}\x1e",
            "Missing required property 'type'.",
        ),
        (
            b"{\"type\":1,\"arguments\":[]}\x1e",
            "Missing required property 'target'.",
        ),
        (
            b"{\"type\":1,\"target\":\"x\"}\x1e",
            "Missing required property 'arguments'.",
        ),
        (
            b"{\"type\":4,\"target\":\"x\",\"arguments\":[]}\x1e",
            "Missing required property 'invocationId'.",
        ),
        (
            b"{\"type\":2,\"invocationId\":\"1\"}\x1e",
            "Missing required property 'item'.",
        ),
        (
            b"{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"e\"}\x1e",
            "The 'error' and 'result' properties are mutually exclusive.",
        ),
        (
            b"{\"type\":8}\x1e",
            "Missing required property 'sequenceId'.",
        ),
        (b"{\"type\":\"1\"}\x1e", "Error reading JSON."),
        (b"[1,2]\x1e", "Error reading JSON."),
        (b"{\"type\":1,\x1e", "Error reading JSON."),
        (b"\xff\xfe\x1e", "Error reading JSON."),
    ];
    for (input, expected) in cases {
        let mut buf = InputBuffer::from(*input);
        match P.decode(&mut buf, 1024) {
            Err(ProtocolError::Invalid(message)) => assert!(
                message.starts_with(expected),
                "{:?}: got {message:?}",
                String::from_utf8_lossy(input)
            ),
            other => panic!(
                "{:?}: expected an error, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

#[test]
fn size_limit_applies_before_the_separator_arrives() {
    let mut buf = InputBuffer::from(&[b' '; 101][..]);
    assert_eq!(
        P.decode(&mut buf, 100),
        Err(ProtocolError::MessageTooLarge { limit: 100 })
    );
    // Exactly at the limit is fine.
    let record = format!("{{\"type\":6{}}}\x1e", " ".repeat(90));
    assert_eq!(record.len(), 101);
    let mut buf = InputBuffer::from(record.as_bytes());
    assert_eq!(P.decode(&mut buf, 100), Ok(Some(Message::Ping)));
}

#[test]
fn payloads_transcode_between_protocols() {
    let messages = decode_all_ways(
        P,
        b"{\"type\":1,\"target\":\"E\",\"arguments\":[{\"a\":[1,-2,3.5,\"s\",null,true]}]}\x1e",
    );
    let Message::Invocation(inv) = &messages[0] else {
        panic!()
    };
    let forwarded = Message::<_, NoValue>::Invocation(invocation(None, "E", inv.arguments.clone()));
    let as_json = encode(P, &forwarded);
    assert_eq!(
        String::from_utf8(as_json).unwrap(),
        "{\"type\":1,\"target\":\"E\",\"arguments\":[{\"a\":[1,-2,3.5,\"s\",null,true]}]}\x1e"
    );
    // Into MessagePack and back, the value survives.
    let as_msgpack = encode(Protocol::MessagePack, &forwarded);
    let back = decode_all_ways(Protocol::MessagePack, &as_msgpack);
    let Message::Invocation(inv) = &back[0] else {
        panic!()
    };
    let value: serde_json::Value = inv.arguments[0].deserialize().unwrap();
    assert_eq!(value, json!({"a": [1, -2, 3.5, "s", null, true]}));
    // A map is not an array: splitting it is an error, not a panic.
    assert!(inv.arguments[0].elements().is_err());
}

#[test]
fn array_payloads_split_into_encoded_elements() {
    let messages = decode_all_ways(
        P,
        &[
            &br#"{"type":1,"target":"E","arguments":[[1,"two",{"three":3}]]}"#[..],
            b"\x1e",
        ]
        .concat(),
    );
    let Message::Invocation(inv) = &messages[0] else {
        panic!()
    };
    let elements: Vec<Payload> = inv.arguments[0].elements().unwrap();
    let texts: Vec<&str> = elements.iter().map(|e| e.as_json().unwrap()).collect();
    assert_eq!(texts, ["1", r#""two""#, r#"{"three":3}"#]);
}

#[test]
fn json_payloads_are_forwarded_to_json_verbatim_and_still_transcode_elsewhere() {
    // Spacing and escapes inside a received value are kept as received when the value goes
    // back out as JSON (it is copied, not re-serialized); the result stays valid JSON.
    let received = "{\"type\":1,\"target\":\"E\",\"arguments\":[{ \"a\" : [1, \"\\u00e9\"] }]}\x1e";
    let messages = decode_all_ways(P, received.as_bytes());
    let Message::Invocation(inv) = &messages[0] else {
        panic!()
    };
    let forwarded = Message::<_, NoValue>::Invocation(invocation(None, "E", inv.arguments.clone()));
    let as_json = String::from_utf8(encode(P, &forwarded)).unwrap();
    assert_eq!(
        as_json,
        "{\"type\":1,\"target\":\"E\",\"arguments\":[{ \"a\" : [1, \"\\u00e9\"] }]}\x1e"
    );
    let reparsed: serde_json::Value =
        serde_json::from_str(as_json.trim_end_matches('\x1e')).unwrap();
    assert_eq!(reparsed["arguments"][0], json!({"a": [1, "é"]}));
    // A completion carrying the value as its result is copied the same way.
    let completion = Message::<NoValue, _>::Completion(Completion {
        headers: Headers::new(),
        invocation_id: "1".into(),
        result: CompletionResult::Value(inv.arguments[0].clone()),
    });
    assert_eq!(
        String::from_utf8(encode(P, &completion)).unwrap(),
        "{\"type\":3,\"invocationId\":\"1\",\"result\":{ \"a\" : [1, \"\\u00e9\"] }}\x1e"
    );
    // Into MessagePack the value is still transcoded, and a plain serde_json serialization
    // outside the hub protocol sees an ordinary value too.
    let back = decode_all_ways(
        Protocol::MessagePack,
        &encode(Protocol::MessagePack, &forwarded),
    );
    let Message::Invocation(binary) = &back[0] else {
        panic!()
    };
    let value: serde_json::Value = binary.arguments[0].deserialize().unwrap();
    assert_eq!(value, json!({"a": [1, "é"]}));
    assert_eq!(
        serde_json::to_value(&inv.arguments[0]).unwrap(),
        json!({"a": [1, "é"]})
    );
}
