//! A connection's outbound queue, and the signals that wake its two loops.
//!
//! The write loop waits on one thing: this queue's waker. Queuing a record into an empty queue,
//! the connection closing, its session (one transport) ending, and the read side moving a
//! write deadline (stateful Acks) all wake it the same way, so one wake-up costs one atomic
//! waker, not a channel's semaphore plus a cancellation token's two locks per poll. The read
//! loop has its own waker for the two signals that end it.
//!
//! The queue holds nothing when it is empty (an idle connection pays for no block of slots)
//! and gives back what a burst grew it to once it drains.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// The connection is closing: both loops end (the writer after sending what is queued).
pub(crate) const CLOSING: u8 = 1;
/// This transport is done (it failed, or a reconnect replaced it); the connection may go on.
pub(crate) const SESSION_ENDED: u8 = 2;
/// The read side moved the writer's deadlines or made room (stateful: Acks, Sequence).
pub(crate) const STEP: u8 = 4;

/// Slots a drained queue keeps; a burst's larger buffer is given back.
const KEPT_CAPACITY: usize = 8;

/// Why queuing a record failed.
pub(crate) enum PushError {
    /// The queue is at its capacity: the client reads slower than we write.
    Full(Bytes),
    /// The connection is closing: no record is accepted any more.
    Closed,
}

/// Records waiting for the write loop, bounded, with the loops' wakers.
pub(crate) struct Outbound {
    queue: Mutex<Queue>,
    /// The queue's length, kept under its lock and read without it: the writer's wait looks
    /// here, not at the queue.
    queued: AtomicUsize,
    capacity: usize,
    signals: AtomicU8,
    writer: AtomicWaker,
    reader: AtomicWaker,
    /// Senders waiting for room (`send`, never `try_send`) are woken here when a full queue
    /// drains or closes.
    room: Notify,
    /// Senders waiting for room go one at a time, in the order they came (tokio's mutex is
    /// fair): their records keep that order, and none is passed over until its deadline.
    turn: tokio::sync::Mutex<()>,
}

struct Queue {
    records: VecDeque<Bytes>,
    closed: bool,
    /// Senders inside `push_waiting`: while there are any, a new record does not take a slot
    /// ahead of them (it waits behind them, or, from `try_send`, finds the queue full).
    waiters: usize,
}

impl Outbound {
    pub(crate) fn new(capacity: usize) -> Self {
        Outbound {
            queue: Mutex::new(Queue {
                records: VecDeque::new(),
                closed: false,
                waiters: 0,
            }),
            queued: AtomicUsize::new(0),
            capacity: capacity.max(1),
            signals: AtomicU8::new(0),
            writer: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            room: Notify::new(),
            turn: tokio::sync::Mutex::const_new(()),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record; the writer is woken when the queue was empty (otherwise a wake-up is
    /// already on its way, or the writer is still taking records and will see this one).
    pub(crate) fn push(&self, record: Bytes) -> Result<(), PushError> {
        self.push_as(record, false)
    }

    fn push_as(&self, record: Bytes, waiter: bool) -> Result<(), PushError> {
        let was_empty = {
            let mut queue = self.queue();
            if queue.closed {
                return Err(PushError::Closed);
            }
            if queue.records.len() >= self.capacity || (!waiter && queue.waiters > 0) {
                return Err(PushError::Full(record));
            }
            queue.records.push_back(record);
            self.queued.store(queue.records.len(), Ordering::SeqCst);
            queue.records.len() == 1
        };
        if was_empty {
            self.writer.wake();
        }
        Ok(())
    }

    /// Queues a record, waiting up to `timeout` for room, behind the senders already
    /// waiting; `Err(Full)` when there was none by then. A timeout too large to add to the
    /// clock (`Duration::MAX` for "never") waits as good as forever.
    pub(crate) async fn push_waiting(
        &self,
        mut record: Bytes,
        timeout: std::time::Duration,
    ) -> Result<(), PushError> {
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 24 * 3600));
        self.queue().waiters += 1;
        let _waiting = Waiting(self);
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turn.lock()).await else {
            return Err(PushError::Full(record));
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Enabled before trying, so that room made between the try and the wait wakes it.
            room.as_mut().enable();
            match self.push_as(record, true) {
                Err(PushError::Full(back)) => record = back,
                done => return done,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(PushError::Full(record));
            }
        }
    }

    /// Moves up to `max` records into `batch` while `more` allows; wakes senders waiting for
    /// room when the queue was full.
    pub(crate) fn take(
        &self,
        batch: &mut Vec<Bytes>,
        max: usize,
        mut more: impl FnMut(&Bytes) -> bool,
    ) {
        let was_full = {
            let mut queue = self.queue();
            let was_full = queue.records.len() >= self.capacity;
            let mut taken = 0;
            while taken < max {
                let Some(front) = queue.records.front() else {
                    break;
                };
                if !more(front) {
                    break;
                }
                let Some(record) = queue.records.pop_front() else {
                    break;
                };
                batch.push(record);
                taken += 1;
            }
            self.queued.store(queue.records.len(), Ordering::SeqCst);
            if queue.records.is_empty() && queue.records.capacity() > KEPT_CAPACITY {
                queue.records.shrink_to(KEPT_CAPACITY);
            }
            was_full
        };
        if was_full {
            self.room.notify_waiters();
        }
    }

    /// Refuses every later record and hands back what is still queued, for the close sequence.
    pub(crate) fn close(&self) -> VecDeque<Bytes> {
        let records = {
            let mut queue = self.queue();
            queue.closed = true;
            self.queued.store(0, Ordering::SeqCst);
            std::mem::take(&mut queue.records)
        };
        self.room.notify_waiters();
        records
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0
    }

    /// Raises signals and wakes the loops they concern.
    pub(crate) fn raise(&self, signals: u8) {
        self.signals.fetch_or(signals, Ordering::SeqCst);
        self.writer.wake();
        if signals & (CLOSING | SESSION_ENDED) != 0 {
            self.reader.wake();
        }
    }

    pub(crate) fn is_raised(&self, signals: u8) -> bool {
        self.signals.load(Ordering::SeqCst) & signals != 0
    }

    /// A new transport is attached: its loops start with the session signal down.
    pub(crate) fn start_session(&self) {
        self.signals
            .fetch_and(!(SESSION_ENDED | STEP), Ordering::SeqCst);
    }

    /// The write loop's wait. `Ready` with the signals raised (`STEP` is taken down) when
    /// there is something to do: a signal, or (if `room`) a queued record.
    pub(crate) fn poll_writer(&self, cx: &mut Context<'_>, room: bool) -> Poll<u8> {
        let ready = || {
            let signals = self.signals.fetch_and(!STEP, Ordering::SeqCst);
            (signals != 0 || (room && !self.is_empty())).then_some(signals)
        };
        // Work already there needs no waker; otherwise one is registered and the look is
        // repeated, so that whatever came between the two looks wakes us.
        if let Some(signals) = ready() {
            return Poll::Ready(signals);
        }
        self.writer.register(cx.waker());
        match ready() {
            Some(signals) => Poll::Ready(signals),
            None => Poll::Pending,
        }
    }

    /// The read loop's wait for the end of its session or of the connection.
    pub(crate) fn poll_reader_stop(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.reader.register(cx.waker());
        if self.is_raised(CLOSING | SESSION_ENDED) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Counts a sender out of `push_waiting` however it leaves (done, timed out, or dropped).
struct Waiting<'a>(&'a Outbound);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queue().waiters -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;

    fn record(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn a_full_queue_refuses_and_a_closed_one_refuses_everything() {
        let outbound = Outbound::new(2);
        assert!(outbound.push(record("a")).is_ok());
        assert!(outbound.push(record("b")).is_ok());
        assert!(matches!(outbound.push(record("c")), Err(PushError::Full(r)) if r == "c"));
        let left = outbound.close();
        assert_eq!(left, [record("a"), record("b")]);
        assert!(matches!(outbound.push(record("d")), Err(PushError::Closed)));
    }

    #[test]
    fn take_stops_at_its_maximum_and_where_the_caller_says() {
        let outbound = Outbound::new(16);
        for text in ["a", "b", "c", "d"] {
            assert!(outbound.push(record(text)).is_ok());
        }
        let mut batch = Vec::new();
        outbound.take(&mut batch, 2, |_| true);
        assert_eq!(batch, [record("a"), record("b")]);
        batch.clear();
        outbound.take(&mut batch, 10, |r| r != "d");
        assert_eq!(batch, [record("c")]);
        assert!(!outbound.is_empty());
    }

    #[test]
    fn a_drained_queue_gives_back_what_a_burst_grew_it_to() {
        let outbound = Outbound::new(1024);
        for _ in 0..500 {
            assert!(outbound.push(record("x")).is_ok());
        }
        let mut batch = Vec::new();
        while !outbound.is_empty() {
            outbound.take(&mut batch, 64, |_| true);
        }
        assert_eq!(batch.len(), 500);
        assert!(outbound.queue().records.capacity() <= KEPT_CAPACITY);
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_wakes_for_a_record_into_an_empty_queue_and_for_each_signal() {
        let outbound = Arc::new(Outbound::new(8));
        for signal in [None, Some(STEP), Some(SESSION_ENDED), Some(CLOSING)] {
            let waiting = {
                let outbound = outbound.clone();
                tokio::spawn(async move { poll_fn(|cx| outbound.poll_writer(cx, true)).await })
            };
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            match signal {
                None => assert!(outbound.push(record("a")).is_ok()),
                Some(signal) => outbound.raise(signal),
            }
            let raised = tokio::time::timeout(Duration::from_secs(1), waiting)
                .await
                .expect("the writer was not woken")
                .unwrap();
            assert_eq!(raised, signal.unwrap_or(0));
            let mut batch = Vec::new();
            outbound.take(&mut batch, 8, |_| true);
            if signal == Some(SESSION_ENDED) {
                outbound.start_session();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_room_the_writer_sleeps_through_records() {
        let outbound = Arc::new(Outbound::new(8));
        assert!(outbound.push(record("a")).is_ok());
        let waiting = {
            let outbound = outbound.clone();
            tokio::spawn(async move { poll_fn(|cx| outbound.poll_writer(cx, false)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        outbound.raise(STEP);
        assert_eq!(waiting.await.unwrap(), STEP);
        // STEP is taken down by the wait that saw it.
        assert!(!outbound.is_raised(STEP));
    }

    /// A full queue of one ("a" in it), and a sender of "b" with `timeout` to wait.
    fn full_queue_and_a_waiting_sender(
        timeout: Duration,
    ) -> (
        Arc<Outbound>,
        tokio::task::JoinHandle<Result<(), PushError>>,
    ) {
        let outbound = Arc::new(Outbound::new(1));
        assert!(outbound.push(record("a")).is_ok());
        let sending = {
            let outbound = outbound.clone();
            tokio::spawn(async move { outbound.push_waiting(record("b"), timeout).await })
        };
        (outbound, sending)
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_for_room_until_its_deadline() {
        let (outbound, sending) = full_queue_and_a_waiting_sender(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!sending.is_finished());
        let mut batch = Vec::new();
        outbound.take(&mut batch, 8, |_| true);
        assert!(sending.await.unwrap().is_ok());
        // Nobody takes "b": the next sender gives up at its deadline.
        let started = tokio::time::Instant::now();
        let refused = outbound
            .push_waiting(record("c"), Duration::from_secs(10))
            .await;
        assert!(matches!(refused, Err(PushError::Full(r)) if r == "c"));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_senders_get_room_in_the_order_they_came_and_new_ones_queue_behind() {
        let (outbound, first) = full_queue_and_a_waiting_sender(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let outbound = outbound.clone();
            tokio::spawn(async move {
                outbound
                    .push_waiting(record("c"), Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A record that does not wait finds no room while others are waiting for it.
        let mut batch = Vec::new();
        outbound.take(&mut batch, 8, |_| true);
        assert!(matches!(
            outbound.push(record("x")),
            Err(PushError::Full(_))
        ));
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            outbound.take(&mut batch, 8, |_| true);
        }
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        assert_eq!(batch, [record("a"), record("b"), record("c")]);
        // Nobody waits any more: a plain push takes the free slot again.
        assert!(outbound.push(record("d")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_too_large_for_the_clock_waits_instead_of_overflowing() {
        let (outbound, sending) = full_queue_and_a_waiting_sender(Duration::MAX);
        tokio::time::sleep(Duration::from_secs(365 * 24 * 3600)).await;
        assert!(!sending.is_finished());
        outbound.close();
        assert!(matches!(sending.await.unwrap(), Err(PushError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_releases_a_waiting_sender() {
        let (outbound, sending) = full_queue_and_a_waiting_sender(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(1)).await;
        outbound.close();
        assert!(matches!(sending.await.unwrap(), Err(PushError::Closed)));
    }
}
