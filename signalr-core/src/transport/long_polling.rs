//! Long polling: records wait in a per-connection queue until the client's next GET takes them
//! all. One poll at a time: a newer poll ends the older one (with 204), as in the reference.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::TransportSink;
use crate::protocol::TransferFormat;

/// What one poll request gets.
#[derive(Debug)]
pub(crate) enum PollOutcome {
    /// Every record queued so far (200).
    Data(Bytes),
    /// Nothing arrived within the poll timeout (200, empty): the client polls again.
    Empty,
    /// The connection is over and everything was delivered (204).
    Finished,
    /// A newer poll took over (204).
    Superseded,
}

/// Records waiting for the next poll, shared by the sink and the poll requests.
pub(crate) struct PollQueue {
    state: Mutex<PollState>,
    /// Data arrived, the connection closed, or a newer poll started.
    changed: Notify,
    /// A poll took the queued records: room for more.
    drained: Notify,
    /// Bytes that may wait for a poll before the writer has to wait too.
    limit: usize,
}

struct PollState {
    records: BytesMut,
    closed: bool,
    generation: u64,
    polling: bool,
    last_poll_end: Instant,
}

impl PollQueue {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(PollQueue {
            state: Mutex::new(PollState {
                records: BytesMut::new(),
                closed: false,
                generation: 0,
                polling: false,
                last_poll_end: Instant::now(),
            }),
            changed: Notify::new(),
            drained: Notify::new(),
            limit: limit.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves one poll: returns at once when records are queued, else waits up to `timeout`.
    pub(crate) async fn poll(&self, timeout: Duration) -> PollOutcome {
        let generation = {
            let mut state = self.lock();
            state.generation += 1;
            state.polling = true;
            state.generation
        };
        // Ends the poll however it ends: when its request goes away mid-wait (the client
        // vanished), hyper drops this future, and the poll must still count as over, or the
        // watchdog would wait for it forever and the connection would never be let go.
        let _in_flight = PollInFlight {
            queue: self,
            generation,
        };
        // Wake an older poll so that it sees it was superseded.
        self.changed.notify_waiters();
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.generation != generation {
                    break PollOutcome::Superseded;
                }
                if !state.records.is_empty() {
                    // Taken whole, so that the queue keeps no part of the buffer between polls.
                    break PollOutcome::Data(std::mem::take(&mut state.records).freeze());
                }
                if state.closed {
                    break PollOutcome::Finished;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break PollOutcome::Empty;
            }
        };
        outcome
    }

    /// Completes with `true` once no poll has been in flight for `limit` (the client stopped
    /// polling), or with `false` when the connection closed first. One timer at a time, armed
    /// for exactly the time left: an idle connection costs no periodic wake-ups.
    pub(crate) async fn stopped_polling(&self, limit: Duration) -> bool {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let rest = {
                let state = self.lock();
                if state.closed {
                    return false;
                }
                if state.polling {
                    None
                } else {
                    match limit.checked_sub(state.last_poll_end.elapsed()) {
                        Some(rest) if !rest.is_zero() => Some(rest),
                        _ => return true,
                    }
                }
            };
            match rest {
                // A poll is in flight: nothing can expire before it ends.
                None => drained.await,
                Some(rest) => tokio::time::sleep(rest).await,
            }
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }
}

/// A poll in flight; dropping it (the poll answered, or its request abandoned) ends it.
struct PollInFlight<'a> {
    queue: &'a PollQueue,
    generation: u64,
}

impl Drop for PollInFlight<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.queue.lock();
            if state.generation == self.generation {
                state.polling = false;
                state.last_poll_end = Instant::now();
            }
        }
        self.queue.drained.notify_waiters();
    }
}

/// The sending half: flushed records go into the poll queue.
pub(crate) struct LongPollSink {
    queue: Arc<PollQueue>,
    pending: BytesMut,
}

impl LongPollSink {
    pub(crate) fn new(queue: Arc<PollQueue>) -> Self {
        LongPollSink {
            queue,
            pending: BytesMut::new(),
        }
    }
}

impl TransportSink for LongPollSink {
    fn supports(&self, _format: TransferFormat) -> bool {
        true
    }

    fn set_transfer_format(&mut self, _format: TransferFormat) {}

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        self.pending.put_slice(&record);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        loop {
            let drained = self.queue.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut state = self.queue.lock();
                if state.closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "connection closed",
                    ));
                }
                if state.records.is_empty() {
                    // Moved, not copied; and the sink keeps no buffer sized by its largest batch.
                    state.records = std::mem::take(&mut self.pending);
                    break;
                }
                if state.records.len() < self.queue.limit {
                    state.records.put_slice(&std::mem::take(&mut self.pending));
                    break;
                }
            }
            // Past the limit, wait for a poll (the connection core bounds the wait).
            drained.await;
        }
        self.queue.changed.notify_waiters();
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        self.queue.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(15);

    /// A client that vanishes mid-poll: hyper drops the poll's future. Before, the poll stayed
    /// "in flight" forever, the watchdog never fired, and the connection (3.5 KiB each in the
    /// soak) was never let go.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_poll_ends_so_the_watchdog_lets_the_client_go() {
        let queue = PollQueue::new(1024);
        let mut poll = Box::pin(queue.poll(Duration::from_secs(90)));
        assert!(futures_util::FutureExt::now_or_never(poll.as_mut()).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(poll);
        let started = Instant::now();
        let stopped = tokio::time::timeout(Duration::from_secs(60), queue.stopped_polling(LIMIT))
            .await
            .expect("the watchdog fires");
        assert!(stopped);
        assert_eq!(started.elapsed(), LIMIT);
    }

    /// A poll that is still waiting keeps the client: nothing expires before it ends.
    #[tokio::test(start_paused = true)]
    async fn a_poll_in_flight_holds_off_the_watchdog_until_it_ends() {
        let queue = PollQueue::new(1024);
        let poll = queue.poll(Duration::from_secs(90));
        let watchdog = queue.stopped_polling(LIMIT);
        let started = Instant::now();
        let (outcome, stopped) = tokio::time::timeout(Duration::from_secs(600), async {
            tokio::join!(poll, watchdog)
        })
        .await
        .expect("the watchdog fires after the poll");
        assert!(matches!(outcome, PollOutcome::Empty));
        assert!(stopped);
        assert_eq!(started.elapsed(), Duration::from_secs(90) + LIMIT);
    }

    /// Between polls neither the sink nor the queue keeps a buffer: one kept with the capacity
    /// of the largest batch so far would stay allocated for the connection's life, wherever
    /// the allocator put it during a burst (the soak's pages held after the churn).
    #[tokio::test]
    async fn no_buffer_is_kept_between_polls() {
        let queue = PollQueue::new(1 << 20);
        let mut sink = LongPollSink::new(queue.clone());
        for batch in [1usize, 50, 3] {
            for n in 0..batch {
                sink.feed(Bytes::from(format!("record {n}\u{1e}")))
                    .await
                    .unwrap();
            }
            sink.flush().await.unwrap();
            assert_eq!(
                sink.pending.capacity(),
                0,
                "the sink keeps nothing after a flush"
            );
            match queue.poll(Duration::from_secs(1)).await {
                PollOutcome::Data(data) => {
                    let expected: String =
                        (0..batch).map(|n| format!("record {n}\u{1e}")).collect();
                    assert_eq!(data, expected.as_bytes());
                }
                _ => panic!("the batch is delivered"),
            }
            assert_eq!(
                queue.lock().records.capacity(),
                0,
                "the queue keeps nothing"
            );
        }
        // Records flushed while earlier ones wait are appended, in order.
        sink.feed(Bytes::from_static(b"a\x1e")).await.unwrap();
        sink.flush().await.unwrap();
        sink.feed(Bytes::from_static(b"b\x1e")).await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(sink.pending.capacity(), 0);
        match queue.poll(Duration::from_secs(1)).await {
            PollOutcome::Data(data) => assert_eq!(data, &b"a\x1eb\x1e"[..]),
            _ => panic!("both are delivered"),
        }
    }

    /// Past the queue's limit a flush waits for a poll, then adds its records after those the
    /// poll took: nothing lost, nothing twice, in order.
    #[tokio::test(start_paused = true)]
    async fn a_flush_past_the_limit_waits_for_a_poll() {
        let queue = PollQueue::new(4);
        let mut sink = LongPollSink::new(queue.clone());
        sink.feed(Bytes::from_static(b"first\x1e")).await.unwrap();
        sink.flush().await.unwrap();
        sink.feed(Bytes::from_static(b"second\x1e")).await.unwrap();
        let mut second = Box::pin(sink.flush());
        assert!(
            futures_util::FutureExt::now_or_never(second.as_mut()).is_none(),
            "the queue holds more than its limit: the flush waits"
        );
        match queue.poll(Duration::from_secs(1)).await {
            PollOutcome::Data(data) => assert_eq!(data, &b"first\x1e"[..]),
            _ => panic!("the first batch is delivered"),
        }
        tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("a poll made room")
            .unwrap();
        match queue.poll(Duration::from_secs(1)).await {
            PollOutcome::Data(data) => assert_eq!(data, &b"second\x1e"[..]),
            _ => panic!("the second batch is delivered"),
        }
        assert_eq!(sink.pending.capacity(), 0);
    }
}
