//! The values the hub takes and gives: transports, how and why a
//! connection leaves, the effects the binding executes, stream outcomes
//! and settings.

use std::sync::Arc;
use std::time::Duration;

use crate::backpressure::SlowPolicy;
use crate::bus::subscription::Subscription;
use crate::bus::ReplayFrom;
use crate::registry::ConnKey;
use crate::shards::ShardId;
use crate::writer::ConnGauge;

use super::StreamReason;

/// Which transport new connections may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
  /// The socket writer where the connection allows it, else the stream.
  Auto,
  /// Always the response's own `write`.
  Stream,
}

impl TransportMode {
  /// As `configure({ transport })` spells it.
  pub fn as_str(self) -> &'static str {
    match self {
      TransportMode::Auto => "auto",
      TransportMode::Stream => "stream",
    }
  }
}

/// How one connection is written.
#[derive(Debug)]
pub enum Transport {
  /// Through the response's own `write`, on the JS thread. `congested` is
  /// set while Node buffers for it: only then does the binding read how
  /// much (`writableLength`) to apply the slow-client rule. `reason` is
  /// why the socket writer does not hold it.
  Stream {
    congested: bool,
    reason: StreamReason,
  },
  /// By the socket writer thread `shard`, which knows it by its registry
  /// key; the binding reads its backlog from the gauge it shares with the
  /// writer.
  Socket {
    gauge: Arc<ConnGauge>,
    shard: ShardId,
  },
}

impl Transport {
  /// Whether the socket writer holds it.
  pub fn is_socket(&self) -> bool {
    matches!(self, Transport::Socket { .. })
  }

  /// The writer thread that holds it, if one does.
  pub fn shard(&self) -> Option<ShardId> {
    match self {
      Transport::Socket { shard, .. } => Some(*shard),
      Transport::Stream { .. } => None,
    }
  }
}

/// What the core keeps per connection.
#[derive(Debug)]
pub struct Conn<H> {
  pub handle: H,
  pub transport: Transport,
  /// How live bus entries reach a stream connection: its route, replay
  /// gate and what waits for its replay (a socket connection's lives in
  /// its writer thread, both kept in step with the registry by `route_changed`).
  pub subscription: Subscription,
  /// Where its replay starts, while it waits for [`HubCore::request_replay`](super::HubCore::request_replay)
  /// (a held connection).
  pub replay_from: Option<ReplayFrom>,
  /// Its admission key (`clientKey(req)`), counted while it is registered.
  pub client_key: Option<Arc<str>>,
}

/// How a connection leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
  /// Only forget it: the app took it out of the registry by hand
  /// (`_clients.delete`), or its registration was rolled back.
  Forget,
  /// The app, or Node on the peer's hangup, is destroying it: forget it at
  /// once (the writer drops its queue); its `close` listener stays, to end
  /// it when the close comes, as the original helper's listener does.
  Destroyed,
  /// Its `close` fired: the writer drops it at once (there is no one left
  /// to flush to), and the response is ended unless it already is, as the
  /// original helper's `close` listener does (`removeClient`, then
  /// `res.end()`), so `writableEnded` reads the same afterwards.
  Closed,
  /// End the response gracefully, after whatever is queued for it.
  End,
  /// Tear the connection down (a dead socket, a slow client). Its `close`
  /// listener stays, as with [`Removal::Destroyed`].
  Destroy,
}

/// Why a connection left, as the `disconnect` event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
  /// The client closed the connection.
  Closed,
  /// The app removed it (or it was ended by the app, or was stale).
  Removed,
  /// A write failed.
  Error,
  /// It fell further behind than `maxBufferedBytes` allows.
  Slow,
  /// A registration that failed half-way: no event, the app never saw it.
  Rollback,
}

impl Reason {
  pub fn as_str(self) -> &'static str {
    match self {
      Reason::Closed => "close",
      Reason::Removed => "removed",
      Reason::Error => "error",
      Reason::Slow => "slow",
      Reason::Rollback => "rollback",
    }
  }
}

/// What the binding must do, in order, after a call into the core.
#[derive(Debug)]
pub enum Effect<H> {
  /// Detach the `close` listener, put Node's methods back (when `socket`),
  /// finish the response as `how` says, then release `handle`.
  Finish {
    handle: H,
    how: Removal,
    socket: bool,
  },
  /// Emit `slow` for this client id.
  Slow { id: Arc<str> },
  /// Emit `disconnect`.
  Disconnect { id: Arc<str>, reason: Reason },
  /// Emit `drain` on this connection's response.
  Drain { key: ConnKey },
  /// A writer thread died; report it (its connections are being torn down
  /// by the `Finish` effects around this one). `all` when no writer thread
  /// is left, so new connections use the stream transport.
  WriterDied { all: bool },
  /// `close()` has finished: nothing is registered or ending, the writer
  /// has stopped.
  Closed,
  /// The JS hub was garbage-collected and nothing is left: release the
  /// hub's own references.
  ReleaseHub,
}

/// The result of one stream write, as the binding saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
  /// Written; `buffering` when Node still holds bytes for it.
  Written { buffering: bool },
  /// Written, but `write` returned false: Node is buffering.
  Buffered,
  /// Skipped: past the bound under the `drop` policy.
  Dropped,
  /// Not written: past the bound under the `disconnect` policy.
  Slow,
  /// The response had already ended.
  Failed,
  /// Its `write` threw (or was not a function): ended and removed as
  /// [`Outcome::Failed`], but it was live when the send began.
  Threw,
}

/// What the app's own `res.write` on a socket connection should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppWrite {
  /// Queued; the backlog is below the high-water mark (`true`).
  Accepted,
  /// Queued; the backlog reached the mark (`false`, then `drain`).
  Full,
  /// The connection is no longer registered: nothing was written.
  Gone,
}

/// Settings the binding parsed from `configure()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Settings {
  pub mode: Option<TransportMode>,
  pub max_buffered_bytes: Option<usize>,
  pub slow_policy: Option<SlowPolicy>,
  pub history_size: Option<usize>,
  /// Publishes kept per channel for replay (0: none).
  pub channel_history_size: Option<usize>,
  pub end_timeout: Option<Duration>,
  /// Writer threads; applies when the writer starts (the first hand-off,
  /// or the first after the writer stopped).
  pub writer_threads: Option<usize>,
  /// Most connections the hub takes (0: no limit).
  pub max_clients: Option<usize>,
  /// Most connections per client key (0: no limit).
  pub max_clients_per_key: Option<usize>,
  /// A refusal's `Retry-After`, in whole seconds.
  pub retry_after: Option<u32>,
}

/// Where the hub is in its life. The states exclude each other: a hub is
/// never closing and closed at once, and one let go of by JS reports
/// nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
  /// Takes connections.
  Open,
  /// `drain()` was called: new connections are refused, the ones here stay
  /// (and the writer keeps running) until `close()`.
  Draining,
  /// `close()` was called: new connections are refused; [`Effect::Closed`]
  /// follows once nothing is left and the writer has stopped.
  Closing,
  /// `close()` has finished and was reported.
  Closed,
  /// The JS hub was garbage-collected: socket connections end through the
  /// writer, stream ones at their `close`; events are no longer reported.
  /// `report_closed` when it was closing and `Closed` is still owed.
  Orphaned { report_closed: bool },
  /// Orphaned and nothing was left: the hub let go of its references.
  Released,
}
