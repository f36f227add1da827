//! The hub's decisions, as plain Rust: who is registered and how, who gets
//! a frame, when a client is slow, what a reconnecting client replays, who
//! needs a heartbeat, and how a connection leaves. It takes calls and
//! returns a [`Dispatch`] or [`Effect`]s; it never touches JS. The binding holds one
//! `HubCore` per JS hub, executes the effects on the JS thread, and runs no
//! JS while it holds the core borrowed.
//!
//! `H` is what the binding keeps per connection (its references to the
//! response and the app's meta); the core only stores and returns it.
//!
//! A connection is in exactly one of three states: registered (in the
//! registry), ending (removed, its socket writer still flushing; bounded by
//! `end_timeout`), or gone. Every way out goes through [`HubCore::remove`]
//! or the end of an ending connection, each yielding one
//! [`Effect::Finish`] and at most one `disconnect`.

mod admission;
mod bus;
mod dispatch;
mod error;
mod fallback;
mod lifecycle;
pub mod options;
mod register;
mod replay;
mod request;
mod send;
mod stats;
mod types;

#[cfg(test)]
mod tests;

pub use admission::{AdmissionStats, Admitted, Ticket, DEFAULT_RETRY_AFTER_SECS};
pub use bus::{BusAsk, BusLink, BusStep};
pub use dispatch::{Dispatch, Frame, Settled, Target};
pub use error::CoreError;
pub use fallback::{Runtime, SocketOffer, StreamFallbacks, StreamReason};
pub use request::{Change, HubState, Leave, Outgoing, Placement, Shutdown};
pub use send::{Broadcast, Planned};
pub use types::*;

use admission::Admission;
use bus::{BusSlot, LinkSeen};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::history::History;
use crate::registry::{ConnKey, Registry};
use crate::shards::{default_writer_threads, ShardId, Writers};
use crate::stats::Stats;
use crate::writer::{fd_budget, WriterConfig};

/// Milliseconds from JS as a `Duration`, saturating: any huge value (up to
/// `Number.MAX_VALUE`) means "longer than anything", never a panic (as
/// `Duration::from_secs_f64` would).
pub fn millis(ms: f64) -> Duration {
  Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).unwrap_or(Duration::MAX)
}

pub struct HubCore<H> {
  registry: Registry<Conn<H>>,
  history: History,
  mode: TransportMode,
  writer_config: WriterConfig,
  writer_threads: usize,
  /// The sharded socket writer, once started; kept while it stops, until
  /// every shard has reported `Stopped`.
  writer: Option<Writers>,
  writer_died: bool,
  /// Most connections the writer may hold (see [`crate::writer::fd_budget`]).
  fd_budget: usize,
  /// Registered connections the socket writer holds.
  sockets: usize,
  /// Connections registered on the stream transport, by reason.
  stream_fallbacks: StreamFallbacks,
  /// Connections removed gracefully while their writer still flushes, by
  /// the key the writer knows them by (the one their response carries).
  ending: HashMap<ConnKey, Ending<H>>,
  /// When the last broadcast to everyone went out: heartbeats only go to
  /// connections idle since both this and their own last send.
  last_broadcast: Instant,
  /// `maxClients`, `maxClientsPerKey`, their counts and refusals.
  admission: Admission,
  /// Open, closing, closed, or let go of by JS: one state, never two.
  lifecycle: Lifecycle,
  stats: Arc<Stats>,
  /// The Redis bus: none, running, told to stop, or stopped.
  bus: BusSlot,
  /// Its link as the JS thread was last told, and who waits for it.
  link: LinkSeen,
}

/// A connection out of the registry whose writer thread still flushes it.
struct Ending<H> {
  handle: H,
  shard: ShardId,
}

impl<H> Default for HubCore<H> {
  fn default() -> Self {
    Self::new(fd_budget())
  }
}

impl<H> HubCore<H> {
  /// A hub whose socket writer may hold at most `fd_budget` connections.
  pub fn new(fd_budget: usize) -> Self {
    Self {
      registry: Registry::new(),
      history: History::new(0),
      mode: TransportMode::Auto,
      writer_config: WriterConfig::default(),
      writer_threads: default_writer_threads(),
      writer: None,
      writer_died: false,
      fd_budget,
      sockets: 0,
      stream_fallbacks: StreamFallbacks::default(),
      ending: HashMap::new(),
      last_broadcast: Instant::now(),
      admission: Admission::default(),
      lifecycle: Lifecycle::Open,
      stats: Arc::default(),
      bus: BusSlot::None,
      link: LinkSeen::default(),
    }
  }

  /// Applies `configure()`'s settings. The number of writer threads is
  /// fixed while the writer runs: another one is refused, and nothing
  /// applies.
  pub fn configure(&mut self, settings: Settings) -> Result<(), CoreError> {
    if let (Some(writer), Some(wanted)) = (&self.writer, settings.writer_threads) {
      if writer.threads() != wanted {
        return Err(CoreError::WriterRunning);
      }
    }
    if let Some(mode) = settings.mode {
      self.mode = mode;
    }
    if let Some(bound) = settings.max_buffered_bytes {
      self.writer_config.max_buffered_bytes = bound;
    }
    if let Some(policy) = settings.slow_policy {
      self.writer_config.slow_policy = policy;
    }
    if let Some(size) = settings.history_size {
      self.history.set_capacity(size);
    }
    if let Some(size) = settings.channel_history_size {
      self.history.set_channel_capacity(size);
    }
    if let Some(timeout) = settings.end_timeout {
      self.writer_config.end_timeout = timeout;
    }
    if let Some(threads) = settings.writer_threads {
      self.writer_threads = threads;
    }
    if let Some(max) = settings.max_clients {
      self.admission.max_clients = max;
    }
    if let Some(max) = settings.max_clients_per_key {
      self.admission.max_per_key = max;
    }
    if let Some(secs) = settings.retry_after {
      self.admission.retry_after = secs;
    }
    if let Some(writer) = &self.writer {
      writer.configure(self.writer_config);
    }
    Ok(())
  }

  /// Whether `close()` or `drain()` was called (or the JS hub is gone):
  /// new connections are refused.
  pub(crate) fn is_closing(&self) -> bool {
    self.lifecycle != Lifecycle::Open
  }

  /// `drain()`: new connections are refused from now on
  /// ([`CoreError::Closed`]); the ones here stay until `close()`.
  pub(crate) fn drain(&mut self) {
    if self.lifecycle == Lifecycle::Open {
      self.lifecycle = Lifecycle::Draining;
    }
  }

  /// Whether a new connection can be replayed what it missed (history is
  /// on, or a bus was configured): only then is its `Last-Event-ID` read.
  pub(crate) fn replayable(&self) -> bool {
    self.recording() || !matches!(self.bus, BusSlot::None)
  }
}
