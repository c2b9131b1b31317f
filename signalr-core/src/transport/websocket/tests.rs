//! The transport over an in-memory socket: what a client sends, split anyhow, comes out as the
//! same messages; control frames are answered; violations end with the right Close frame.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::tests::client_frame;
use super::*;

const MASK: [u8; 4] = [0x9a, 0x01, 0x7c, 0xe4];
const WAIT: Duration = Duration::from_secs(5);

fn pair(
    max_message: usize,
    read_chunk: usize,
) -> (DuplexStream, WsSink<DuplexStream>, WsStream<DuplexStream>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (sink, stream) = split(server, max_message, read_chunk, 8 * 1024);
    (client, sink, stream)
}

/// The two halves over a socket that holds at most `capacity` bytes each way.
fn over_small_socket(
    capacity: usize,
) -> (DuplexStream, WsSink<DuplexStream>, WsStream<DuplexStream>) {
    let (client, server) = tokio::io::duplex(capacity);
    let (sink, stream) = split(server, 1 << 20, 4096, 8 * 1024);
    (client, sink, stream)
}

/// Polls the stream on a task of its own (answering Pings) until it ends.
fn keep_reading(mut stream: WsStream<DuplexStream>) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move { stream.next().await.is_none() })
}

async fn ping(client: &mut DuplexStream, payload: &[u8]) {
    client
        .write_all(&client_frame(0x89, payload, MASK))
        .await
        .unwrap();
}

/// Reads one unmasked server frame: (first byte, payload).
async fn server_frame(client: &mut DuplexStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = match head[1] & 0x7F {
            126 => client.read_u16().await.unwrap() as usize,
            127 => client.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0; len];
        client.read_exact(&mut payload).await.unwrap();
        (head[0], payload)
    })
    .await
    .expect("a server frame in time")
}

async fn next(stream: &mut WsStream<DuplexStream>) -> Option<io::Result<Bytes>> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream answers in time")
}

/// What a client might send in one go: every kind of frame, a fragmented message, a message
/// longer than the read chunk and one longer than 65,535 bytes.
fn conversation() -> (Vec<u8>, Vec<Vec<u8>>) {
    let big: Vec<u8> = (0..70_001).map(|i| (i % 253) as u8).collect();
    let medium = vec![b'm'; 5_000];
    let mut wire = Vec::new();
    wire.extend(client_frame(
        0x81,
        b"{\"protocol\":\"json\",\"version\":1}\x1e",
        MASK,
    ));
    wire.extend(client_frame(0x89, b"are you there", MASK)); // ping
    wire.extend(client_frame(0x82, &big, MASK));
    wire.extend(client_frame(0x01, b"hel", MASK)); // text, to be continued
    wire.extend(client_frame(0x8A, b"unsolicited", MASK)); // a pong between fragments
    wire.extend(client_frame(0x00, b"lo ", MASK));
    wire.extend(client_frame(0x80, "w\u{f6}rld".as_bytes(), MASK));
    wire.extend(client_frame(0x81, b"", MASK));
    wire.extend(client_frame(0x81, &medium, MASK));
    let messages = vec![
        b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec(),
        big,
        "hello w\u{f6}rld".as_bytes().to_vec(),
        Vec::new(),
        medium,
    ];
    (wire, messages)
}

#[tokio::test]
async fn frames_split_anywhere_make_the_same_messages() {
    let (wire, expected) = conversation();
    // Whole, one byte at a time, and in pieces of a few odd sizes.
    for piece in [wire.len(), 1, 3, 7, 1_000, 4_097] {
        let (mut client, _sink, mut stream) = pair(1 << 20, 4096);
        let writer = {
            let wire = wire.clone();
            tokio::spawn(async move {
                for chunk in wire.chunks(piece) {
                    client.write_all(chunk).await.unwrap();
                    if piece < 10 {
                        tokio::task::yield_now().await;
                    }
                }
                client
            })
        };
        for (i, want) in expected.iter().enumerate() {
            let got = next(&mut stream).await.expect("a message").unwrap();
            assert_eq!(&got[..], &want[..], "message {i}, pieces of {piece}");
        }
        let mut client = writer.await.unwrap();
        // The ping was answered with its own payload.
        assert_eq!(
            server_frame(&mut client).await,
            (0x8A, b"are you there".to_vec())
        );
        // Caught up: the connection holds no received bytes of its own.
        assert_eq!(stream.reader.pending.capacity(), 0, "pieces of {piece}");
        assert!(stream.reader.fragments.is_none());
    }
}

#[tokio::test]
async fn a_client_close_ends_the_stream_and_is_answered_with_its_code() {
    let (mut client, mut sink, mut stream) = pair(1 << 20, 4096);
    client
        .write_all(&client_frame(0x88, &[0x0F, 0xA0, b'b', b'y', b'e'], MASK))
        .await
        .unwrap();
    assert!(next(&mut stream).await.is_none());
    assert!(next(&mut stream).await.is_none(), "stays ended");
    sink.close().await;
    assert_eq!(server_frame(&mut client).await, (0x88, vec![0x0F, 0xA0]));
    // Then the server's side of the socket is shut.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(sink.feed(Bytes::from_static(b"late")).await.is_err());
}

#[tokio::test]
async fn violations_end_with_the_close_code_that_names_them() {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8",
            client_frame(0x81, &[0xff, 0xfe], MASK),
            1007,
        ),
        ("unmasked", vec![0x81, 0x01, b'x'], 1002),
        ("reserved bits", client_frame(0xC1, b"x", MASK), 1002),
        ("continuation first", client_frame(0x80, b"x", MASK), 1002),
        ("too big", client_frame(0x82, &vec![0; 70_000], MASK), 1009),
        (
            "too big in fragments",
            [
                client_frame(0x02, &vec![0; 40_000], MASK),
                client_frame(0x80, &vec![0; 40_000], MASK),
            ]
            .concat(),
            1009,
        ),
        (
            "a new message inside a fragmented one",
            [
                client_frame(0x01, b"a", MASK),
                client_frame(0x81, b"b", MASK),
            ]
            .concat(),
            1002,
        ),
        (
            "bad close code",
            client_frame(0x88, &1005u16.to_be_bytes(), MASK),
            1002,
        ),
    ];
    for (what, wire, code) in cases {
        let (mut client, mut sink, mut stream) = pair(64 * 1024, 4096);
        client.write_all(&wire).await.unwrap();
        let error = next(&mut stream).await.expect("an error").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}: {error}");
        assert!(
            next(&mut stream).await.is_none(),
            "{what}: ended after the error"
        );
        sink.close().await;
        let (first, payload) = server_frame(&mut client).await;
        assert_eq!(first, 0x88, "{what}");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code, "{what}");
        assert!(
            std::str::from_utf8(&payload[2..]).unwrap().ends_with('.'),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_socket_closed_mid_frame_is_an_error_not_a_message() {
    let (mut client, _sink, mut stream) = pair(1 << 20, 4096);
    let frame = client_frame(0x81, b"{\"type\":6}\x1e", MASK);
    client.write_all(&frame[..frame.len() - 3]).await.unwrap();
    drop(client);
    let error = next(&mut stream).await.expect("an error").unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert!(next(&mut stream).await.is_none());
}

#[tokio::test]
async fn records_go_out_as_one_frame_each_in_the_sinks_format() {
    let (mut client, mut sink, _stream) = pair(1 << 20, 4096);
    sink.feed(Bytes::from_static(b"{}\x1e")).await.unwrap();
    sink.set_transfer_format(TransferFormat::Binary);
    let long = Bytes::from(vec![7u8; 300]);
    sink.feed(long.clone()).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(server_frame(&mut client).await, (0x81, b"{}\x1e".to_vec()));
    assert_eq!(server_frame(&mut client).await, (0x82, long.to_vec()));
}

/// A Pong that arrives while the writer waits on a full socket goes out after what the writer
/// was writing, whole, and the writer still wakes when the client reads.
#[tokio::test]
async fn a_pong_while_the_writer_waits_keeps_frames_whole() {
    let (mut client, server) = tokio::io::duplex(256);
    let (mut sink, mut stream) = split(server, 1 << 20, 4096, 8 * 1024);
    let record = Bytes::from(vec![b'r'; 10_000]);
    let writing = tokio::spawn({
        let record = record.clone();
        async move {
            sink.feed(record).await.unwrap();
            sink.flush().await.unwrap();
            sink
        }
    });
    // Let the writer fill the socket and wait.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writing.is_finished());
    client
        .write_all(&client_frame(0x89, b"p", MASK))
        .await
        .unwrap();
    client
        .write_all(&client_frame(0x81, b"after", MASK))
        .await
        .unwrap();
    assert_eq!(&next(&mut stream).await.unwrap().unwrap()[..], b"after");
    assert_eq!(server_frame(&mut client).await, (0x81, record.to_vec()));
    assert_eq!(server_frame(&mut client).await, (0x8A, b"p".to_vec()));
    tokio::time::timeout(WAIT, writing).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_read_of_control_frames_only_leaves_no_buffer() {
    use futures_util::FutureExt;

    let (mut client, _sink, mut stream) = pair(1 << 20, 4096);
    client
        .write_all(&client_frame(0x89, b"ping", MASK))
        .await
        .unwrap();
    assert!(stream.next().now_or_never().is_none(), "no message yet");
    assert_eq!(server_frame(&mut client).await, (0x8A, b"ping".to_vec()));
    assert_eq!(stream.reader.pending.capacity(), 0);
}

#[tokio::test]
async fn the_write_buffer_of_a_burst_is_given_back() {
    let (mut client, mut sink, _stream) = pair(1 << 20, 4096);
    let reading = tokio::spawn(async move {
        let mut all = vec![0u8; 10_004 + 5];
        client.read_exact(&mut all).await.unwrap();
        all
    });
    sink.feed(Bytes::from(vec![b'b'; 10_000])).await.unwrap();
    sink.flush().await.unwrap();
    // The next record goes into a buffer of its own size, not into the burst's.
    sink.feed(Bytes::from_static(b"{}\x1e")).await.unwrap();
    assert!(
        lock(&sink.shared).out.capacity() < KEEP_BUFFER,
        "capacity {}",
        lock(&sink.shared).out.capacity()
    );
    sink.flush().await.unwrap();
    let all = reading.await.unwrap();
    assert_eq!(&all[10_004..], b"\x81\x03{}\x1e");
}

/// A client that floods Pings and never reads: the server keeps one Pong at most besides
/// what the socket holds, and answers the latest Ping once the client reads.
#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_bounded() {
    let (mut client, sink, stream) = over_small_socket(256);
    let reading = keep_reading(stream);
    for i in 0..2_000u32 {
        ping(&mut client, &i.to_be_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    {
        let shared = lock(&sink.shared);
        assert!(
            shared.out.len() <= 64,
            "{} bytes of Pongs buffered",
            shared.out.len()
        );
    }
    // Reading, the client gets Pongs only, ending with the answer to its last Ping.
    let mut pongs = 0;
    loop {
        let (first, payload) = server_frame(&mut client).await;
        assert_eq!(first, 0x8A);
        pongs += 1;
        if payload == 1_999u32.to_be_bytes() {
            break;
        }
    }
    assert!(
        pongs < 2_000,
        "the Pongs of a flood are coalesced ({pongs})"
    );
    reading.abort();
}

/// The socket is full when a Ping arrives and the writer has nothing to write: the reader
/// writes the Pong itself once the client reads, without waiting for the writer.
#[tokio::test]
async fn a_pong_the_socket_could_not_take_goes_out_when_it_can() {
    let (mut client, mut sink, stream) = over_small_socket(64);
    // 2 bytes of header and 62 of payload: the socket is exactly full, the writer done.
    sink.feed(Bytes::from(vec![b'f'; 62])).await.unwrap();
    sink.flush().await.unwrap();
    let reading = keep_reading(stream);
    ping(&mut client, b"late").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server_frame(&mut client).await, (0x81, vec![b'f'; 62]));
    assert_eq!(server_frame(&mut client).await, (0x8A, b"late".to_vec()));
    reading.abort();
}

/// A Ping that arrives while our Close waits on a full socket is not answered after it.
#[tokio::test]
async fn nothing_follows_our_close() {
    let (mut client, mut sink, stream) = over_small_socket(64);
    sink.feed(Bytes::from(vec![b'r'; 200])).await.unwrap();
    let closing = tokio::spawn(async move { sink.close().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reading = keep_reading(stream);
    ping(&mut client, b"p").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(server_frame(&mut client).await, (0x81, vec![b'r'; 200]));
    assert_eq!(server_frame(&mut client).await.0, 0x88);
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "after our Close: {rest:02x?}");
    closing.await.unwrap();
    reading.abort();
}

/// A message is never handed over in a buffer much larger than itself (at most 4 KiB or
/// twice its length), whatever read it arrived in: MessagePack arguments share their
/// message, so a small one kept by a method must not pin the buffer a large frame was read
/// into. `try_into_mut` succeeds only for a buffer nothing else shares, and its capacity is
/// what remains of that buffer from the message on.
#[tokio::test]
async fn a_small_message_after_a_large_frame_does_not_share_its_buffer() {
    let large = vec![b'L'; 120_000];
    let small: &[u8] = b"small";
    let mut wire = client_frame(0x82, &large, MASK);
    for _ in 0..3 {
        wire.extend(client_frame(0x82, small, MASK));
    }
    // The large frame's head first, so that the rest of it, and the small frames after it,
    // arrive in the reader's own buffer, sized for the large one.
    for head in [100, 5_000, 60_000] {
        let (mut client, _sink, mut stream) = pair(1 << 20, 4096);
        let (first, rest) = wire.split_at(head);
        client.write_all(first).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(rest).await.unwrap();
        let mut messages = Vec::new();
        for _ in 0..4 {
            messages.push(next(&mut stream).await.expect("a message").unwrap());
        }
        assert_eq!(messages[0].len(), large.len());
        drop(messages.remove(0));
        for (i, message) in messages.into_iter().enumerate() {
            assert_eq!(&message[..], small);
            let own = message
                .try_into_mut()
                .unwrap_or_else(|_| panic!("message {i} shares a buffer (head {head})"));
            assert!(
                own.capacity() <= KEEP_BUFFER.max(2 * small.len()),
                "message {i} holds {} bytes (head {head})",
                own.capacity()
            );
        }
    }
}
