//! The Redis bus: one hub across processes and machines.
//!
//! Every event meant for more than one connection (`broadcast`, `publish`,
//! `sendToClient`) is appended to one Redis stream (`XADD ... MAXLEN ~`);
//! every instance, the one that wrote it included, reads the stream back
//! on its bus thread, frames each entry once and hands it to its socket
//! writer threads directly, without the JS thread. Stream-transport
//! connections get a batch of entries through one thread-safe call. The
//! entry id is the SSE `id`, so a client that reconnects to any instance
//! is replayed what it missed from the stream.
//!
//! - `handle`: [`Bus`], the JS thread's handle; `request` what it sends the
//!   bus task and what it hears back ([`BusEvent`]); `admission` where a
//!   new connection starts ([`Admission`]); `config` the options and limits;
//!   `error` the typed errors ([`BusError`], [`UrlError`]).
//! - `task`: the bus task's loop; `machine` its decisions, without I/O
//!   (unit-tested); `session`, `live`, `rewind`, `append`, `replay_io` and
//!   `presence` its I/O with Redis; `resp` the reading of Redis's replies;
//!   `shared` the state the handle and the task both see.
//! - [`entry`]: the encoding of an entry, and its frame.
//! - [`subscription`]: one connection's routing and replay gate (no gap,
//!   no duplicate), for the writer threads and the hub alike; `gate` its
//!   parts.
//! - [`link`]: the connection state and the reconnect backoff.
//! - [`replay`]: replay reads, bounded and planned without I/O.
//! - `read_size`: how much one `XREAD` asks for, and how long it may take.
//! - [`target`]: where it connects (one server, the master Sentinels name,
//!   or a Redis Cluster: `cluster`).
//! - [`keys`]: the keys it uses, all in the stream's hash slot.
//!
//! The thread runs a current-thread tokio runtime with two connections: a
//! dedicated one for the blocking `XREAD` (its response timeout off: the
//! redis crate's default 500 ms would fail every `BLOCK` longer than that)
//! and one for everything else (`XADD`, `XRANGE`, presence). A blocking
//! command never shares a multiplexed connection. On a Redis Cluster the
//! second is the crate's cluster connection, and the reader's is to the
//! node that owns the stream's slot (moved when the slot moves).

mod admission;
mod append;
mod cluster;
mod config;
pub mod entry;
mod error;
mod gate;
mod handle;
pub mod keys;
pub mod link;
mod live;
mod machine;
mod presence;
mod read_size;
pub mod replay;
mod replay_io;
mod request;
mod resp;
mod rewind;
mod session;
mod shared;
mod stats;
pub mod subscription;
pub mod target;
mod task;

pub use admission::{Admission, DeliveryLock, Mark};
pub use config::{check_url, BusConfig, CONNECTION_NAME, MAX_PENDING_APPENDS};
pub use error::{BusError, UrlError};
pub use handle::Bus;
pub use replay::ReplayFrom;
pub use request::{BusEvent, ReplayRequest, ReplayTarget};
pub use stats::{BusStats, BusStatsSnapshot};
