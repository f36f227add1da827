//! The pure-Rust core of sse-helper-native: everything the hub decides,
//! with no Node-API type anywhere in its dependency tree, so each decision
//! is unit-tested by `cargo test`.
//!
//! - [`frame`]: SSE wire framing and HTTP chunks.
//! - [`registry`]: connections by key, client id and channel.
//! - [`history`]: the replay rings (broadcasts, channels) behind `Last-Event-ID`.
//! - [`backpressure`]: the one slow-client rule both transports apply.
//! - [`stats`]: the counters both transports count into.
//! - [`writer`]: one native socket writer thread.
//! - [`shards`]: the socket writer sharded over several threads.
//! - [`mailbox`]: how a writer or bus thread reports to the JS thread.
//! - [`hub`]: the hub's decisions: calls in, a `Dispatch` or effects out.
//! - [`bus`]: the Redis bus that makes one hub of many instances.

#![deny(clippy::all)]

pub mod backpressure;
pub mod bus;
pub mod frame;
pub mod history;
pub mod hub;
pub mod mailbox;
pub mod registry;
pub mod shards;
pub mod stats;
pub mod writer;

#[cfg(test)]
mod test_util;
