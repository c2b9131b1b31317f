//! The connection as a state machine, sans IO (the shape of quinn-proto's `Connection`).
//!
//! It holds no socket, spawns no task and reads no clock. A driver hands it events (bytes
//! received, a record being sent, a write done, the transport lost or replaced, the current
//! time) and asks it what to do: [`poll_event`](ConnectionMachine::poll_event) for the
//! handshake and the hub messages to dispatch, [`poll_transmit`](ConnectionMachine::poll_transmit)
//! for records of its own to write (handshake response, Ping, Ack, Sequence and the replay),
//! [`poll_timeout`](ConnectionMachine::poll_timeout) for when to wake it, and
//! [`ending`](ConnectionMachine::ending) for the Close to send once it decided to end.
//!
//! Every rule about time lives here, so each is a short test that moves `now` by hand:
//!
//! | rule | counted from | long polling |
//! |---|---|---|
//! | handshake timeout (15 s) | the transport opening | same |
//! | keep-alive Ping (15 s) | the last write of any kind | none: each poll is its own keep-alive |
//! | client timeout (30 s) | the last *complete* message received | none: the missing-poll rule instead |
//! | Ack (stateful, 1 s) | the first message processed since the last Ack | same |
//! | reconnect grace (disconnect timeout, 15 s) | the transport dropping (stateful) | same |

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::replay::ReplayBuffer;
use super::CLOSED_WITH_ERROR;
use crate::options::HubOptions;
use crate::protocol::{
    decode_handshake_request, encode_handshake_response, Close, HandshakeError, HandshakeRequest,
    InboundMessage, InputBuffer, Message, NoValue, Protocol, ProtocolError,
};
use crate::transport::TransportKind;

/// How long a stateful connection waits before acknowledging what it processed, so that a
/// burst of messages costs one Ack.
pub(crate) const ACK_DELAY: Duration = Duration::from_secs(1);

/// What the machine is configured with; derived from the hub's options and the transport.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Ping after this long without a write; `None` where the transport keeps itself alive.
    pub(crate) keep_alive: Option<Duration>,
    /// End the connection after this long without a complete message; `None` on long
    /// polling, which the reference does not time out by pings either.
    pub(crate) client_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) detailed_errors: bool,
    /// How long a stateful connection waits for a new transport after losing one.
    pub(crate) reconnect_grace: Duration,
    /// The hub's tallies, shared by every connection of every transport.
    pub(crate) counters: Arc<Counters>,
    /// The transport hands over each message in an allocation of its own (WebSockets), so
    /// values decoded from it may keep slices of it instead of copies (see
    /// [`InputBuffer::keeping_chunks`]).
    pub(crate) chunks_kept: bool,
}

/// What a hub counts about its connections for the operator.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections closed because they read slower than the hub wrote to them.
    pub(crate) slow_client_closes: AtomicU64,
}

impl Config {
    pub(crate) fn new(
        options: &HubOptions,
        transport: TransportKind,
        counters: Arc<Counters>,
    ) -> Self {
        let inherent_keep_alive = transport == TransportKind::LongPolling;
        Config {
            keep_alive: (!inherent_keep_alive).then_some(options.keep_alive_interval),
            client_timeout: (!inherent_keep_alive).then_some(options.client_timeout),
            handshake_timeout: options.handshake_timeout,
            max_message_size: options.max_receive_message_size,
            detailed_errors: options.enable_detailed_errors,
            reconnect_grace: options.disconnect_timeout,
            counters,
            chunks_kept: transport == TransportKind::WebSockets,
        }
    }
}

/// What the driver must act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// A whole handshake request arrived: answer it with
    /// [`accept_handshake`](ConnectionMachine::accept_handshake) or
    /// [`refuse_handshake`](ConnectionMachine::refuse_handshake).
    Handshake(HandshakeRequest),
    /// A hub message for the dispatcher (Ping, Ack and Sequence never leave the machine).
    Message(InboundMessage),
    /// The client sent Close, with its error if any.
    ClientClosed(Option<String>),
}

/// Why the machine ended the connection: the Close to send and the disconnect error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Sent to the client (none when the handshake never completed: that refusal is a
    /// handshake response, already queued as a transmit).
    pub(crate) close: Option<Close>,
    /// What `on_disconnected` hears.
    pub(crate) error: String,
    /// The client was let go for silence (the client timeout, or no reconnect in time).
    pub(crate) timed_out: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake {
        deadline: Instant,
    },
    Open,
    /// Stateful reconnect: the transport dropped; the connection waits for another.
    Detached {
        deadline: Instant,
    },
    Ended,
}

/// One connection's protocol state: handshake, framing, timers, Ack/Sequence and the replay.
pub(crate) struct ConnectionMachine {
    /// Shared by every connection of a hub on the same transport.
    config: Arc<Config>,
    phase: Phase,
    protocol: Option<Protocol>,
    input: InputBuffer,
    /// When the last complete message arrived: the client timeout counts from here.
    last_received: Instant,
    /// A hub message is with the dispatcher: the client timeout is suspended until it returns.
    dispatching: bool,
    /// When the last write started: the keep-alive counts from here.
    last_written: Instant,
    /// Boxed: most connections are not stateful, and an idle connection should be small.
    replay: Option<Box<ReplayBuffer>>,
    ack_deadline: Option<Instant>,
    transmit: VecDeque<Bytes>,
    ending: Option<Box<Ending>>,
}

impl ConnectionMachine {
    /// A connection whose transport just opened at `now`.
    pub(crate) fn new(config: Arc<Config>, now: Instant) -> Self {
        let deadline = now + config.handshake_timeout;
        let input = if config.chunks_kept {
            InputBuffer::keeping_chunks()
        } else {
            InputBuffer::new()
        };
        ConnectionMachine {
            config,
            phase: Phase::Handshake { deadline },
            protocol: None,
            input,
            last_received: now,
            dispatching: false,
            last_written: now,
            replay: None,
            ack_deadline: None,
            transmit: VecDeque::new(),
            ending: None,
        }
    }

    pub(crate) fn is_stateful(&self) -> bool {
        self.replay.is_some()
    }

    /// Bytes from the transport, in any chunking. Taken even after the end, so that
    /// [`client_close_in_input`](Self::client_close_in_input) can find a Close that arrived
    /// just before the transport went (the driver stops reading at the end).
    pub(crate) fn handle_bytes(&mut self, chunk: Bytes) {
        self.input.push(chunk);
    }

    /// The next thing for the driver to do with what was received, if any.
    pub(crate) fn poll_event(&mut self, now: Instant) -> Option<Event> {
        loop {
            match self.phase {
                Phase::Ended => return None,
                Phase::Handshake { .. } => {
                    return match decode_handshake_request(
                        &mut self.input,
                        self.config.max_message_size,
                    ) {
                        Ok(Some(request)) => Some(Event::Handshake(request)),
                        Ok(None) => None,
                        Err(error) => {
                            let mut message = error.to_string();
                            if let (true, HandshakeError::Malformed(detail)) =
                                (self.config.detailed_errors, &error)
                            {
                                message = format!("{message} InvalidDataException: {detail}");
                            }
                            self.refuse_handshake(&message);
                            None
                        }
                    };
                }
                Phase::Open | Phase::Detached { .. } => {}
            }
            let protocol = self.protocol?;
            let message = match protocol.decode(&mut self.input, self.config.max_message_size) {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(error) => {
                    let detail = match &error {
                        ProtocolError::MessageTooLarge { .. } => format!(
                            "InvalidDataException: {error} The message size can be configured in AddHubOptions."
                        ),
                        _ => format!("InvalidDataException: {error}"),
                    };
                    self.fail(&detail, error.to_string());
                    return None;
                }
            };
            self.last_received = now;
            match message {
                Message::Ping => continue,
                Message::Close(close) => {
                    self.phase = Phase::Ended;
                    return Some(Event::ClientClosed(close.error));
                }
                Message::Ack(id) => {
                    self.ack(id);
                    continue;
                }
                Message::Sequence(id) => {
                    self.sequence(id);
                    continue;
                }
                message => {
                    if let Some(replay) = &mut self.replay {
                        if !replay.received() {
                            // A duplicate the client resent after a reconnect.
                            continue;
                        }
                        self.ack_deadline.get_or_insert(now + ACK_DELAY);
                    }
                    self.dispatching = true;
                    return Some(Event::Message(message));
                }
            }
        }
    }

    /// The hub finished with the last message at `now`. The client timeout does not run while
    /// a message is being dispatched (the reader is not reading then, so the client's pings
    /// wait unread behind it), and restarts from here, as in the reference.
    pub(crate) fn dispatched(&mut self, now: Instant) {
        if std::mem::take(&mut self.dispatching) && self.phase == Phase::Open {
            self.last_received = now;
        }
    }

    /// Acks and Sequences only mean something on a stateful connection; elsewhere they are
    /// ignored, as in the reference.
    fn ack(&mut self, id: u64) {
        let Some(replay) = &mut self.replay else {
            return;
        };
        if let Err(sent) = replay.acked(id) {
            let text = format!("Ack ID {id} is greater than the number of messages sent ({sent}).");
            self.fail(&format!("InvalidDataException: {text}"), text);
        }
    }

    fn sequence(&mut self, id: u64) {
        let Some(replay) = &mut self.replay else {
            return;
        };
        let text = match replay.sequence(id) {
            Ok(()) => return,
            Err(super::replay::SequenceError::Zero) => {
                "Sequence ID 0 is invalid: sequence ids start at 1.".to_owned()
            }
            Err(super::replay::SequenceError::Ahead) => {
                "Sequence ID greater than amount of messages we've received.".to_owned()
            }
        };
        self.fail(&format!("InvalidDataException: {text}"), text);
    }

    /// Ends the connection for a protocol-level reason: a Close with the generic error
    /// (details only when enabled), and `error` for the disconnect hook.
    fn fail(&mut self, detail: &str, error: String) {
        self.end(error_close(self.config.detailed_errors, detail), error);
    }

    fn end(&mut self, close: Close, error: String) {
        self.phase = Phase::Ended;
        self.ending.get_or_insert(Box::new(Ending {
            close: Some(close),
            error,
            timed_out: false,
        }));
    }

    /// The handshake chose `protocol`; `replay_limit` turns stateful reconnect on.
    pub(crate) fn accept_handshake(
        &mut self,
        now: Instant,
        protocol: Protocol,
        replay_limit: Option<usize>,
    ) {
        self.protocol = Some(protocol);
        self.replay = replay_limit.map(|limit| Box::new(ReplayBuffer::new(limit)));
        self.phase = Phase::Open;
        self.last_received = now;
        self.last_written = now;
        self.transmit.push_back(encode_handshake_response(None));
    }

    /// Refuses the handshake: the response carries `message`, then the transport closes.
    pub(crate) fn refuse_handshake(&mut self, message: &str) {
        self.transmit
            .push_back(encode_handshake_response(Some(message)));
        self.phase = Phase::Ended;
        self.ending.get_or_insert(Box::new(Ending {
            close: None,
            error: message.to_owned(),
            timed_out: false,
        }));
    }

    /// A record from the hub is being written at `now`. Stateful connections keep a copy
    /// until the client acknowledges it.
    pub(crate) fn on_send(&mut self, now: Instant, record: &Bytes) {
        if let Some(replay) = &mut self.replay {
            replay.sent(record.clone());
        }
        self.last_written = now;
    }

    /// Whether hub records may be written now: a stateful connection past its replay limit
    /// waits for the client's acks.
    pub(crate) fn has_room(&self) -> bool {
        self.replay.as_deref().is_none_or(ReplayBuffer::has_room)
    }

    /// What the write side needs at one wake-up: the machine's own records are appended to
    /// `batch`, and it learns whether hub records may go out and when to wake next.
    pub(crate) fn writer_step(
        &mut self,
        now: Instant,
        batch: &mut Vec<Bytes>,
    ) -> (bool, Option<Instant>) {
        if !self.transmit.is_empty() {
            self.last_written = now;
            batch.extend(self.transmit.drain(..));
        }
        (self.has_room(), self.write_deadline())
    }

    /// A record of the machine's own to write, oldest first. Taking it counts as a write.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let record = self.transmit.pop_front()?;
        self.last_written = now;
        Some(record)
    }

    /// When the machine next needs [`handle_timeout`](Self::handle_timeout): the earliest of
    /// the read and write deadlines.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.read_deadline(), self.write_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadlines that end reading: handshake, client timeout, reconnect grace.
    pub(crate) fn read_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake { deadline } | Phase::Detached { deadline } => Some(deadline),
            Phase::Open if self.dispatching => None,
            Phase::Open => self.config.client_timeout.map(|t| self.last_received + t),
            Phase::Ended => None,
        }
    }

    /// The deadlines that make the writer write: keep-alive and Ack.
    pub(crate) fn write_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Open {
            return None;
        }
        let keep_alive = self.config.keep_alive.map(|k| self.last_written + k);
        match (keep_alive, self.ack_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: applies every rule whose deadline is at or before `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Ended => {}
            Phase::Handshake { deadline } => {
                if now >= deadline {
                    self.refuse_handshake(&HandshakeError::TooLarge.to_string());
                }
            }
            Phase::Detached { deadline } => {
                if now >= deadline {
                    self.phase = Phase::Ended;
                    self.ending.get_or_insert(Box::new(Ending {
                        close: None,
                        error: "the client did not reconnect in time".to_owned(),
                        timed_out: true,
                    }));
                }
            }
            Phase::Open => {
                if !self.dispatching
                    && self
                        .config
                        .client_timeout
                        .is_some_and(|t| now >= self.last_received + t)
                {
                    self.fail(
                        "OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.",
                        "client timeout".to_owned(),
                    );
                    if let Some(ending) = self.ending.as_deref_mut() {
                        ending.timed_out = true;
                    }
                    return;
                }
                let protocol = self.protocol.expect("an open connection has a protocol");
                if self.ack_deadline.is_some_and(|d| now >= d) {
                    self.ack_deadline = None;
                    if let Some(id) = self.replay.as_deref_mut().and_then(ReplayBuffer::ack_due) {
                        self.transmit
                            .push_back(encode_own(protocol, Message::Ack(id)));
                    }
                }
                // Anything queued goes out now and counts as the write that keeps it alive.
                if self.transmit.is_empty()
                    && self
                        .config
                        .keep_alive
                        .is_some_and(|k| now >= self.last_written + k)
                {
                    self.transmit.push_back(protocol.ping_record());
                }
            }
        }
    }

    /// The transport failed at `now`. A stateful connection waits for a new one (until the
    /// reconnect grace runs out) and returns `true`; any other ends.
    pub(crate) fn transport_lost(&mut self, now: Instant, error: &str) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        if self.replay.is_some() {
            self.phase = Phase::Detached {
                deadline: now + self.config.reconnect_grace,
            };
            // Pings and Acks meant for the old transport are stale.
            self.transmit.clear();
            return true;
        }
        self.phase = Phase::Ended;
        self.ending.get_or_insert(Box::new(Ending {
            close: None,
            error: error.to_owned(),
            timed_out: false,
        }));
        false
    }

    /// A reconnecting client's new transport took over at `now`: it first gets a Sequence
    /// with the oldest unacknowledged id, then every record it has not acknowledged.
    /// Received input belonging to the old transport is discarded.
    pub(crate) fn transport_replaced(&mut self, now: Instant) {
        let (Some(replay), Some(protocol)) = (&self.replay, self.protocol) else {
            return;
        };
        if matches!(self.phase, Phase::Ended | Phase::Handshake { .. }) {
            return;
        }
        let (first, records) = replay.replay();
        self.transmit.clear();
        self.transmit
            .push_back(encode_own(protocol, Message::Sequence(first)));
        self.transmit.extend(records);
        self.input.clear();
        self.phase = Phase::Open;
        self.last_received = now;
        self.last_written = now;
    }

    /// The server ends the connection (shutdown, a slow client, an expired identity).
    /// The first reason given wins; a connection that never completed its handshake (or
    /// whose transport failed) gets no Close record.
    pub(crate) fn close(&mut self, close: Close, error: Option<String>) {
        self.phase = Phase::Ended;
        let close = self.protocol.is_some().then_some(close);
        self.ending.get_or_insert(Box::new(Ending {
            close,
            error: error.unwrap_or_default(),
            timed_out: false,
        }));
    }

    /// The hub's tallies.
    pub(crate) fn counters(&self) -> &Counters {
        &self.config.counters
    }

    /// Whether Close messages and error Completions may carry details.
    pub(crate) fn detailed_errors(&self) -> bool {
        self.config.detailed_errors
    }

    /// Looks through input not yet decoded for the client's own Close (`Some(error)`): a
    /// client that posts Close and then drops its transport ended gracefully. Only what is
    /// already buffered; any size limit was enforced when it was read.
    pub(crate) fn client_close_in_input(&mut self) -> Option<Option<String>> {
        let protocol = self.protocol?;
        while let Ok(Some(message)) = protocol.decode(&mut self.input, usize::MAX) {
            if let Message::Close(close) = message {
                return Some(close.error);
            }
        }
        None
    }

    /// Why the connection ended, once it has.
    pub(crate) fn ending(&self) -> Option<&Ending> {
        self.ending.as_deref()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The replay buffer's bookkeeping (stateful connections), for the fuzz targets.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn replay_view(&self) -> Option<super::replay::ReplayView<'_>> {
        self.replay.as_deref().map(ReplayBuffer::view)
    }
}

fn encode_own(protocol: Protocol, message: Message<NoValue, NoValue>) -> Bytes {
    protocol
        .encode_to_bytes(&message)
        .expect("Ack, Sequence and Close always encode")
}

/// The Close sent for a connection-level error: generic text, details only when enabled.
pub(crate) fn error_close(detailed: bool, detail: &str) -> Close {
    let error = if detailed {
        format!("{CLOSED_WITH_ERROR} {detail}")
    } else {
        CLOSED_WITH_ERROR.to_owned()
    };
    Close {
        error: Some(error),
        allow_reconnect: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const PING: &[u8] = b"{\"type\":6}\x1e";

    fn config(transport: TransportKind) -> Arc<Config> {
        let options = HubOptions {
            enable_detailed_errors: true,
            ..HubOptions::default()
        };
        Arc::new(Config::new(&options, transport, Arc::default()))
    }

    /// A JSON connection whose handshake completed at `t0`, its response already taken.
    fn open(transport: TransportKind, stateful: bool) -> (ConnectionMachine, Instant) {
        let t0 = Instant::now();
        let mut machine = ConnectionMachine::new(config(transport), t0);
        machine.handle_bytes(Bytes::from_static(
            b"{\"protocol\":\"json\",\"version\":2}\x1e",
        ));
        assert!(matches!(machine.poll_event(t0), Some(Event::Handshake(_))));
        machine.accept_handshake(t0, Protocol::Json, stateful.then_some(100_000));
        assert_eq!(machine.poll_transmit(t0).as_deref(), Some(&b"{}\x1e"[..]));
        (machine, t0)
    }

    fn receive(machine: &mut ConnectionMachine, now: Instant, bytes: &'static [u8]) -> Vec<Event> {
        machine.handle_bytes(Bytes::from_static(bytes));
        std::iter::from_fn(|| machine.poll_event(now)).collect()
    }

    fn transmits(machine: &mut ConnectionMachine, now: Instant) -> Vec<Bytes> {
        std::iter::from_fn(|| machine.poll_transmit(now)).collect()
    }

    fn close_error(machine: &ConnectionMachine) -> String {
        let ending = machine.ending().expect("the connection ended");
        ending
            .close
            .clone()
            .expect("a Close is sent")
            .error
            .unwrap()
    }

    #[test]
    fn keep_alive_pings_when_the_interval_passes_without_a_write_counted_from_the_last_write() {
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        assert_eq!(machine.write_deadline(), Some(t0 + 15 * SECOND));
        // A hub record at 10 s moves the next Ping to 25 s.
        machine.on_send(t0 + 10 * SECOND, &Bytes::from_static(b"x"));
        assert_eq!(machine.write_deadline(), Some(t0 + 25 * SECOND));
        machine.handle_timeout(t0 + 24 * SECOND);
        assert!(transmits(&mut machine, t0 + 24 * SECOND).is_empty());
        machine.handle_timeout(t0 + 25 * SECOND);
        assert_eq!(transmits(&mut machine, t0 + 25 * SECOND), vec![PING]);
        assert_eq!(machine.write_deadline(), Some(t0 + 40 * SECOND));
    }

    #[test]
    fn idle_for_an_hour_on_websockets_and_sse_with_a_pinging_client() {
        for transport in [TransportKind::WebSockets, TransportKind::ServerSentEvents] {
            let (mut machine, t0) = open(transport, false);
            let end = t0 + 3600 * SECOND;
            let mut now = t0;
            let mut last_server_write = t0;
            let mut next_client_ping = t0 + 15 * SECOND;
            while now < end {
                // Wake at the machine's deadline or when the client pings, whichever is first.
                let deadline = machine
                    .poll_timeout()
                    .expect("an open connection has timers");
                now = deadline.min(next_client_ping);
                if now == next_client_ping {
                    assert!(receive(&mut machine, now, PING).is_empty());
                    next_client_ping = now + 15 * SECOND;
                }
                machine.handle_timeout(now);
                for record in transmits(&mut machine, now) {
                    assert_eq!(record, PING);
                    assert!(now - last_server_write <= 15 * SECOND, "{transport:?}");
                    last_server_write = now;
                }
                assert!(!machine.is_ended(), "{transport:?} ended at {:?}", now - t0);
            }
            assert!(end - last_server_write <= 15 * SECOND);
        }
    }

    #[test]
    fn the_client_timeout_counts_from_the_last_complete_message_not_from_bytes() {
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        assert!(receive(&mut machine, t0 + 5 * SECOND, PING).is_empty());
        assert_eq!(machine.read_deadline(), Some(t0 + 35 * SECOND));
        // One byte every 5 s of a record that never completes keeps nothing alive.
        for k in 2..=6 {
            assert!(receive(&mut machine, t0 + 5 * k * SECOND, b"{").is_empty());
            machine.handle_timeout(t0 + 5 * k * SECOND);
            assert!(!machine.is_ended());
        }
        machine.handle_timeout(t0 + 35 * SECOND);
        assert!(machine.is_ended());
        assert_eq!(machine.ending().unwrap().error, "client timeout");
        assert!(close_error(&machine).contains("ClientTimeoutInterval"));
    }

    #[test]
    fn the_client_timeout_is_suspended_while_a_message_is_dispatched_and_restarts_after() {
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        let events = receive(
            &mut machine,
            t0,
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Slow\",\"arguments\":[]}\x1e",
        );
        assert!(matches!(events.as_slice(), [Event::Message(_)]));
        // An hour in the dispatcher (a hub method, or waiting for a free invocation slot):
        // the client's pings wait unread, so its silence is not held against it.
        assert_eq!(machine.read_deadline(), None);
        machine.handle_timeout(t0 + 3600 * SECOND);
        assert!(!machine.is_ended());
        assert_eq!(transmits(&mut machine, t0 + 3600 * SECOND), vec![PING]);
        machine.dispatched(t0 + 3600 * SECOND);
        assert_eq!(machine.read_deadline(), Some(t0 + 3630 * SECOND));
        machine.handle_timeout(t0 + 3629 * SECOND);
        assert!(!machine.is_ended());
        machine.handle_timeout(t0 + 3630 * SECOND);
        assert_eq!(machine.ending().unwrap().error, "client timeout");
    }

    #[test]
    fn long_polling_has_neither_pings_nor_a_client_timeout_idle_for_an_hour() {
        let (mut machine, t0) = open(TransportKind::LongPolling, false);
        assert_eq!(machine.poll_timeout(), None);
        machine.handle_timeout(t0 + 3600 * SECOND);
        assert!(transmits(&mut machine, t0 + 3600 * SECOND).is_empty());
        assert!(!machine.is_ended());
        // Still usable afterwards.
        let events = receive(
            &mut machine,
            t0 + 3600 * SECOND,
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e",
        );
        assert!(matches!(
            events.as_slice(),
            [Event::Message(Message::Invocation(_))]
        ));
    }

    #[test]
    fn a_handshake_that_does_not_arrive_in_time_is_refused() {
        let t0 = Instant::now();
        let mut machine = ConnectionMachine::new(config(TransportKind::WebSockets), t0);
        machine.handle_bytes(Bytes::from_static(b"{\"protocol\":"));
        assert!(machine.poll_event(t0).is_none());
        assert_eq!(machine.poll_timeout(), Some(t0 + 15 * SECOND));
        machine.handle_timeout(t0 + 14 * SECOND);
        assert!(!machine.is_ended());
        machine.handle_timeout(t0 + 15 * SECOND);
        assert!(machine.is_ended());
        assert_eq!(
            transmits(&mut machine, t0 + 15 * SECOND),
            vec![&b"{\"error\":\"Handshake was canceled.\"}\x1e"[..]]
        );
    }

    #[test]
    fn an_oversized_record_closes_with_the_reason() {
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        machine.handle_bytes(Bytes::from(vec![b'x'; 40 * 1024]));
        assert!(machine.poll_event(t0).is_none());
        assert!(close_error(&machine).contains("maximum message size"));
    }

    #[test]
    fn stateful_acks_arrive_a_moment_after_the_first_unacknowledged_message() {
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        let invocation = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[]}\x1e";
        assert_eq!(receive(&mut machine, t0, invocation).len(), 1);
        assert_eq!(receive(&mut machine, t0 + SECOND / 2, invocation).len(), 1);
        assert_eq!(machine.write_deadline(), Some(t0 + SECOND));
        machine.handle_timeout(t0 + SECOND);
        assert_eq!(
            transmits(&mut machine, t0 + SECOND),
            vec![&b"{\"type\":8,\"sequenceId\":2}\x1e"[..]]
        );
        // Nothing new: no Ack timer at all, just the keep-alive.
        assert_eq!(machine.write_deadline(), Some(t0 + 16 * SECOND));
    }

    #[test]
    fn sequence_zero_closes_with_a_reason_instead_of_dropping_the_next_message() {
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        let events = receive(
            &mut machine,
            t0,
            b"{\"type\":9,\"sequenceId\":0}\x1e{\"type\":1,\"target\":\"Send\",\"arguments\":[]}\x1e",
        );
        assert!(events.is_empty());
        assert!(close_error(&machine).contains("Sequence ID 0 is invalid"));
    }

    #[test]
    fn sequence_and_ack_edge_cases_have_defined_outcomes() {
        let invocation = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[]}\x1e";
        // From the future: a Close that says so.
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        assert!(receive(&mut machine, t0, b"{\"type\":9,\"sequenceId\":5}\x1e").is_empty());
        assert!(close_error(&machine).contains("Sequence ID greater"));
        // An Ack for messages never sent: a Close that says so.
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        machine.on_send(t0, &Bytes::from_static(b"r1"));
        assert!(receive(&mut machine, t0, b"{\"type\":8,\"sequenceId\":1}\x1e").is_empty());
        assert!(!machine.is_ended());
        assert!(receive(&mut machine, t0, b"{\"type\":8,\"sequenceId\":2}\x1e").is_empty());
        assert!(close_error(&machine).contains("Ack ID 2 is greater"));
        // Ack 0 acknowledges nothing; a Sequence repeating what we processed drops exactly
        // the duplicates and goes on.
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        assert!(receive(&mut machine, t0, b"{\"type\":8,\"sequenceId\":0}\x1e").is_empty());
        assert_eq!(receive(&mut machine, t0, invocation).len(), 1);
        assert_eq!(receive(&mut machine, t0, invocation).len(), 1);
        let events = receive(
            &mut machine,
            t0,
            b"{\"type\":9,\"sequenceId\":2}\x1e{\"type\":1,\"target\":\"Dup\",\"arguments\":[]}\x1e{\"type\":1,\"target\":\"New\",\"arguments\":[]}\x1e",
        );
        match events.as_slice() {
            [Event::Message(Message::Invocation(invocation))] => {
                assert_eq!(invocation.target, "New")
            }
            other => panic!("expected only the new invocation, got {other:?}"),
        }
        assert!(!machine.is_ended());
        // Without stateful reconnect both are ignored, as in the reference.
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        assert!(receive(&mut machine, t0, b"{\"type\":9,\"sequenceId\":0}\x1e").is_empty());
        assert_eq!(receive(&mut machine, t0, invocation).len(), 1);
        assert!(!machine.is_ended());
    }

    #[test]
    fn a_dropped_stateful_transport_waits_for_the_grace_then_replays_or_ends() {
        let (mut machine, t0) = open(TransportKind::WebSockets, true);
        machine.on_send(t0, &Bytes::from_static(b"r1"));
        machine.on_send(t0, &Bytes::from_static(b"r2"));
        receive(&mut machine, t0, b"{\"type\":8,\"sequenceId\":1}\x1e");
        assert!(machine.transport_lost(t0 + SECOND, "reset"));
        // Neither Pings nor the client timeout run without a transport.
        assert_eq!(machine.write_deadline(), None);
        assert_eq!(machine.poll_timeout(), Some(t0 + 16 * SECOND));
        machine.handle_timeout(t0 + 15 * SECOND);
        assert!(!machine.is_ended());
        machine.transport_replaced(t0 + 15 * SECOND);
        assert_eq!(
            transmits(&mut machine, t0 + 15 * SECOND),
            vec![&b"{\"type\":9,\"sequenceId\":2}\x1e"[..], &b"r2"[..]]
        );
        assert!(!machine.is_ended());
        // The next loss is not followed by a reconnect: the grace ends it.
        assert!(machine.transport_lost(t0 + 20 * SECOND, "reset"));
        machine.handle_timeout(t0 + 35 * SECOND);
        assert!(machine.is_ended());
        assert!(machine.ending().unwrap().close.is_none());
    }

    #[test]
    fn a_client_close_that_arrives_as_the_server_closes_is_still_found() {
        let (mut machine, _t0) = open(TransportKind::ServerSentEvents, false);
        // The SSE response went away first (the server closes), then the POSTed Close is read.
        machine.close(Close::default(), None);
        machine.handle_bytes(Bytes::from_static(b"{\"type\":7,\"error\":\"bye\"}\x1e"));
        assert_eq!(
            machine.client_close_in_input(),
            Some(Some("bye".to_owned()))
        );
    }

    #[test]
    fn without_stateful_reconnect_a_lost_transport_ends_the_connection() {
        let (mut machine, t0) = open(TransportKind::WebSockets, false);
        assert!(!machine.transport_lost(t0, "reset"));
        assert!(machine.is_ended());
        assert_eq!(machine.ending().unwrap().error, "reset");
    }
}
