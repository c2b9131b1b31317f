//! MessagePack payloads kept verbatim, and the per-protocol value types `Binary` and
//! `DateTime`: byte-exact encodings through the public protocol API, then hub methods over
//! the in-process test kit with both protocols.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use signalr_core::protocol::{
    Binary, Completion, CompletionResult, DateTime, Headers, InboundMessage, InputBuffer,
    Invocation, Message, NoValue, Payload, Protocol, ProtocolError,
};
use signalr_core::test_util::{ServerMessage, TestClient};
use signalr_core::{Clients, Hub, HubError};

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments of a MessagePack invocation record whose argument array is `args_hex`.
fn msgpack_arguments(args_hex: &str) -> Vec<Payload> {
    // [1, {}, "1", "T", <args>, []]
    let mut body = unhex("96 01 80 a1 31 a1 54");
    body.extend(unhex(args_hex));
    body.push(0x90);
    let mut record = vec![u8::try_from(body.len()).unwrap()];
    record.extend(body);
    decode_arguments(Protocol::MessagePack, &record)
}

/// The arguments of a JSON invocation whose argument array is `args_json`.
fn json_arguments(args_json: &str) -> Vec<Payload> {
    let record =
        format!(r#"{{"type":1,"invocationId":"1","target":"T","arguments":{args_json}}}"#) + "\x1e";
    decode_arguments(Protocol::Json, record.as_bytes())
}

fn decode_arguments(protocol: Protocol, record: &[u8]) -> Vec<Payload> {
    let mut buf = InputBuffer::from(record);
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

/// The value part of an encoded MessagePack Completion `[3, {}, "1", 3, value]`.
fn msgpack_result<V: Serialize>(value: V) -> Result<String, ProtocolError> {
    let record = Protocol::MessagePack.encode_to_bytes(&completion(value))?;
    let (prefix, length) = signalr_core::protocol::msgpack::read_length_prefix(&record)
        .unwrap()
        .unwrap();
    assert_eq!(record.len(), prefix + length as usize);
    let head = unhex("95 03 80 a1 31 03");
    let body = &record[prefix..];
    assert_eq!(&body[..head.len()], &head[..], "{}", hex(&record));
    Ok(hex(&body[head.len()..]))
}

/// The `result` member of an encoded JSON Completion.
fn json_result<V: Serialize>(value: V) -> Result<String, ProtocolError> {
    let record = Protocol::Json.encode_to_bytes(&completion(value))?;
    let text = std::str::from_utf8(&record).unwrap();
    let prefix = r#"{"type":3,"invocationId":"1","result":"#;
    assert!(text.starts_with(prefix), "{text}");
    Ok(text[prefix.len()..text.len() - 2].to_owned())
}

fn date(seconds: i64, nanos: u32) -> DateTime {
    DateTime::from_unix(seconds, nanos).unwrap()
}

// ---- Binary ----

#[test]
fn binary_is_bin_in_messagepack_and_base64_in_json() {
    let bytes = Binary::from(vec![0, 1, 2, 0xfe, 0xff]);
    assert_eq!(msgpack_result(&bytes).unwrap(), "c4 05 00 01 02 fe ff");
    assert_eq!(json_result(&bytes).unwrap(), r#""AAEC/v8=""#);
    assert_eq!(msgpack_result(Binary::default()).unwrap(), "c4 00");
    assert_eq!(json_result(Binary::default()).unwrap(), r#""""#);
}

#[test]
fn binary_binds_from_bin_and_from_base64() {
    let args = msgpack_arguments("92 c4 03 01 02 03 c4 00");
    assert_eq!(args[0].deserialize::<Binary>().unwrap().0, [1, 2, 3]);
    assert_eq!(args[1].deserialize::<Binary>().unwrap().0, [] as [u8; 0]);
    let args = json_arguments(r#"["AQID", "", "AAEC/v8="]"#);
    assert_eq!(args[0].deserialize::<Binary>().unwrap().0, [1, 2, 3]);
    assert!(args[1].deserialize::<Binary>().unwrap().is_empty());
    assert_eq!(
        args[2].deserialize::<Binary>().unwrap().0,
        [0, 1, 2, 0xfe, 0xff]
    );
}

#[test]
fn binary_refuses_invalid_base64_and_other_types() {
    let args = json_arguments(r#"["@@@@", "AQI", 5, [1, 2]]"#);
    let error = args[0].deserialize::<Binary>().unwrap_err().to_string();
    assert!(error.contains("not valid base64"), "{error}");
    let error = args[1].deserialize::<Binary>().unwrap_err().to_string();
    assert!(error.contains("not valid base64"), "unpadded: {error}");
    for arg in &args[2..] {
        let error = arg.deserialize::<Binary>().unwrap_err().to_string();
        assert!(error.contains("base64 string"), "{error}");
    }
    let args = msgpack_arguments("92 a3 41 51 49 05");
    for arg in &args {
        assert!(arg.deserialize::<Binary>().is_err(), "{arg:?}");
    }
}

// ---- DateTime ----

#[test]
fn datetime_is_the_shortest_timestamp_in_messagepack() {
    // timestamp 32: whole seconds that fit 32 bits.
    assert_eq!(
        msgpack_result(date(1_700_000_000, 0)).unwrap(),
        "d6 ff 65 53 f1 00"
    );
    // timestamp 64: nanoseconds, or seconds that need up to 34 bits.
    assert_eq!(
        msgpack_result(date(1_700_000_000, 123_000_000)).unwrap(),
        "d7 ff 1d 53 53 00 65 53 f1 00"
    );
    assert_eq!(
        msgpack_result(date(1 << 33, 0)).unwrap(),
        "d7 ff 00 00 00 02 00 00 00 00"
    );
    // timestamp 96: before 1970, or after 2514.
    assert_eq!(
        msgpack_result(date(-1, 500)).unwrap(),
        "c7 0c ff 00 00 01 f4 ff ff ff ff ff ff ff ff"
    );
}

#[test]
fn datetime_is_rfc_3339_in_json() {
    assert_eq!(
        json_result(date(1_700_000_000, 123_000_000)).unwrap(),
        r#""2023-11-14T22:13:20.123Z""#
    );
    assert_eq!(
        json_result(date(0, 0)).unwrap(),
        r#""1970-01-01T00:00:00Z""#
    );
}

#[test]
fn datetime_binds_from_all_three_timestamp_lengths_and_from_text() {
    let args = msgpack_arguments(
        "94 d6 ff 65 53 f1 00 d7 ff 1d 53 53 00 65 53 f1 00 \
         c7 0c ff 00 00 01 f4 ff ff ff ff ff ff ff ff \
         b8 32 30 32 33 2d 31 31 2d 31 34 54 32 32 3a 31 33 3a 32 30 2e 31 32 33 5a",
    );
    assert_eq!(
        args[0].deserialize::<DateTime>().unwrap(),
        date(1_700_000_000, 0)
    );
    assert_eq!(
        args[1].deserialize::<DateTime>().unwrap(),
        date(1_700_000_000, 123_000_000)
    );
    assert_eq!(args[2].deserialize::<DateTime>().unwrap(), date(-1, 500));
    // A MessagePack string in RFC 3339 binds too ("2023-11-14T22:13:20.123Z").
    assert_eq!(
        args[3].deserialize::<DateTime>().unwrap(),
        date(1_700_000_000, 123_000_000)
    );
    let args = json_arguments(r#"["2023-11-14T22:13:20.123Z", "2023-11-14T23:13:20.123+01:00"]"#);
    for arg in &args {
        assert_eq!(
            arg.deserialize::<DateTime>().unwrap(),
            date(1_700_000_000, 123_000_000)
        );
    }
}

#[test]
fn datetime_refuses_malformed_timestamps_with_a_reason() {
    let cases = [
        // A timestamp of 2 bytes (fixext 2) and of 5 bytes (ext 8).
        ("91 d5 ff 00 01", "4, 8 or 12 bytes"),
        ("91 c7 05 ff 00 00 00 00 01", "4, 8 or 12 bytes"),
        // Extension type 5 is not a timestamp.
        ("91 d6 05 00 00 00 01", "not a timestamp"),
        // timestamp 64 with 0x3fffffff nanoseconds.
        ("91 d7 ff ff ff ff fc 00 00 00 00", "nanoseconds"),
        // timestamp 96 with i64::MAX seconds, and with i64::MIN.
        ("91 c7 0c ff 00 00 00 00 7f ff ff ff ff ff ff ff", "outside"),
        ("91 c7 0c ff 00 00 00 00 80 00 00 00 00 00 00 00", "outside"),
        // Not a timestamp at all.
        ("91 2a", "date-time"),
    ];
    for (args, reason) in cases {
        let error = msgpack_arguments(args)[0]
            .deserialize::<DateTime>()
            .unwrap_err()
            .to_string();
        assert!(error.contains(reason), "{args}: {error}");
    }
    let cases = [
        (r#"["2023-11-14T22:13:20"]"#, "UTC offset"),
        (r#"["10000-01-01T00:00:00Z"]"#, "RFC 3339"),
        (r#"["2023-02-29T00:00:00Z"]"#, "does not exist"),
        (r#"[1700000000]"#, "date-time"),
    ];
    for (args, reason) in cases {
        let error = json_arguments(args)[0]
            .deserialize::<DateTime>()
            .unwrap_err()
            .to_string();
        assert!(error.contains(reason), "{args}: {error}");
    }
}

// ---- Payloads kept verbatim ----

/// A timestamp, an extension of type 5, a bin, a float 32 and a non-shortest uint (uint 16
/// holding 1), alone and nested in an array and a map.
const EXOTIC: &str = "95 d6 ff 65 53 f1 00 d4 05 07 c4 02 ab cd ca 3f c0 00 00 cd 00 01";

#[test]
fn a_messagepack_payload_is_written_to_messagepack_byte_for_byte() {
    let args = msgpack_arguments(&format!("93 d6 ff 65 53 f1 00 {EXOTIC} 81 a1 6b {EXOTIC}"));
    assert_eq!(msgpack_result(&args[0]).unwrap(), "d6 ff 65 53 f1 00");
    assert_eq!(msgpack_result(&args[1]).unwrap(), EXOTIC);
    assert_eq!(
        msgpack_result(&args[2]).unwrap(),
        format!("81 a1 6b {EXOTIC}")
    );

    // Forwarded as the arguments of an invocation (what `ClientProxy::send` writes) ...
    let record = Protocol::MessagePack
        .encode_to_bytes(&Message::<_, NoValue>::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: "R".into(),
            arguments: &args,
            stream_ids: vec![],
        }))
        .unwrap();
    let expected = format!("96 01 80 c0 a1 52 93 d6 ff 65 53 f1 00 {EXOTIC} 81 a1 6b {EXOTIC} 90");
    assert_eq!(hex(&record[1..]), expected);

    // ... and inside a value of the application's own.
    #[derive(Serialize)]
    struct Envelope<'a> {
        from: &'a str,
        body: &'a Payload,
        all: Vec<&'a Payload>,
    }
    let envelope = Envelope {
        from: "a",
        body: &args[1],
        all: vec![&args[0], &args[1]],
    };
    assert_eq!(
        msgpack_result(&envelope).unwrap(),
        format!("83 a4 66 72 6f 6d a1 61 a4 62 6f 64 79 {EXOTIC} a3 61 6c 6c 92 d6 ff 65 53 f1 00 {EXOTIC}")
    );
}

#[test]
fn a_messagepack_timestamp_becomes_rfc_3339_text_in_json() {
    let args = msgpack_arguments(
        "93 d6 ff 65 53 f1 00 92 c7 0c ff 00 00 01 f4 ff ff ff ff ff ff ff ff c0 \
         83 a1 61 c4 02 01 02 a1 62 ca 3f c0 00 00 a1 63 cf ff ff ff ff ff ff ff ff",
    );
    assert_eq!(json_result(&args[0]).unwrap(), r#""2023-11-14T22:13:20Z""#);
    assert_eq!(
        json_result(&args[1]).unwrap(),
        r#"["1969-12-31T23:59:59.0000005Z",null]"#
    );
    // Everything else converts as before: bin as an array of numbers.
    assert_eq!(
        json_result(&args[2]).unwrap(),
        r#"{"a":[1,2],"b":1.5,"c":18446744073709551615}"#
    );
    // Any serializer gets the same conversion.
    assert_eq!(
        serde_json::to_string(&args[0]).unwrap(),
        r#""2023-11-14T22:13:20Z""#
    );
}

#[test]
fn other_extension_types_and_bad_timestamps_are_an_encoding_error_in_json() {
    let args = msgpack_arguments("93 91 d4 05 07 d5 ff 00 01 d7 ff ff ff ff fc 00 00 00 00");
    let error = json_result(&args[0]).unwrap_err().to_string();
    assert!(
        error.contains("extension type 5 has no representation outside MessagePack"),
        "{error}"
    );
    for arg in &args[1..] {
        let error = json_result(arg).unwrap_err().to_string();
        assert!(
            error.contains("timestamp") || error.contains("nanoseconds"),
            "{error}"
        );
    }
    // Still verbatim into MessagePack.
    assert_eq!(msgpack_result(&args[0]).unwrap(), "91 d4 05 07");
}

#[test]
fn a_messagepack_payload_nested_too_deeply_for_json_is_an_error_not_a_crash() {
    let deep = "91 ".repeat(100_000) + "c0";
    let mut body = unhex("96 01 80 a1 31 a1 54 91");
    body.extend(unhex(&deep));
    body.push(0x90);
    let mut record = BytesMut::new();
    signalr_core::protocol::msgpack::write_length_prefix(body.len(), &mut record);
    record.extend_from_slice(&body);
    let args = decode_arguments(Protocol::MessagePack, &record);
    let error = json_result(&args[0]).unwrap_err().to_string();
    assert!(error.contains("128 levels"), "{error}");
    // Verbatim into MessagePack, however deep.
    let out = Protocol::MessagePack
        .encode_to_bytes(&completion(&args[0]))
        .unwrap();
    assert!(out.ends_with(&unhex(&deep)));
}

#[test]
fn a_json_payload_is_converted_for_messagepack_as_before() {
    let args = json_arguments(r#"[{"a":[1,-2,1.5,"x",null,true]}]"#);
    assert_eq!(
        msgpack_result(&args[0]).unwrap(),
        "81 a1 61 96 01 fe cb 3f f8 00 00 00 00 00 00 a1 78 c0 c3"
    );
}

/// A type whose `Serialize` runs another serializer while a MessagePack message is being
/// written: the payload inside must not hand raw bytes to that other serializer.
struct AsJsonText<'a>(&'a Payload);

impl Serialize for AsJsonText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

#[test]
fn a_nested_foreign_serializer_still_gets_a_converted_value() {
    let args = msgpack_arguments("91 92 d6 ff 65 53 f1 00 c4 01 09");
    let text = r#"["2023-11-14T22:13:20Z",[9]]"#;
    let mut expected = format!("{:02x}", 0xa0 + text.len());
    for b in text.bytes() {
        expected += &format!(" {b:02x}");
    }
    assert_eq!(msgpack_result(AsJsonText(&args[0])).unwrap(), expected);
}

// ---- Our MessagePack writer agrees with rmp-serde on ordinary values ----

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Pair(i32, String);

#[derive(Serialize)]
struct Wrapper(u8);

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Point(i8, i8),
    Rect { w: u16, h: u16 },
}

#[derive(Serialize)]
struct Inner {
    z: bool,
}

#[derive(Serialize)]
struct Record {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<u8>,
    present: Option<u8>,
    big: i128,
    small: i64,
    huge: u64,
    ch: char,
    unit: (),
    unit_struct: Unit,
    pair: Pair,
    wrapper: Wrapper,
    shapes: Vec<Shape>,
    map: BTreeMap<String, f32>,
    array: [u8; 3],
    #[serde(flatten)]
    inner: Inner,
}

/// A map whose length is not known up front.
struct Unsized(Vec<(u8, &'static str)>);

impl Serialize for Unsized {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[test]
fn ordinary_values_encode_exactly_as_rmp_serde_writes_them() {
    let record = Record {
        name: "n".into(),
        missing: None,
        present: Some(7),
        big: -(1 << 70),
        small: -100_000,
        huge: u64::MAX,
        ch: 'é',
        unit: (),
        unit_struct: Unit,
        pair: Pair(-1, "p".into()),
        wrapper: Wrapper(200),
        shapes: vec![
            Shape::Empty,
            Shape::Circle(0.5),
            Shape::Point(1, -1),
            Shape::Rect { w: 300, h: 2 },
        ],
        map: BTreeMap::from([("k".to_owned(), 1.25)]),
        array: [1, 2, 3],
        inner: Inner { z: true },
    };
    let expected = rmp_serde::to_vec_named(&record).unwrap();
    assert_eq!(msgpack_result(&record).unwrap(), hex(&expected));
    let filtered = (1..=20).filter(|n| n % 3 == 0).collect::<Vec<u32>>();
    let unsized_map = Unsized(vec![(1, "a"), (2, "b")]);
    assert_eq!(
        msgpack_result(&unsized_map).unwrap(),
        hex(&rmp_serde::to_vec_named(&unsized_map).unwrap())
    );
    assert_eq!(
        msgpack_result(&filtered).unwrap(),
        hex(&rmp_serde::to_vec_named(&filtered).unwrap())
    );
}

// ---- Through a hub, both protocols ----

#[derive(Default)]
struct Stored(Mutex<Option<Payload>>);

fn hub(stored: Arc<Stored>) -> Hub {
    let keep = stored.clone();
    Hub::builder()
        .method("Echo", |value: Payload| async move { value })
        .method("Broadcast", |clients: Clients, value: Payload| async move {
            clients.all().send("Got", (value,)).await
        })
        .method("Keep", move |value: Payload| {
            let keep = keep.clone();
            async move {
                *keep.0.lock().unwrap() = Some(value);
            }
        })
        .method("Kept", move || {
            let stored = stored.clone();
            async move {
                stored
                    .0
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or_else(|| HubError::new("nothing kept"))
            }
        })
        .method("EchoBinary", |value: Binary| async move { value })
        .method("EchoDate", |value: DateTime| async move { value })
        .method("BinaryLength", |value: Binary| async move { value.len() })
        .method("DateMillis", |value: DateTime| async move {
            value.unix_millis()
        })
        .method("DateOf", |millis: i64| async move {
            DateTime::from_unix_millis(millis).map_err(|e| HubError::new(e.to_string()))
        })
        .build()
}

async fn connect(hub: &Hub, protocol: Protocol) -> TestClient {
    TestClient::builder()
        .protocol(protocol)
        .connect(hub)
        .await
        .unwrap()
}

/// Sends `[1, {}, id, target, <args>]` as raw MessagePack (the client writes the bytes).
async fn invoke_raw(client: &mut TestClient, id: &str, target: &str, args_hex: &str) {
    let mut body = vec![0x95, 0x01, 0x80];
    rmp::encode::write_str(&mut body, id).unwrap();
    rmp::encode::write_str(&mut body, target).unwrap();
    body.extend(unhex(args_hex));
    let mut record = BytesMut::new();
    signalr_core::protocol::msgpack::write_length_prefix(body.len(), &mut record);
    record.extend_from_slice(&body);
    client.send_bytes(record.freeze()).await;
}

/// The Completion for `id` (skipping anything else).
async fn completion_of(client: &mut TestClient, id: &str) -> CompletionResult<Payload> {
    loop {
        match client.recv().await.expect("the connection stays open") {
            ServerMessage::Completion(c) if c.invocation_id == id => return c.result,
            _ => continue,
        }
    }
}

fn value_bytes(result: CompletionResult<Payload>) -> String {
    match result {
        CompletionResult::Value(payload) => hex(payload.as_msgpack().expect("MessagePack")),
        other => panic!("not a value: {other:?}"),
    }
}

#[tokio::test]
async fn a_hub_method_returns_a_received_timestamp_and_bin_unchanged() {
    let hub = hub(Arc::default());
    let mut client = connect(&hub, Protocol::MessagePack).await;
    for value in [
        "d6 ff 65 53 f1 00",
        "d7 ff 1d 53 53 00 65 53 f1 00",
        "c7 0c ff 00 00 01 f4 ff ff ff ff ff ff ff ff",
        "c4 03 01 02 03",
        EXOTIC,
    ] {
        invoke_raw(&mut client, "7", "Echo", &format!("91 {value}")).await;
        assert_eq!(value_bytes(completion_of(&mut client, "7").await), value);
    }
}

#[tokio::test]
async fn a_payload_sent_on_reaches_each_client_in_its_own_protocol() {
    let hub = hub(Arc::default());
    let mut sender = connect(&hub, Protocol::MessagePack).await;
    let mut json = connect(&hub, Protocol::Json).await;
    invoke_raw(
        &mut sender,
        "1",
        "Broadcast",
        "91 92 d6 ff 65 53 f1 00 c4 02 01 02",
    )
    .await;
    let (target, args) = sender.recv_invocation().await.unwrap();
    assert_eq!(target, "Got");
    assert_eq!(
        hex(args[0].as_msgpack().unwrap()),
        "92 d6 ff 65 53 f1 00 c4 02 01 02"
    );
    let (_, args) = json.recv_invocation().await.unwrap();
    assert_eq!(
        args[0].as_json().unwrap(),
        r#"["2023-11-14T22:13:20Z",[1,2]]"#
    );
    assert!(matches!(
        completion_of(&mut sender, "1").await,
        CompletionResult::Value(_)
    ));
}

#[tokio::test]
async fn a_kept_extension_json_cannot_express_fails_that_call_only() {
    let hub = hub(Arc::default());
    let mut sender = connect(&hub, Protocol::MessagePack).await;
    let mut json = connect(&hub, Protocol::Json).await;
    invoke_raw(&mut sender, "1", "Keep", "91 d4 05 07").await;
    completion_of(&mut sender, "1").await;
    let error = json
        .invoke::<serde_json::Value>("Kept", ())
        .await
        .unwrap_err();
    assert!(
        error.contains("An unexpected error occurred invoking 'Kept'"),
        "{error}"
    );
    // The MessagePack client gets it back exactly, and the JSON connection still works.
    invoke_raw(&mut sender, "2", "Kept", "90").await;
    assert_eq!(
        value_bytes(completion_of(&mut sender, "2").await),
        "d4 05 07"
    );
    invoke_raw(&mut sender, "3", "Keep", "91 d6 ff 65 53 f1 00").await;
    completion_of(&mut sender, "3").await;
    let kept: String = json.invoke("Kept", ()).await.unwrap();
    assert_eq!(kept, "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn binary_and_datetime_arguments_and_results_on_both_protocols() {
    let hub = hub(Arc::default());
    let instant = date(1_700_000_000, 123_000_000);
    let bytes = Binary::from(vec![0, 1, 2, 0xfe, 0xff]);
    for protocol in Protocol::ALL {
        let mut client = connect(&hub, protocol).await;
        let echoed: Binary = client.invoke("EchoBinary", (&bytes,)).await.unwrap();
        assert_eq!(echoed, bytes, "{protocol}");
        let echoed: DateTime = client.invoke("EchoDate", (instant,)).await.unwrap();
        assert_eq!(echoed, instant, "{protocol}");
        let length: usize = client.invoke("BinaryLength", (&bytes,)).await.unwrap();
        assert_eq!(length, 5);
        let millis: i64 = client.invoke("DateMillis", (instant,)).await.unwrap();
        assert_eq!(millis, 1_700_000_000_123);
        let made: DateTime = client
            .invoke("DateOf", (1_700_000_000_123_i64,))
            .await
            .unwrap();
        assert_eq!(made, instant);
    }
    // What each protocol's clients see on the wire.
    let mut json = connect(&hub, Protocol::Json).await;
    let text: String = json.invoke("EchoBinary", ("AAEC/v8=",)).await.unwrap();
    assert_eq!(text, "AAEC/v8=");
    let text: String = json
        .invoke("DateOf", (1_700_000_000_123_i64,))
        .await
        .unwrap();
    assert_eq!(text, "2023-11-14T22:13:20.123Z");
    let mut msgpack = connect(&hub, Protocol::MessagePack).await;
    invoke_raw(&mut msgpack, "1", "DateOf", "91 cf 00 00 01 8b cf e5 68 7b").await;
    assert_eq!(
        value_bytes(completion_of(&mut msgpack, "1").await),
        "d7 ff 1d 53 53 00 65 53 f1 00"
    );
    invoke_raw(&mut msgpack, "2", "EchoBinary", "91 c4 01 2a").await;
    assert_eq!(
        value_bytes(completion_of(&mut msgpack, "2").await),
        "c4 01 2a"
    );
}

#[tokio::test]
async fn malformed_values_fail_the_argument_binding_and_the_connection_stays() {
    let hub = hub(Arc::default());
    let mut msgpack = connect(&hub, Protocol::MessagePack).await;
    for (id, target, args) in [
        ("1", "EchoDate", "91 d5 ff 00 01"),
        ("2", "EchoDate", "91 d7 ff ff ff ff fc 00 00 00 00"),
        (
            "3",
            "EchoDate",
            "91 c7 0c ff 00 00 00 00 7f ff ff ff ff ff ff ff",
        ),
        ("4", "EchoDate", "91 d6 05 00 00 00 01"),
        ("5", "EchoBinary", "91 a3 41 51 49"),
    ] {
        invoke_raw(&mut msgpack, id, target, args).await;
        match completion_of(&mut msgpack, id).await {
            CompletionResult::Error(error) => assert!(
                error.starts_with(&format!("Failed to invoke '{target}'")),
                "{args}: {error}"
            ),
            other => panic!("{args}: {other:?}"),
        }
    }
    let mut json = connect(&hub, Protocol::Json).await;
    for (target, arg) in [
        ("EchoBinary", "@@@@"),
        ("EchoDate", "2023-11-14T22:13:20"),
        ("EchoDate", "9999-12-31T23:59:59-01:00"),
    ] {
        let error = json
            .invoke::<serde_json::Value>(target, (arg,))
            .await
            .unwrap_err();
        assert!(
            error.starts_with(&format!("Failed to invoke '{target}'")),
            "{error}"
        );
    }
    // Both still answer.
    let ok: i64 = json
        .invoke("DateMillis", ("1970-01-01T00:00:01Z",))
        .await
        .unwrap();
    assert_eq!(ok, 1000);
    invoke_raw(&mut msgpack, "9", "Echo", "91 01").await;
    assert_eq!(value_bytes(completion_of(&mut msgpack, "9").await), "01");
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Attachment {
    name: String,
    data: Binary,
    sent: DateTime,
}

#[test]
fn the_types_nest_in_application_structs() {
    let value = Attachment {
        name: "a".into(),
        data: Binary::from(&[7u8][..]),
        sent: date(0, 0),
    };
    assert_eq!(
        msgpack_result(&value).unwrap(),
        "83 a4 6e 61 6d 65 a1 61 a4 64 61 74 61 c4 01 07 a4 73 65 6e 74 d6 ff 00 00 00 00"
    );
    assert_eq!(
        json_result(&value).unwrap(),
        r#"{"name":"a","data":"Bw==","sent":"1970-01-01T00:00:00Z"}"#
    );
    let args = msgpack_arguments(
        "91 83 a4 6e 61 6d 65 a1 61 a4 64 61 74 61 c4 01 07 a4 73 65 6e 74 d6 ff 00 00 00 00",
    );
    assert_eq!(args[0].deserialize::<Attachment>().unwrap(), value);
    let args = json_arguments(r#"[{"name":"a","data":"Bw==","sent":"1970-01-01T00:00:00Z"}]"#);
    assert_eq!(args[0].deserialize::<Attachment>().unwrap(), value);
}

/// A received invocation's `Arguments` are an argument list to send on (`IntoArguments`), in
/// either protocol, whatever protocol they arrived in.
#[test]
fn received_arguments_are_sent_on_as_they_are() {
    use signalr_core::IntoArguments;
    let record = r#"{"type":1,"target":"T","arguments":["ada",{"n":1}]}"#.to_owned() + "\x1e";
    let mut buf = InputBuffer::from(record.as_bytes());
    let Some(InboundMessage::Invocation(received)) =
        Protocol::Json.decode(&mut buf, 1 << 20).unwrap()
    else {
        panic!("not an invocation")
    };
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let forwarded = protocol
            .encode_to_bytes(&Message::<_, NoValue>::Invocation(Invocation {
                headers: Headers::new(),
                invocation_id: None,
                target: "Got".into(),
                arguments: received.arguments.clone().into_arguments(),
                stream_ids: Vec::new(),
            }))
            .unwrap();
        let mut buf = InputBuffer::from(&forwarded[..]);
        let Some(InboundMessage::Invocation(got)) = protocol.decode(&mut buf, 1 << 20).unwrap()
        else {
            panic!("not an invocation")
        };
        let values: Vec<serde_json::Value> = got
            .arguments
            .iter()
            .map(|a| a.deserialize().unwrap())
            .collect();
        assert_eq!(
            values,
            [serde_json::json!("ada"), serde_json::json!({"n": 1})]
        );
    }
}
