//! What decoding a client's invocation allocates, counted by this test binary's own global
//! allocator: what its arguments need (a JSON value's own text; for MessagePack, the record
//! they are slices of), and nothing for the method name, the invocation id or the argument
//! list while they are short (up to 24 bytes, up to two arguments). Longer ones may allocate,
//! and must still read back the same.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use signalr_core::protocol::{
    Arguments, InboundMessage, InputBuffer, Invocation, Message, NoValue, Protocol,
};

/// Counts allocations made on a thread while it has counting switched on, so the test
/// harness's own threads do not disturb the figure.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: a thread being torn down has no locals left, and is not counted.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `work` on this thread.
fn allocations_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let output = work();
    COUNTING.with(|on| on.set(false));
    (output, ALLOCATIONS.with(Cell::get))
}

fn record(protocol: Protocol, id: &str, target: &str, arguments: &[serde_json::Value]) -> Bytes {
    protocol
        .encode_to_bytes(&Message::<_, NoValue>::Invocation(Invocation {
            headers: Default::default(),
            invocation_id: Some(id.into()),
            target: target.into(),
            arguments,
            stream_ids: Vec::new(),
        }))
        .unwrap()
}

/// Decodes one record received as one chunk.
fn decode(protocol: Protocol, record: &Bytes) -> (Invocation<Arguments>, usize) {
    let mut input = InputBuffer::new();
    input.push(record.clone());
    let (message, allocations) = allocations_of(|| protocol.decode(&mut input, 1 << 20).unwrap());
    match message {
        Some(InboundMessage::Invocation(invocation)) => (invocation, allocations),
        other => panic!("not an invocation: {other:?}"),
    }
}

/// Encodes an invocation, decodes it, checks that it reads back the same and returns what the
/// decode allocated.
fn round_trip(
    protocol: Protocol,
    id: &str,
    target: &str,
    arguments: &[serde_json::Value],
) -> usize {
    let record = record(protocol, id, target, arguments);
    let (invocation, allocations) = decode(protocol, &record);
    assert_eq!(invocation.invocation_id.as_deref(), Some(id));
    assert_eq!(invocation.target, target);
    let values: Vec<serde_json::Value> = invocation
        .arguments
        .iter()
        .map(|a| a.deserialize().unwrap())
        .collect();
    assert_eq!(values, arguments);
    allocations
}

#[test]
fn a_short_invocation_allocates_only_for_its_arguments() {
    let arguments = [
        serde_json::json!("room"),
        serde_json::json!({"text": "hi", "n": 1}),
    ];
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let allocations = round_trip(protocol, "17", "SendMessage", &arguments);
        // JSON: each value owns its text. MessagePack: the values are slices of the record,
        // which is copied out of the input once, with one reference count they all share:
        // what `bytes` allocates for that is measured here rather than assumed.
        let expected = match protocol {
            Protocol::Json => arguments.len(),
            _ => {
                let record = record(protocol, "17", "SendMessage", &arguments);
                allocations_of(|| Bytes::copy_from_slice(&record).slice(1..2)).1
            }
        };
        assert!(expected >= 1);
        assert_eq!(allocations, expected, "{protocol:?}");
    }
}

#[test]
fn long_names_and_many_arguments_still_read_back() {
    let id = "an-invocation-id-longer-than-24-bytes";
    let target = "AMethodNameThatIsLongerThanTwentyFourBytes";
    let arguments: Vec<serde_json::Value> = (0..5).map(|n| serde_json::json!(n)).collect();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        round_trip(protocol, id, target, &arguments);
    }
}
