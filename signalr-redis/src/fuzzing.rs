//! The body of the backplane payload fuzz target (`fuzz/fuzz_targets/redis_payloads.rs`),
//! kept here so that the corpus replay test (`tests/fuzz_corpus.rs`) runs every committed
//! input on stable. Not an API: it exists behind the `fuzzing` feature.

use signalr_core::protocol::{InputBuffer, Protocol};

use crate::protocol::{decode_ack, encode_ack, GroupCommand, RedisCompletion, RedisInvocation};

/// Records read from one payload at most (a payload of empty-looking records is not a loop).
const MAX_RECORDS: usize = 64;

/// Every payload decoder on the same bytes: hostile publications (another server's bug, a
/// stranger on the Redis) are an error, never a panic; whatever decodes encodes back to the
/// same value, in the canonical bytes; the hub-protocol records a payload carries are read
/// as a receiving server reads them.
pub fn payloads(data: &[u8]) {
    if let Ok(invocation) = RedisInvocation::decode(data) {
        let encoded = invocation.encode();
        let again = RedisInvocation::decode(&encoded).expect("our own invocation payload decodes");
        assert_eq!(
            again, invocation,
            "an invocation payload round trip changed it"
        );
        assert_eq!(
            again.encode(),
            encoded,
            "invocation payload encoding is not stable"
        );
        for (protocol, record) in &invocation.serialized {
            read_records(protocol, record);
        }
    }
    if let Ok(command) = GroupCommand::decode(data) {
        let encoded = command.encode();
        let again = GroupCommand::decode(&encoded).expect("our own group command decodes");
        assert_eq!(again, command, "a group command round trip changed it");
        assert_eq!(
            again.encode(),
            encoded,
            "group command encoding is not stable"
        );
    }
    if let Ok(id) = decode_ack(data) {
        assert_eq!(
            decode_ack(&encode_ack(id)),
            Ok(id),
            "an ack round trip changed it"
        );
    }
    if let Ok(completion) = RedisCompletion::decode(data) {
        let encoded = completion.encode();
        let again = RedisCompletion::decode(&encoded).expect("our own completion payload decodes");
        assert_eq!(
            again, completion,
            "a completion payload round trip changed it"
        );
        assert_eq!(
            again.encode(),
            encoded,
            "completion payload encoding is not stable"
        );
        read_records(&completion.protocol, &completion.completion);
    }
}

/// What a receiving server does with a record in a protocol it knows: decodes it (a client
/// result's Completion) or hands it on verbatim.
fn read_records(protocol: &str, record: &bytes::Bytes) {
    let Some(protocol) = Protocol::from_name(protocol) else {
        return;
    };
    let mut input = InputBuffer::from(record.clone());
    for _ in 0..MAX_RECORDS {
        match protocol.decode(&mut input, usize::MAX) {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
}
