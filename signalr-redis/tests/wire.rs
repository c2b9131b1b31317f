//! Byte-exact tests of the reference backplane's wire format (layouts per the reference's
//! RedisProtocol and RedisChannels; bytes written out by hand).

use signalr_core::protocol::Protocol;
use signalr_redis::protocol::{
    decode_ack, encode_ack, GroupAction, GroupCommand, RedisCompletion, RedisInvocation,
    ResultRoute,
};
use signalr_redis::RedisChannels;

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn channel_names_match_the_reference() {
    let channels = RedisChannels::new("MyApp.Hubs.ChatHub");
    assert_eq!(channels.all(), "MyApp.Hubs.ChatHub:all");
    assert_eq!(channels.group("room 1"), "MyApp.Hubs.ChatHub:group:room 1");
    assert_eq!(channels.user("alice"), "MyApp.Hubs.ChatHub:user:alice");
    assert_eq!(
        channels.connection("abc"),
        "MyApp.Hubs.ChatHub:connection:abc"
    );
    assert_eq!(
        channels.group_management(),
        "MyApp.Hubs.ChatHub:internal:groups"
    );
    assert_eq!(
        channels.ack("srv_1"),
        "MyApp.Hubs.ChatHub:internal:ack:srv_1"
    );
    assert_eq!(
        channels.return_results("srv_1"),
        "MyApp.Hubs.ChatHub:internal:return:srv_1"
    );
}

#[test]
fn acks() {
    assert_eq!(encode_ack(5), unhex("91 05"));
    assert_eq!(encode_ack(300), unhex("91 cd 01 2c"));
    assert_eq!(decode_ack(&unhex("91 05")), Ok(5));
    // Any integer width, extra items ignored.
    assert_eq!(decode_ack(&unhex("92 d2 00 00 01 2c c0")), Ok(300));
    assert_eq!(
        decode_ack(&unhex("90")).unwrap_err().to_string(),
        "Insufficient items in Ack array."
    );
}

#[test]
fn group_commands() {
    let add = GroupCommand {
        id: 3,
        server_name: "srv_1".into(),
        action: GroupAction::Add,
        group: "room".into(),
        connection_id: "c1".into(),
    };
    let bytes = unhex("95 03 a5 73 72 76 5f 31 01 a4 72 6f 6f 6d a2 63 31");
    assert_eq!(add.encode(), bytes);
    assert_eq!(GroupCommand::decode(&bytes).unwrap(), add);

    let remove = GroupCommand {
        id: 200,
        action: GroupAction::Remove,
        ..add.clone()
    };
    let bytes = unhex("95 cc c8 a5 73 72 76 5f 31 02 a4 72 6f 6f 6d a2 63 31");
    assert_eq!(remove.encode(), bytes);
    assert_eq!(GroupCommand::decode(&bytes).unwrap(), remove);

    // A sixth item (a newer server) is ignored; a short array or an unknown action is not.
    let mut longer = bytes.clone();
    longer[0] = 0x96;
    longer.push(0xc0);
    assert_eq!(GroupCommand::decode(&longer).unwrap(), remove);
    assert!(GroupCommand::decode(&unhex("94 03 a1 73 01 a1 67"))
        .unwrap_err()
        .to_string()
        .contains("Insufficient items in GroupCommand"));
    assert!(GroupCommand::decode(&unhex("95 03 a1 73 07 a1 67 a1 63")).is_err());
}

const JSON_SEND: &[u8] = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hi\"]}\x1e";
// [1, {}, nil, "Send", ["hi"], []] with its varint length prefix.
const MSGPACK_SEND: &str = "0e 96 01 80 c0 a4 53 65 6e 64 91 a2 68 69 90";

#[test]
fn invocations_carry_every_protocols_record() {
    let invocation = RedisInvocation::new("Send", ("hi",), Vec::new(), None).unwrap();
    assert_eq!(
        invocation.record(Protocol::Json).unwrap().as_ref(),
        JSON_SEND
    );
    assert_eq!(
        invocation.record(Protocol::MessagePack).unwrap().to_vec(),
        unhex(MSGPACK_SEND)
    );
    let expected = cat(&[
        &unhex("92 90 82 a4 6a 73 6f 6e c4 2e"),
        JSON_SEND,
        &unhex("ab 6d 65 73 73 61 67 65 70 61 63 6b c4 0f"),
        &unhex(MSGPACK_SEND),
    ]);
    assert_eq!(invocation.encode(), expected);
    assert_eq!(RedisInvocation::decode(&expected).unwrap(), invocation);
}

#[test]
fn client_result_invocations_name_the_return_channel() {
    let route = ResultRoute {
        invocation_id: "r1".into(),
        return_channel: "P:internal:return:s1".into(),
    };
    let invocation =
        RedisInvocation::new("Ask", (), vec!["a".into()], Some(route.clone())).unwrap();
    let json = b"{\"type\":1,\"invocationId\":\"r1\",\"target\":\"Ask\",\"arguments\":[]}\x1e";
    assert_eq!(invocation.record(Protocol::Json).unwrap().as_ref(), json);
    let encoded = invocation.encode();
    // [excluded ["a"], {..}, "r1", "P:internal:return:s1"]
    assert_eq!(&encoded[..4], &unhex("94 91 a1 61")[..]);
    assert!(encoded.ends_with(&cat(&[&unhex("a2 72 31 b4"), b"P:internal:return:s1"])));
    let decoded = RedisInvocation::decode(&encoded).unwrap();
    assert_eq!(decoded.excluded, ["a"]);
    assert_eq!(decoded.result, Some(route));
}

#[test]
fn invocations_from_other_servers_decode_leniently() {
    // Only a json record, in a bin16, with a third item that is neither old nor new layout.
    let bytes = cat(&[
        &unhex("93 90 81 a4 6a 73 6f 6e c5 00 2e"),
        JSON_SEND,
        &unhex("c0"),
    ]);
    let invocation = RedisInvocation::decode(&bytes).unwrap();
    assert_eq!(
        invocation.record(Protocol::Json).unwrap().as_ref(),
        JSON_SEND
    );
    assert_eq!(invocation.record(Protocol::MessagePack), None);
    assert_eq!(invocation.result, None);
    for bad in [
        "91 90",
        "92 90",
        "92 91 01 80",
        "92 90 81 a4 6a 73 6f 6e a1 78",
        "92 dd ff ff ff ff",
    ] {
        assert!(RedisInvocation::decode(&unhex(bad)).is_err(), "{bad}");
    }
}

#[test]
fn completions_travel_in_the_clients_protocol() {
    let completion = RedisCompletion {
        protocol: "json".into(),
        completion: bytes::Bytes::from_static(
            b"{\"type\":3,\"invocationId\":\"r1\",\"result\":42}\x1e",
        ),
    };
    let encoded = completion.encode();
    assert_eq!(
        encoded,
        cat(&[
            &unhex("92 a4 6a 73 6f 6e c4 2b"),
            completion.completion.as_ref()
        ])
    );
    assert_eq!(RedisCompletion::decode(&encoded).unwrap(), completion);
    assert!(RedisCompletion::decode(&unhex("91 a4 6a 73 6f 6e"))
        .unwrap_err()
        .to_string()
        .contains("Insufficient items in CompletionMessage"));
}
