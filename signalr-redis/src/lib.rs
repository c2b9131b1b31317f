#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The Redis backplane for `signalr-core`: several server processes acting as one hub.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use signalr_redis::RedisBackplane;
//!
//! let backplane = RedisBackplane::connect("redis://127.0.0.1:6379", "MyApp.Hubs.ChatHub").await?;
//! let hub = signalr_core::Hub::builder().backplane(backplane).build();
//! # Ok(()) }
//! ```
//!
//! # Contents
//! - [What crosses processes](#what-crosses-processes)
//! - [Wire compatibility](#wire-compatibility)
//! - [Better than the reference](#better-than-the-reference)
//! - [While Redis is down](#while-redis-is-down)
//! - [Load balancers](#load-balancers)
//! - [Limits](#limits)
//! - [Cargo features](#cargo-features)
//!
//! # What crosses processes
//! Every target of `Clients`/`HubContext`: `all`, `others`/`all_except`, `client(s)`,
//! `group(s)`, `group_except`/`others_in_group`, `user(s)`. `Groups::add`/`remove` for a
//! connection on another process (its owner applies the change and acknowledges, as in the
//! reference). `ClientProxy::invoke` on a connection of another process (the answer comes back
//! on this process's return channel). `Presence` answers for every process.
//!
//! # Wire compatibility
//! Channel names and payloads are those of ASP.NET Core's
//! `Microsoft.AspNetCore.SignalR.StackExchangeRedis` (see [`protocol`]), so a Rust process
//! can share a Redis with .NET servers of the same hub: give the prefix the .NET hub's full
//! type name. Every publication carries the message framed in both `json` and `messagepack`,
//! since a .NET receiver fails a connection whose protocol is missing.
//!
//! # Better than the reference
//! - Local recipients are served directly, without the Redis round trip; a process recognizes
//!   its own publications when they come back (by fingerprint, for two seconds) and skips them,
//!   so nothing is delivered twice and the payloads stay byte-identical to the reference's.
//! - Presence (who is online, group members) across processes, which the reference lacks; see
//!   the `presence` keys below.
//! - Optional sharded pub/sub ([`RedisBackplaneBuilder::sharded`]) and Redis Cluster
//!   (`RedisBackplaneBuilder::cluster`, with the `cluster` feature): each channel lives on
//!   the shard that owns its slot, so a message goes to one shard instead of being copied to
//!   every node.
//! - A health signal ([`RedisBackplane::is_healthy`], `HubContext::backplane_healthy`) for
//!   readiness probes, and counters ([`RedisBackplane::stats`]).
//!
//! # While Redis is down
//! - Local delivery goes on: every send reaches this process's connections first.
//! - Sends that must cross processes fail at once with an error for which
//!   `signalr_core::Error::is_backplane` is true, and are counted
//!   ([`BackplaneStats::publish_failures`]); nothing waits for Redis to return.
//! - Group changes for connections on other processes and client results from them fail the
//!   same way; presence questions fail too (the `local_*` presence methods still answer).
//! - The health check (every second by default) notices the outage, and when Redis answers
//!   again it subscribes to every channel again and rewrites this process's presence; then
//!   cross-process delivery resumes by itself. Messages published while a process was cut off
//!   are not replayed to it (Redis pub/sub keeps nothing).
//!
//! # Load balancers
//! The reference needs session affinity ("sticky sessions") for everything but WebSockets
//! without negotiation. Here, give every process the same key with
//! `HubBuilder::portable_connection_tokens`: negotiate then issues signed tokens, and a process
//! that receives a transport request for a token it did not issue opens the connection itself
//! (within 60 s of the negotiate, and only if no process holds that connection already). Then:
//! - **WebSockets** (the default transport of every official client) need nothing from the load
//!   balancer: negotiate and the WebSocket request may land on any processes. Round robin works.
//! - **Server-Sent Events and long polling** send many requests per connection (the stream or
//!   the polls, plus a POST per message), all carrying the token in the `id` query parameter,
//!   and they must reach the process that opened the connection. Route by a hash of `id`
//!   (nginx `hash $arg_id consistent;`, HAProxy `balance url_param id`, Envoy a ring hash on the
//!   query parameter). The negotiate request carries no `id` and may go anywhere.
//! - **Stateful reconnect** comes back with the same token, so the same hash brings the client
//!   back to the process holding its replay buffer; one that lands elsewhere is refused and the
//!   client starts a new connection (its automatic reconnect).
//!
//! Without portable tokens, use affinity that covers the negotiate too (a cookie, or a hash of
//! the client address).
//!
//! Why requests are not forwarded between processes instead: a connection's state (outbound
//! queue, replay buffer, running invocations and streams) lives in one process. Relaying each
//! long poll and each POST through Redis would add a round trip per message and per poll, and
//! would turn a Redis blip into dropped connections for every non-WebSocket client; a hash on
//! `id` costs nothing and every common load balancer has it.
//!
//! # Limits
//! | limit | default | past it |
//! |---|---|---|
//! | connect timeout | 5 s | `connect` fails ([`Error::is_connect`]) |
//! | one publish | 5 s | the send fails with `is_backplane`; Redis is marked unhealthy until the next check succeeds |
//! | group change acknowledgement | 30 s (as the reference) | `Groups::add`/`remove` fail with `is_backplane` |
//! | client result from another process | the hub's client-result timeout (30 s) | `invoke` fails with a timeout |
//! | messages received, not yet delivered | 65,536 | further ones are dropped and counted |
//! | presence changes queued | 4,096 | presence is rewritten whole at the next heartbeat |
//! | presence TTL | 15 s | a dead process's entries disappear |
//! | health check | every 1 s | (an outage is noticed within one interval, at once on a dropped connection) |
//!
//! # Cargo features
//! - `cluster` (off by default): Redis Cluster support, `RedisBackplaneBuilder::cluster`
//!   (redis-rs's cluster client). A single endpoint, sharded or not, needs nothing extra.
//! - `metrics` (off by default): the counters of [`BackplaneStats`] on the `metrics` facade,
//!   `signalr.backplane.published`, `.publish_failures`, `.received`, `.dropped` and
//!   `.reconnects`, and the `signalr.backplane.lag` histogram: seconds a message from Redis
//!   waited in this process before it was delivered (a growing lag means delivery cannot keep
//!   up; past the pending-message limit messages are dropped and counted).
//!   `describe_metrics()` gives an installed recorder their units and help texts.
//!
//! This crate turns on `signalr-core`'s `msgpack` feature: every publication carries both
//! protocols' records (see [Wire compatibility](#wire-compatibility)).

mod backplane;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod observe;
mod presence;
pub mod protocol;

pub use backplane::{BackplaneStats, RedisBackplane, RedisBackplaneBuilder};
pub use error::Error;
#[cfg(feature = "metrics")]
pub use observe::describe_metrics;
pub use protocol::RedisChannels;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
