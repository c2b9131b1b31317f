//! The body of the backplane payload fuzz target (`fuzz/fuzz_targets/redis_payloads.rs`),
//! kept here so that the corpus replay test (`tests/fuzz_corpus.rs`) runs every committed
//! input on stable. Not an API: it exists behind the `fuzzing` feature.

use signalr_core::protocol::{InputBuffer, Protocol};

use crate::protocol::{
    decode_ack, encode_ack, GroupAction, GroupCommand, RedisCompletion, RedisInvocation,
    ResultRoute,
};

/// Records read from one payload at most (a payload of empty-looking records is not a loop).
const MAX_RECORDS: usize = 64;

/// Every payload decoder on the same bytes: hostile publications (another server's bug, a
/// stranger on the Redis) are an error, never a panic; whatever decodes encodes back to the
/// same value, in the canonical bytes; the hub-protocol records a payload carries are read
/// as a receiving server reads them. And values built from the bytes survive encoding and
/// decoding whole (which a decoder that drops a field would not).
pub fn payloads(data: &[u8]) {
    built(data);
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

/// Cuts the input into the fields of each payload type.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte() % 48).min(self.0.len());
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head.to_vec()
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

fn built(data: &[u8]) {
    let mut fields = Fields(data);
    let excluded = (0..fields.byte() % 4).map(|_| fields.string()).collect();
    let serialized = (0..fields.byte() % 3)
        .map(|_| (fields.string(), bytes::Bytes::from(fields.bytes())))
        .collect();
    let result = (fields.byte() & 1 == 1).then(|| ResultRoute {
        invocation_id: fields.string(),
        return_channel: fields.string(),
    });
    let invocation = RedisInvocation {
        excluded,
        serialized,
        result,
    };
    assert_eq!(
        RedisInvocation::decode(&invocation.encode()).as_ref(),
        Ok(&invocation)
    );
    let raw_id = u32::from_le_bytes([fields.byte(), fields.byte(), fields.byte(), fields.byte()]);
    let command = GroupCommand {
        id: raw_id as i32,
        server_name: fields.string(),
        action: if fields.byte() & 1 == 1 {
            GroupAction::Add
        } else {
            GroupAction::Remove
        },
        group: fields.string(),
        connection_id: fields.string(),
    };
    assert_eq!(
        GroupCommand::decode(&command.encode()).as_ref(),
        Ok(&command)
    );
    assert_eq!(decode_ack(&encode_ack(command.id)), Ok(command.id));
    let completion = RedisCompletion {
        protocol: fields.string(),
        completion: bytes::Bytes::from(fields.bytes()),
    };
    assert_eq!(
        RedisCompletion::decode(&completion.encode()).as_ref(),
        Ok(&completion)
    );
}
