#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The Redis backplane for `signalr-core`: several server processes acting as one hub, on the
//! same Redis channels and payloads as ASP.NET Core's `Microsoft.AspNetCore.SignalR.StackExchangeRedis`,
//! so a Rust process can share a Redis with .NET servers.
//!
//! **Status:** this crate so far holds the wire format, sans-IO: the channel names
//! ([`RedisChannels`]) and the MessagePack payloads of every message kind ([`protocol`]), with
//! byte-exact tests. The lifetime manager that publishes and subscribes over Redis is not built
//! yet; nothing here opens a connection.

pub mod protocol;

pub use protocol::RedisChannels;
