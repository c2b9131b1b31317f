#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! An ASP.NET Core SignalR compatible hub server for tokio and hyper.
//!
//! Unmodified SignalR clients (the official JavaScript, .NET and Java clients, Python clients)
//! connect to a [`Hub`] as they would to ASP.NET Core: negotiate, the three transports
//! (WebSockets, Server-Sent Events, long polling, with the clients' usual fallback), the JSON
//! and MessagePack hub protocols, keep-alive, timeouts and Close messages all behave as the
//! reference server does.
//!
//! # Contents
//! - [Writing a hub](#writing-a-hub): methods are plain async functions
//! - [State, the request and items](#state-the-request-and-items): `State<S>`, `HttpRequest`, `Context::item`
//! - [Reaching clients](#reaching-clients): `Clients`, `HubContext`, typed clients
//! - [Streaming and client results](#streaming-and-client-results)
//! - [Stateful reconnect](#stateful-reconnect): no message lost across a dropped socket
//! - [Groups, users and presence](#groups-users-and-presence)
//! - [Scaling out](#scaling-out): several processes as one hub, over a backplane
//! - [Authentication and authorization](#authentication-and-authorization): JWT, policies
//! - [Hub filters](#hub-filters): middleware around methods and hooks
//! - [Serving and embedding](#serving-and-embedding): one line, or mounted in axum/hyper
//! - [Transports](#transports): WebSockets, Server-Sent Events, long polling, CORS
//! - [Limits](#limits): every bound, and what happens past it
//! - [Timer rules](#timer-rules): keep-alive, timeouts, grace periods, per transport
//! - [Observability](#observability): spans, log levels, metrics
//! - [Testing a hub](#testing-a-hub): the in-process test kit, in virtual time
//! - [Where we differ from the reference](#where-we-differ-from-the-reference)
//! - [Architecture](#architecture)
//! - [Cargo features](#cargo-features)
//!
//! # Writing a hub
//! A hub method is an async function. Each parameter is either a positional argument of the
//! invocation (any `serde::Deserialize` type, bound in order; [`protocol::Payload`] keeps one
//! still encoded) or context ([`Context`], [`Clients`], [`HubContext`], or your own
//! [`FromContext`] type). It returns any `Serialize` value (`()` is a `null` result, as the
//! reference sends for void methods) or a `Result` whose error converts into [`HubError`].
//!
//! ```
//! use signalr_core::{Clients, Context, Hub, HubError};
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! async fn say(ctx: Context, clients: Clients, text: String) -> Result<(), HubError> {
//!     if text.is_empty() {
//!         return Err(HubError::new("Say something.")); // shown to the caller
//!     }
//!     clients.others().send("Said", (ctx.connection_id(), text)).await?;
//!     Ok(())
//! }
//!
//! let hub = Hub::builder()
//!     .method("Add", add)
//!     .method("Say", say)
//!     .on_connected(|ctx: Context| async move { println!("{} joined", ctx.connection_id()) })
//!     .build();
//! ```
//!
//! Method names match case-insensitively, as in ASP.NET Core. The error Completions for an
//! unknown method, a wrong argument count or wrong argument types carry the reference's exact
//! texts, and the connection stays open. Errors from a method show the generic text
//! (`An unexpected error occurred invoking 'Say' on the server.`) plus the message of a
//! [`HubError::new`]; other errors stay hidden unless
//! [`enable_detailed_errors`](HubBuilder::enable_detailed_errors) is on. A panicking method is
//! reported like an internal error; the connection and the server keep running.
//!
//! Bytes and instants follow .NET's per-protocol conventions when typed as
//! [`protocol::Binary`] (MessagePack `bin`, a base64 string in JSON, like `byte[]`) and
//! [`protocol::DateTime`] (the MessagePack timestamp extension, an RFC 3339 string in JSON,
//! like `DateTime`; the JS client's MessagePack protocol reads it as a `Date`). A
//! [`protocol::Payload`] returned or sent on is copied byte for byte into its own protocol,
//! so MessagePack extension values survive forwarding; into the other protocol it is
//! converted (see its docs).
//!
//! # State, the request and items
//! - **Application state** is set once with [`HubBuilder::with_state`] and taken by any method
//!   as a [`State<S>`] parameter (axum's shape): no closure capture, no clone per method.
//!   Hooks read it with [`Context::state`], other code with [`HubContext::state`].
//! - **The HTTP request** the connection was made with (the WebSocket upgrade, the Server-Sent
//!   Events request or the first long poll: `Context.GetHttpContext()` in ASP.NET Core) is
//!   [`Context::http_request`], or an [`HttpRequest`] parameter: method, URI and query string,
//!   headers and cookies, the peer address, and the `http::Extensions` that tower or axum
//!   layers attached (an authentication layer's verdict, a request id). An [`Authenticator`]
//!   sees the same parts of every request through [`AuthRequest`]. [`serve`] records the peer
//!   address as a [`RemoteAddr`] extension; under axum, copy `ConnectInfo<SocketAddr>` into
//!   one with a middleware and serve with `into_make_service_with_connect_info`.
//! - **Per-connection items** (`Context.Items`): [`Context::insert_item`] stores a value by
//!   type for the rest of the connection; later calls read it with [`Context::item`] or take
//!   it as an [`Item<T>`] (or `Option<Item<T>>`) parameter.
//! - **Extractors can refuse**: a [`FromContext`] type names its `Rejection`; a rejection
//!   becomes the invocation's error Completion (a [`HubError::new`] text reaches the caller)
//!   and the method does not run.
//!
//! # Reaching clients
//! Inside a method, [`Clients`] offers `all()`, `all_except(ids)`, `caller()`, `others()`,
//! `client(id)` and `clients(ids)`. Outside, [`Hub::context`] gives a cloneable [`HubContext`]
//! (the counterpart of `IHubContext`) for timers, HTTP handlers or any task. Each returns a
//! [`ClientProxy`] whose [`send`](ClientProxy::send) takes the method name and a tuple of
//! arguments. A message is encoded once per protocol and the bytes are shared by every
//! recipient.
//!
//! **Typed clients** (`Hub<T>`, `IHubContext<THub, T>`): declare what clients offer once with
//! [`client_methods!`], one enum variant per client method with typed arguments, then send
//! through [`TypedClients<C>`] (a method parameter) or [`HubContext::typed`]; a wrong argument
//! is a compile error, not a client that silently ignores the call.
//!
//! # Streaming and client results
//! A method that returns a `Stream` (of values, or of `Result`s) is a streaming method: the
//! client calls it with `stream()`, receives each item as it is produced, then a Completion
//! (with `An error occurred on the server while streaming results.` if an item is an error).
//! Items are sent as fast as the client reads, so a slow client slows the producer. When the
//! client cancels (`subscription.dispose()`) or disconnects, the stream is dropped at once; take
//! a [`Cancellation`] parameter to stop other work too. Streaming invocations, and methods that
//! take upload streams, do not count against the parallel-invocation limit, as in the
//! reference: with the default limit of one, a client can call other methods while its upload
//! is open.
//!
//! [`UploadStream<T>`] parameters receive streams the client uploads (a `Subject` in the JS
//! client), in the order of the invocation's stream ids; both directions combine in one method.
//! Each upload buffers up to [`HubBuilder::stream_buffer_capacity`] items (default 10); past it
//! the server stops reading from that client until the method catches up.
//!
//! While the server is not reading from a client for one of those reasons (every invocation
//! slot busy, an upload buffer full), the client's pings wait unread, so its client timeout is
//! suspended until the hub reads again, as in the reference; keep-alive pings still go out, so
//! the client stays connected. Such a wait is logged once at warn when it outlasts the client
//! timeout, naming the cause, so a connection is never held up silently.
//!
//! [`ClientProxy::invoke`] asks one client (`caller()` or `client(id)`, from a method or a
//! [`HubContext`]) for a value and waits for it, up to [`HubBuilder::client_result_timeout`]
//! (default 30 s). A client that throws, disconnects (the call fails at once) or answers with
//! the wrong type gives a distinct [`Error`]. While a method waits, it lends its
//! parallel-invocation slot back to its connection, as the reference does, so that with the
//! default limit of one the client's answer, and its other calls, are still read: awaiting the
//! caller's own result cannot deadlock. Calling it from `on_connected` (or its filters) is
//! refused, as in the reference: the connection reads nothing until the hook returns. Asking a
//! connection that is still in its `on_connected` from anywhere else (an HTTP endpoint, another
//! connection's method) is fine: the answer is read once the hook is done.
//!
//! ```
//! use futures_util::{Stream, StreamExt};
//! use signalr_core::{Cancellation, Clients, Hub, HubError, UploadStream};
//!
//! async fn countdown(from: u32) -> impl Stream<Item = u32> {
//!     futures_util::stream::iter((0..=from).rev())
//! }
//!
//! async fn total(mut amounts: UploadStream<i64>, cancel: Cancellation) -> Result<i64, HubError> {
//!     let mut sum = 0;
//!     while let Some(amount) = amounts.next().await {
//!         if cancel.is_cancelled() { break; }
//!         sum += amount?;
//!     }
//!     Ok(sum)
//! }
//!
//! async fn confirm(clients: Clients, question: String) -> Result<bool, HubError> {
//!     Ok(clients.caller().invoke::<bool, _>("Confirm", (question,)).await?)
//! }
//!
//! let hub = Hub::builder()
//!     .method("Countdown", countdown)
//!     .method("Total", total)
//!     .method("Confirm", confirm)
//!     .build();
//! ```
//!
//! # Stateful reconnect
//! With [`HubBuilder::allow_stateful_reconnect`], clients that ask (`withStatefulReconnect()`)
//! keep their connection when their WebSocket drops: the connection (id, groups, user, running
//! invocations and streams) waits for the disconnect timeout (default 15 s), the client
//! reconnects with the same token, the server sends a Sequence and replays every message the
//! client had not acknowledged, and messages the client resends are dropped if already
//! processed. `on_connected` and `on_disconnected` run once for the whole logical connection;
//! when the grace period passes, the connection ends and the client's automatic reconnect
//! starts a new one. Sent messages are kept until acknowledged, up to
//! [`HubBuilder::stateful_reconnect_buffer_size`] bytes (default 100,000); past it, sends to
//! that client wait for its acknowledgements rather than grow memory, as in the reference
//! (the outbound queue then fills, and the slow-client rules apply). Measured through a proxy
//! that cuts the socket: each cut paused delivery for about 40 ms on loopback, with nothing
//! lost or repeated.
//!
//! # Groups, users and presence
//! [`Groups`] (a method parameter, [`Context::groups`] or [`HubContext::groups`]) adds and
//! removes connections; [`Clients`] then reaches `group(name)`, `groups(names)`,
//! `group_except(name, ids)`, `others_in_group(name)`, `user(id)` and `users(ids)`. A send issued
//! after an `add` returns reaches the new member; a connection leaves its groups when it
//! disconnects. A connection's user id comes from its [`Identity`] (see below), so
//! `user("alice")` reaches every tab and device Alice has open. [`Presence`]
//! ([`HubContext::presence`]), which the reference lacks, answers who is online, which
//! connections a user has, and who is in a group (across every process with a backplane; its
//! `local_*` methods answer for this process alone, without waiting).
//!
//! # Scaling out
//! [`HubBuilder::backplane`] connects the hub to other processes serving the same hub, through
//! a [`backplane::Backplane`] (the `signalr-redis` crate implements it over Redis, wire
//! compatible with ASP.NET Core's Redis backplane). Then every target of [`Clients`] and
//! [`HubContext`] reaches connections on every process, [`Groups::add`] and
//! [`Groups::remove`] work for a connection that lives elsewhere (its process applies the change
//! and confirms), [`ClientProxy::invoke`] asks a client on another process, and [`Presence`]
//! covers them all. Local recipients are always served directly, before and independently of
//! the backplane: when it is unreachable, local delivery goes on and the send returns an error
//! for which [`Error::is_backplane`] is true. [`HubContext::backplane_healthy`] is the signal
//! for a readiness probe. [`HubBuilder::portable_connection_tokens`] removes the need for
//! session affinity between negotiate and the transport request (the reference needs sticky
//! sessions): any process sharing the key opens a connection negotiated on another.
//!
//! # Authentication and authorization
//! An [`Authenticator`] ([`HubBuilder::authenticator`]) runs on negotiate and every transport
//! request and yields an [`Identity`] (user id, name, claims, expiry) or a 401. With the `jwt`
//! feature, [`auth::JwtAuthenticator`] checks HS256 or RS256 bearer tokens (`exp`, `nbf`,
//! `iss`, `aud`), from the `Authorization` header or, for WebSockets and Server-Sent Events,
//! the `access_token` query parameter browsers must use. A [`Policy`] guards the whole hub
//! ([`HubBuilder::require`]: 401 for anonymous callers, 403 for others; both with an empty
//! body as the reference sends them, 401 with `WWW-Authenticate: Bearer`, and
//! `error="invalid_token"` when a credential was refused; why it was refused goes to the log
//! only, never to the client) or one method
//! ([`HubBuilder::authorized_method`]: the reference's `Failed to invoke 'X' because user is
//! unauthorized` Completion). [`HubBuilder::close_on_authentication_expiration`] closes a
//! connection when its token expires, with `allowReconnect` so the client returns with a fresh
//! one.
//!
//! ```
//! use signalr_core::{Clients, Context, Hub, HubError, Policy};
//!
//! async fn join(ctx: Context, room: String) -> Result<(), HubError> {
//!     ctx.groups().add(ctx.connection_id(), &room).await?;
//!     ctx.clients().others_in_group(room.clone()).send("Joined", (ctx.user_identifier(),)).await?;
//!     Ok(())
//! }
//!
//! async fn ban(clients: Clients, user: String) -> Result<(), HubError> {
//!     clients.user(user).send("Banned", ()).await?;
//!     Ok(())
//! }
//!
//! # #[cfg(feature = "jwt")]
//! let hub = Hub::builder()
//!     .authenticator(signalr_core::auth::JwtAuthenticator::hs256(b"secret"))
//!     .require(Policy::authenticated())
//!     .method("Join", join)
//!     .authorized_method("Ban", Policy::claim("role", "moderator"), ban)
//!     .build();
//! ```
//!
//! # Hub filters
//! A [`HubFilter`] wraps every invocation (and optionally `on_connected` / `on_disconnected`):
//! log, time, rate-limit, validate or rewrite arguments, or short-circuit with an error
//! ([`InvocationOutcome::error`]). Filters run in the order added, the first outermost; for
//! one closure, use [`filter_fn`]. Unlike the reference, calls to methods that do not exist
//! pass through the filters too ([`HubInvocation::method_exists`]).
//!
//! ```
//! use signalr_core::{filter_fn, Hub, HubError, HubInvocation, InvocationOutcome, InvokeNext};
//!
//! async fn no_shouting(invocation: HubInvocation, next: InvokeNext) -> InvocationOutcome {
//!     let shouting = invocation.arguments().iter()
//!         .filter_map(|a| a.deserialize::<String>().ok())
//!         .any(|text| text.len() > 3 && text == text.to_uppercase());
//!     if shouting {
//!         return InvocationOutcome::error(HubError::new("Please don't shout."));
//!     }
//!     let started = std::time::Instant::now();
//!     let outcome = next.run(invocation).await;
//!     tracing::debug!(elapsed = ?started.elapsed(), ok = outcome.is_ok());
//!     outcome
//! }
//!
//! let hub = Hub::builder().filter(filter_fn(no_shouting)).build();
//! ```
//!
//! # Serving and embedding
//! Alone: [`serve`] (until Ctrl-C or SIGTERM) or [`serve_with_shutdown`]. Inside an
//! application: [`Hub::service`] is a `tower::Service` over `http::Request`, so it mounts at any
//! path of an axum `Router` with `nest_service("/hubs/chat", hub.service())`, or serves under
//! plain hyper (WebSocket upgrades need hyper's `serve_connection_with_upgrades`).
//! [`Hub::shutdown`] closes every connection with `allowReconnect: true` and waits for them.
//!
//! **HTTP-level limits.** [`serve`] and [`serve_with_shutdown`] apply [`ServeOptions`]'
//! defaults, Kestrel's with a few deliberate differences: a request head must be complete
//! within 30 s (from accept for the first request), an idle connection closes 130 s after
//! its last response, at most 10,000 connections are open at once (past it a `503` with a
//! JSON error), bodies past 30,000,000 bytes get `413` and headers past 32 KiB `431`, a
//! body must keep coming at 240 bytes/s once its first 5 s are over (then `408`), and
//! a client must read responses at that rate too (then it is disconnected). Open
//! WebSockets, Server-Sent Events streams and pending long polls never count as idle.
//! [`serve_with`] takes other limits; [`serve_service`] serves an application's own
//! `tower::Service` (an axum `Router` with the hub nested) under the same limits.
//!
//! `axum::serve` (axum 0.8) enforces none of these: no header or idle timeout, no connection
//! cap, and no body limit on a nested service (`DefaultBodyLimit` applies to axum's
//! extractors only). An application that keeps it needs a reverse proxy in front for the
//! timeouts and the cap, and tower-http's `RequestBodyLimitLayer` on the hub's routes (a
//! declared length past it gets tower-http's `413`; a chunked body that grows past it gets
//! the hub's JSON `413`). Never put a `TimeoutLayer`, or any other deadline on responses,
//! in front of the hub: it would cut Server-Sent Events streams and long polls, which the hub
//! bounds with its own timers; keep it on the REST routes. The `limits` example shows both
//! layers under [`serve_service`].
//!
//! **Raw connections** ([`ConnectionHandler`], `MapConnectionHandler` in ASP.NET Core) use
//! negotiate and the same three transports with no handshake and no hub protocol: a handler
//! runs once per connection and reads and writes bytes ([`RawConnection`]), mounted like a hub.
//!
//! # Transports
//! All three are served by default; [`HubBuilder::transports`] narrows the set (negotiate then
//! offers only those, and requests for the others get 404 as in the reference). Whatever the
//! transport, one connection core runs the hub: limits, timeouts and Close messages are the
//! same. Server-Sent Events carry text only, so MessagePack clients use WebSockets or long
//! polling. Long polling needs no pings (each poll is its keep-alive); a client that stops
//! polling is let go after the disconnect timeout. Browsers on other origins need
//! [`HubBuilder::cors_allowed_origins`]: allowed origins are echoed with credentials, as the JS
//! client sends cookies by default, with the methods and headers SignalR clients use. CORS is
//! tower-http's `CorsLayer`; [`HubBuilder::cors`] takes an application's own, so its REST
//! routes and its hub share one policy. [`Context::transport`] tells a method which one a
//! caller uses.
//!
//! # Limits
//! | limit | default | past it |
//! |---|---|---|
//! | handshake timeout | 15 s | handshake error `Handshake was canceled.`, transport closed |
//! | keep-alive interval | 15 s | (a Ping is sent when nothing was written for this long) |
//! | client timeout | 30 s from the last complete message (not on long polling) | Close `Connection closed with an error.` (`allowReconnect: true`) |
//! | maximum received message | 32 KiB per record (handshake included) | Close with an error; refused as soon as a MessagePack length prefix announces it |
//! | one WebSocket message | 4 x the message limit, at least 64 KiB | connection closed (a message may batch several records) |
//! | parallel invocations per client | 1 (streaming invocations and methods taking upload streams not counted) | the server stops reading from that client until one finishes (a warning after the client timeout) |
//! | items buffered per upload stream | 10 | the server stops reading from that client until the method consumes (a warning after the client timeout) |
//! | client result wait | 30 s | `ClientProxy::invoke` fails with a timeout |
//! | stateful reconnect grace | the disconnect timeout (15 s) | the connection ends; the client reconnects as a new one |
//! | unacknowledged messages kept for replay | 100,000 bytes | sends to that client wait for its acks |
//! | stateful Sequence 0, a Sequence ahead of what was received, an Ack for messages never sent | none allowed | Close `Connection closed with an error.` (the reason with detailed errors) |
//! | a WebSocket protocol violation (invalid UTF-8, an unmasked frame, an oversized frame) | none allowed | Close `Connection closed with an error.`, then close frame 1007, 1002 or 1009 |
//! | outbound queue per connection | 1,024 records | a multi-client send finding it full closes that client as too slow; a single-client send waits up to the send timeout first; logged once per connection, counted in [`Hub::slow_client_closes`] |
//! | work per turn of one connection's read loop | 16 KiB of input, 128 received frames or 16 messages | the loop yields to other tasks, so one flooding client cannot hold a worker thread |
//! | send timeout | 10 s | a write to the socket or a single-client send that cannot progress closes the connection |
//! | negotiated but unused connection id | 15 s | forgotten; its transport request then gets 404 |
//! | negotiated connections waiting for a transport | 100,000 | negotiate answers 503 |
//! | long poll wait | 90 s | the poll answers 200 with no body; the client polls again |
//! | records waiting for the next long poll | 1 MiB | sends wait (up to the send timeout) for a poll to drain them |
//! | long-polling client that stops polling | the disconnect timeout (15 s) | the connection ends, `on_disconnected` runs |
//! | received POST data not yet read by the hub | 8 chunks | the POST's 200 waits (up to the send timeout, then 503); if part of that POST was already delivered, the connection also ends with an error, as it does when a POST breaks off for any reason (size limit, client gone) after part of it was delivered |
//! | graceful shutdown | 5 s | remaining connections are dropped |
//!
//! Every limit is set on [`HubBuilder`]; the HTTP-level ones of the standalone server
//! (header and idle timeouts, connection caps, body and header sizes, minimum data rates) on
//! [`ServeOptions`].
//!
//! # Timer rules
//! Every rule about time lives in one sans-IO state machine per connection, which is handed
//! the time instead of reading a clock; the tests move that time by hand, and the drivers
//! use tokio's clock (so a paused test clock moves it too).
//!
//! | rule | counted from | WebSockets, Server-Sent Events | long polling |
//! |---|---|---|---|
//! | handshake timeout (15 s) | the transport opening | yes | yes |
//! | keep-alive Ping (15 s) | the last write of any kind | yes: two server messages are never further apart | no: each poll is its own keep-alive, as in the reference |
//! | client timeout (30 s) | the last *complete* message received (a record dripped a byte at a time keeps nothing alive) | yes | no: the missing-poll rule instead |
//! | missing poll (the disconnect timeout, 15 s) | the end of the last poll | - | yes |
//! | stateful Ack (1 s) | the first message processed since the last Ack | yes | yes |
//! | stateful reconnect grace (the disconnect timeout, 15 s) | the transport dropping | yes | - |
//! | a write that does not complete (the send timeout, 10 s) | the write starting | yes | yes |
//!
//! # Testing a hub
//! With the `test-util` feature, [`test_util::TestClient`] connects to a hub over an in-memory
//! transport and speaks either protocol through the same connection core sockets get: calls,
//! streams, client-method invocations, Close messages. Under tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`) timers fire as soon as nothing else can run, so
//! timeouts are tested in milliseconds:
//!
//! ```
//! # #[cfg(feature = "test-util")]
//! # mod t {
//! use signalr_core::test_util::TestClient;
//! use signalr_core::Hub;
//!
//! #[tokio::test(start_paused = true)]
//! async fn a_silent_client_is_closed_after_thirty_seconds() {
//!     let hub = Hub::builder().build();
//!     let mut client = TestClient::connect(&hub).await.unwrap();
//!     let start = tokio::time::Instant::now();
//!     let close = client.closed().await.unwrap();
//!     assert_eq!(start.elapsed().as_secs(), 30);
//!     assert!(close.allow_reconnect);
//! }
//! # }
//! ```
//!
//! # Observability
//! Logs and spans go through [`tracing`](https://docs.rs/tracing); install any subscriber.
//! Every connection runs in a `connection` span (`id`, `transport`, `remote`, then `protocol`
//! and `user` once known) and every invocation in an `invocation` span (`method`, `id`) inside
//! it, so a hub method's own events say which client and call they belong to.
//!
//! | level | what |
//! |---|---|
//! | error | a hub method failed inside the server (an internal [`HubError`], a panic) |
//! | warn | a refused handshake, a refused credential or policy (with the remote address), a slow client closed, reading held up by busy slots or a full upload buffer |
//! | info | connected, disconnected (with the reason and status), transport lost / re-attached, a long-polling client that stopped polling, an expired identity; a method's public error; an unknown method or arguments that do not bind |
//! | debug | everything else a developer may want: upgrade failures, connections adopted from other processes |
//!
//! Targets are module paths: `signalr_core::connection` (connection life),
//! `signalr_core::hub::dispatch` (invocations), `signalr_core::http` (negotiate,
//! authentication, transports), `signalr_core::serve`; for example
//! `RUST_LOG=info,signalr_core::hub=warn`. Lines a client can cause again and again (refused
//! credentials, unknown methods, a full negotiate table) are logged at most once per 10 s,
//! with the count of those left out (`suppressed`). Tokens never reach a log line.
//!
//! With the `metrics` feature the crate records through the
//! [`metrics`](https://docs.rs/metrics) facade (nothing happens until the application installs
//! a recorder, for example `metrics-exporter-prometheus`, as chat-app does). The first two are
//! ASP.NET Core's SignalR meter, with OpenTelemetry's names and values:
//!
//! | name | kind, unit | attributes |
//! |---|---|---|
//! | `signalr.server.active_connections` | gauge (up-down), connections | `signalr.transport` (`web_sockets`, `server_sent_events`, `long_polling`) |
//! | `signalr.server.connection.duration` | histogram, s | `signalr.transport`, `signalr.connection.status` (`normal_closure`, `timeout`: client timeout or no reconnect in time, `app_shutdown`) |
//! | `signalr.server.messages.received`, `signalr.server.messages.sent` | counter, messages | `signalr.transport` (sent counts every record written, Pings included) |
//! | `signalr.server.bytes.received`, `signalr.server.bytes.sent` | counter, bytes | `signalr.transport` |
//! | `signalr.server.invocations` | counter, invocations | `signalr.method` (the registered name; `_unknown` for any other), `signalr.invocation.outcome` (`ok`, `error`, `unknown_method`, `unauthorized`, `bind_error`, `panic`) |
//! | `signalr.server.invocation.duration` | histogram, s | as above, for invocations that ran |
//! | `signalr.server.slow_client_closes` | counter | `signalr.transport` |
//! | `signalr.server.handshake.refusals` | counter | `reason` (`invalid`: malformed, too large or too late; `protocol`; `transfer_format`) |
//! | `signalr.server.authentication.refusals` | counter | `http.response.status_code` (`401`, `403`) |
//! | `signalr.server.long_polls`, `signalr.server.sse_streams` | counter, requests | |
//!
//! Per-message counts are recorded once per read or write batch, and a method is labelled
//! only by a name the hub registered, so a hostile client cannot grow the label set.
//! [`Hub::connection_count`] and [`Hub::slow_client_closes`] give the same figures without a
//! recorder. After installing a recorder, call `describe_metrics()` (this crate's, and
//! `signalr_redis::describe_metrics()` for the backplane) to give it every metric's unit and
//! help text: with an exporter that uses units, such as Prometheus's, the durations then get
//! their `_seconds` suffix. The Redis backplane's metrics are in `signalr-redis`.
//!
//! # Where we differ from the reference
//! - The client timeout counts from the handshake, not from the client's first Ping: a client
//!   that sends half a message and falls silent is closed instead of held forever. (Clients
//!   since ASP.NET Core 3.0 ping right after the handshake, so they see no difference.)
//! - Keep-alive Pings count from the last write of any kind (the reference pings on a fixed
//!   cadence): a busy connection gets no extra frames, and an idle one hears from the server
//!   exactly every interval.
//! - Stateful reconnect: a Sequence of 0 and an Ack for messages never sent end the
//!   connection with a Close (the reference accepts both, and after Sequence 0 silently drops
//!   the next message).
//! - A client that cannot keep up with multi-client sends is disconnected instead of slowing
//!   the sender down: one slow client never delays a broadcast to everyone else.
//! - Optional signed connection tokens ([`HubBuilder::portable_connection_tokens`]) that any
//!   process of a scaled-out hub accepts; the reference's tokens bind a connection to the
//!   process that negotiated it.
//! - [`serve`] gives a new connection the request headers timeout (30 s) to send its first
//!   request, where Kestrel gives it the keep-alive timeout (130 s), caps connections at
//!   10,000 by default (Kestrel: unlimited), counting WebSockets with the rest, and answers
//!   a connection past the cap with a `503` (Kestrel closes it without a word). See
//!   [`ServeOptions`].
//! - The WebSocket framing is our own: reads land in one buffer per thread, and an idle
//!   connection holds no receive buffer at all (about 7.8 KB of memory per idle connection at
//!   19,000, see BENCHMARKS.md).
//!
//! # Architecture
//! - [`protocol`]: sans-IO hub protocols and handshake (no sockets, no clock).
//! - `connection`: the connection as a sans-IO state machine (handshake, framing, every
//!   timer, closing, Ack/Sequence, replay) and the thin tokio driver that feeds it; it reaches
//!   the hub only through a narrow trait (register, hooks, dispatch).
//! - `transport`: WebSockets, Server-Sent Events and long polling, behind a small sink trait.
//! - `hub`: method table, extractors, dispatch, client proxies.
//! - `lifetime`: the registry of live connections (sharded; no global lock), the encoding
//!   cache for fan-out, and [`backplane`], the trait other processes are reached through.
//! - `http`: negotiate, routing, the HTTP connection manager and CORS, as a `tower::Service`.
//! - [`test_util`] (feature `test-util`): the in-memory transport and `TestClient`.
//!
//! # Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `msgpack` | on | the MessagePack hub protocol (`Protocol::MessagePack`, [`protocol::msgpack`]); without it only JSON is offered, and a client asking for `messagepack` gets the handshake error for an unknown protocol |
//! | `server` | on | [`serve`], [`serve_with_shutdown`], [`serve_with`], [`serve_service`] and [`shutdown_signal`]: a standalone HTTP/1.1 and HTTP/2 server with HTTP-level limits ([`ServeOptions`]; hyper's server, TCP, OS signals); without it, mount [`Hub::service`] in axum or your own hyper server |
//! | `jwt` | off | [`auth::JwtAuthenticator`]: HS256 and RS256 bearer tokens |
//! | `test-util` | off | [`test_util`]: the in-memory transport and `TestClient`, and tokio's paused clock |
//! | `metrics` | off | metrics on the `metrics` facade ([Observability](#observability)) |
//!
//! With `default-features = false` the crate is the protocol, the connection core and the
//! `tower::Service`, on tokio's `rt`, `sync`, `time` and `macros` alone. A backplane
//! publishes each message in every protocol this build has, so processes sharing one should
//! be built with the same protocols (as ASP.NET Core servers must register the same ones).
pub mod auth;
pub mod protocol;

mod connection;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod id;
mod lifetime;
mod log_limit;
mod observe;
mod options;
#[cfg(feature = "metrics")]
pub use observe::describe_metrics;
pub use options::HubOptions;
mod raw;
mod request;
#[cfg(feature = "server")]
mod serve;
mod shrink;
#[cfg(feature = "test-util")]
pub mod test_util;
mod transport;

pub use lifetime::backplane;

pub use auth::{AuthError, AuthRequest, Authenticator, Identity, Policy};
pub use error::Error;
pub use http::{BoxError, EndpointOptions, HubService, ResponseBody};
pub use hub::{
    filter_fn, BindError, BoxFuture, Cancellation, ClientMessage, ClientProxy, Clients,
    ConnectNext, Context, DisconnectNext, FromContext, FromInvocation, Groups, Handler, Hub,
    HubBuilder, HubClients, HubContext, HubError, HubFilter, HubInvocation, IntoArguments,
    IntoCompletion, IntoHookResult, InvocationOutcome, InvocationParts, InvokeNext, Item, Next,
    ParameterKind, Presence, State, TypedClientProxy, TypedClients, TypedHubContext, UploadStream,
    ViaArgument, ViaContext, ViaPayload, ViaResult, ViaStream, ViaTryStream, ViaTryStreamResult,
    ViaUpload, ViaValue,
};
pub use raw::{ConnectionHandler, RawConnection, RawSender};
pub use request::{HttpRequest, RemoteAddr};
#[cfg(feature = "server")]
pub use serve::{
    serve, serve_service, serve_with, serve_with_shutdown, shutdown_signal, MinDataRate,
    MinDataRateError, RequestBody, ServeOptions,
};
pub use transport::TransportKind;

#[doc(hidden)]
pub mod __private {
    //! What the crate's macros expand to.
    pub use serde;
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
