//! The native socket writer: threads that write pre-framed bytes straight to
//! the connections' sockets, so a broadcast costs the JS thread one message
//! per writer thread whatever the number of clients.
//!
//! Pure Rust (std and tokio, no napi types). The hub hands each connection,
//! as a duplicated fd ([`SocketFd`]) with a shared [`ConnGauge`], to one
//! [`SocketWriter`] (one thread with its own current-thread runtime); the
//! hub runs several of them as shards ([`crate::shards`]). It submits the
//! app's own writes, broadcasts, targeted sends and replays; the Redis bus's
//! thread submits live entries and releases replays through a
//! [`WriterPort`], ordered with the rest. The owner learns of dead, ended
//! and drained connections through [`WriterEvent`]s and a `notify` callback.
//!
//! Per connection, bytes go out in the order they were submitted. Commands
//! that queued up together are merged first (`command.rs`), so a thread that
//! fell behind catches up with one `writev` per socket. A socket whose
//! kernel buffer is full gets the rest queued by reference (no copy per
//! client) and flushed with `writev` when it becomes writable (`write.rs`).
//! The queue is bounded by `max_buffered_bytes`, past which the slow-client
//! policy applies. Bus entries go through each connection's `Subscription`
//! (`bus.rs`).
//!
//! Files: `handle` (the owner's side), `run` (the thread and its command
//! loop), `command` (commands and their merging), `fanout` (broadcasts and
//! merged runs), `bus` (bus entries and replays, by Subscription), `write` (one
//! connection's write path and queue), `conn` and `state` (what the thread
//! holds), `gauge`, `config`, `event`. Unix-only code is in `io` (fds and
//! readiness) and `budget` (`getrlimit`).

mod budget;
mod bus;
mod command;
mod config;
mod conn;
mod event;
mod fanout;
mod gauge;
mod handle;
mod io;
mod run;
mod state;
#[cfg(test)]
mod testing;
mod write;

pub use crate::backpressure::SlowPolicy;
pub use budget::fd_budget;
pub use config::WriterConfig;
pub use event::{DeadReason, WriterEvent};
pub use gauge::ConnGauge;
pub use handle::{SocketWriter, WriterPort};
pub use io::SocketFd;

/// The name the bus's socket replay targets still use for a connection
/// (`bus::request`): the registry's [`ConnKey`], the one identity from the
/// hub through the shards to the writer. Never reused: a slot's generation
/// grows with each reuse and a slot whose generations are used up is
/// retired, so an ending connection the writer still flushes keeps a key
/// no later connection gets.
pub type WireId = ConnKey;

use crate::registry::ConnKey;
