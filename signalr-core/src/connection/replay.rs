//! Stateful reconnect bookkeeping, sans-IO: the buffer of sent messages not yet acknowledged,
//! and the count of received ones, so that a connection whose socket drops can resume on a new
//! one with nothing lost and nothing twice.
//!
//! Only hub invocation messages (Invocation, StreamItem, Completion, StreamInvocation,
//! CancelInvocation) are numbered; both sides count them implicitly from 1, in send order.

use std::collections::VecDeque;

use bytes::Bytes;

/// A Sequence the peer should never send: a protocol error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SequenceError {
    /// Ids start at 1.
    Zero,
    /// It skipped ahead of what we processed.
    Ahead,
}

#[derive(Debug)]
pub(crate) struct ReplayBuffer {
    /// Bytes of unacknowledged records past which senders wait.
    limit: usize,
    /// Unacknowledged records with their sequence ids, oldest first.
    unacked: VecDeque<(u64, Bytes)>,
    unacked_bytes: usize,
    /// The id the next record we send gets.
    next_send: u64,
    /// The highest id of a received message we processed.
    processed: u64,
    /// The id the next received message has.
    next_receive: u64,
    /// The last id we acknowledged to the peer.
    acknowledged: u64,
}

impl ReplayBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        ReplayBuffer {
            limit,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            next_send: 1,
            processed: 0,
            next_receive: 1,
            acknowledged: 0,
        }
    }

    /// Whether another record may be sent now (an empty buffer always has room, so a single
    /// record larger than the limit still goes).
    pub(crate) fn has_room(&self) -> bool {
        self.unacked.is_empty() || self.unacked_bytes < self.limit
    }

    /// Keeps a copy of a record being sent (a cheap `Bytes` clone).
    pub(crate) fn sent(&mut self, record: Bytes) {
        self.unacked_bytes += record.len();
        self.unacked.push_back((self.next_send, record));
        self.next_send += 1;
    }

    /// The peer processed everything up to `id`: forget those records. An id we never sent
    /// is refused with the number we did send.
    pub(crate) fn acked(&mut self, id: u64) -> Result<(), u64> {
        let sent = self.next_send - 1;
        if id > sent {
            return Err(sent);
        }
        while let Some((seq, record)) = self.unacked.front() {
            if *seq > id {
                break;
            }
            self.unacked_bytes -= record.len();
            self.unacked.pop_front();
        }
        Ok(())
    }

    /// What to send on a new transport: the Sequence id (the oldest unacknowledged record, or
    /// the next id when none is waiting) and the records to resend, in order.
    pub(crate) fn replay(&self) -> (u64, Vec<Bytes>) {
        let first = self.unacked.front().map_or(self.next_send, |(seq, _)| *seq);
        (first, self.unacked.iter().map(|(_, r)| r.clone()).collect())
    }

    /// A numbered message arrived: `true` to process it, `false` for a duplicate of one
    /// processed before the reconnect.
    pub(crate) fn received(&mut self) -> bool {
        let id = self.next_receive;
        self.next_receive += 1;
        if id <= self.processed {
            return false;
        }
        self.processed = id;
        true
    }

    /// The peer's Sequence: its next message has this id (it resends what we may have missed).
    pub(crate) fn sequence(&mut self, id: u64) -> Result<(), SequenceError> {
        if id == 0 {
            return Err(SequenceError::Zero);
        }
        if id > self.processed + 1 {
            return Err(SequenceError::Ahead);
        }
        self.next_receive = id;
        Ok(())
    }

    /// The Ack to send, if we processed more since the last one.
    pub(crate) fn ack_due(&mut self) -> Option<u64> {
        (self.processed > self.acknowledged).then(|| {
            self.acknowledged = self.processed;
            self.processed
        })
    }
}

/// The buffer's bookkeeping, for the fuzz targets' invariant checks.
#[cfg(feature = "fuzzing")]
pub(crate) struct ReplayView<'a> {
    pub(crate) limit: usize,
    pub(crate) unacked: &'a VecDeque<(u64, Bytes)>,
    pub(crate) unacked_bytes: usize,
    pub(crate) next_send: u64,
    pub(crate) processed: u64,
    pub(crate) acknowledged: u64,
}

#[cfg(feature = "fuzzing")]
impl ReplayBuffer {
    pub(crate) fn view(&self) -> ReplayView<'_> {
        ReplayView {
            limit: self.limit,
            unacked: &self.unacked,
            unacked_bytes: self.unacked_bytes,
            next_send: self.next_send,
            processed: self.processed,
            acknowledged: self.acknowledged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn unacknowledged_records_are_replayed_in_order() {
        let mut buffer = ReplayBuffer::new(1000);
        assert_eq!(buffer.replay(), (1, vec![]));
        for text in ["a", "b", "c"] {
            buffer.sent(record(text));
        }
        buffer.acked(1).unwrap();
        assert_eq!(buffer.replay(), (2, vec![record("b"), record("c")]));
        buffer.acked(3).unwrap();
        assert_eq!(buffer.replay(), (4, vec![]));
        // An old or repeated ack changes nothing; one for a message never sent is refused.
        buffer.acked(2).unwrap();
        assert_eq!(buffer.replay(), (4, vec![]));
        assert_eq!(buffer.acked(4), Err(3));
    }

    #[test]
    fn the_byte_limit_applies_backpressure_but_never_blocks_an_empty_buffer() {
        let mut buffer = ReplayBuffer::new(10);
        assert!(buffer.has_room());
        buffer.sent(record("0123456789abc"));
        assert!(!buffer.has_room());
        buffer.acked(1).unwrap();
        assert!(buffer.has_room());
        buffer.sent(record("12345"));
        assert!(buffer.has_room());
        buffer.sent(record("12345"));
        assert!(!buffer.has_room());
    }

    #[test]
    fn duplicates_after_a_sequence_are_dropped_and_skipping_ahead_is_an_error() {
        let mut buffer = ReplayBuffer::new(10);
        assert!(buffer.received() && buffer.received() && buffer.received());
        assert_eq!(buffer.ack_due(), Some(3));
        assert_eq!(buffer.ack_due(), None);
        // The peer reconnects and resends from 2: messages 2 and 3 are duplicates, 4 is new.
        buffer.sequence(2).unwrap();
        assert!(!buffer.received());
        assert!(!buffer.received());
        assert!(buffer.received());
        assert_eq!(buffer.ack_due(), Some(4));
        assert_eq!(buffer.sequence(6), Err(SequenceError::Ahead));
        assert_eq!(buffer.sequence(0), Err(SequenceError::Zero));
        assert_eq!(buffer.sequence(5), Ok(()));
    }
}
