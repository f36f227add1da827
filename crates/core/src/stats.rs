//! The hub's counters, one struct type both transports count into: the
//! hub's for stream connections and replays, each writer shard's for its
//! socket connections. Atomics, so either thread counts without a lock;
//! `getStats()` sums them (`hub::stats`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
  /// Frames handed to connections completely (each recipient counts once).
  pub frames_sent: AtomicU64,
  /// Event-stream bytes of those frames (without HTTP chunk framing), so
  /// both transports count the same thing.
  pub bytes_sent: AtomicU64,
  /// Bytes the socket writer put on the wire, chunk framing included.
  pub wire_bytes: AtomicU64,
  /// Frames skipped for slow clients under the `drop` policy.
  pub frames_dropped: AtomicU64,
  /// Connections closed for passing `maxBufferedBytes`.
  pub slow_disconnects: AtomicU64,
  /// Reconnections that were replayed missed events from history.
  pub replays: AtomicU64,
  /// Replays and resets served from a read of the history another
  /// reconnection made (a reconnect storm shares one per distinct place).
  pub replays_shared: AtomicU64,
  /// Reconnections told to reset: their id was no longer in history, or
  /// what they missed was more than one connection may hold.
  pub resets: AtomicU64,
  /// Bytes waiting in the socket writer's queues now.
  pub queued_bytes: AtomicUsize,
}

impl Stats {
  pub fn frames(&self, count: u64, bytes: u64) {
    self.frames_sent.fetch_add(count, Ordering::Relaxed);
    self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
  }

  pub fn dropped(&self, count: u64) {
    self.frames_dropped.fetch_add(count, Ordering::Relaxed);
  }

  pub fn slow_disconnect(&self) {
    self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
  }

  pub fn replay(&self) {
    self.replays.fetch_add(1, Ordering::Relaxed);
  }

  pub fn replay_shared(&self) {
    self.replays_shared.fetch_add(1, Ordering::Relaxed);
  }

  pub fn reset(&self) {
    self.resets.fetch_add(1, Ordering::Relaxed);
  }

  pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
  }
}

/// The hub's figures at one instant, as `getStats()` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
  pub clients: usize,
  pub stream_connections: usize,
  pub socket_connections: usize,
  pub frames_sent: u64,
  pub bytes_sent: u64,
  pub frames_dropped: u64,
  pub channels: usize,
  pub replays: u64,
  pub replays_shared: u64,
  pub resets: u64,
  pub slow_disconnects: u64,
  pub queued_bytes: usize,
  /// Most connections the socket writer may hold; `None` when unlimited.
  pub socket_capacity: Option<usize>,
  /// Writer threads (running, or the number the next start uses).
  pub writer_threads: usize,
  /// Socket connections on each running writer thread.
  pub socket_connections_by_thread: Vec<usize>,
  /// Connections refused for `maxClients` (503).
  pub refused_max_clients: u64,
  /// Connections refused for `maxClientsPerKey` (429).
  pub refused_max_clients_per_key: u64,
  /// Places `initResponse` reserved that `addClient` has not taken yet.
  pub pending_admissions: usize,
  /// Client keys counted by `maxClientsPerKey` now.
  pub admission_keys: usize,
  /// Connections registered on the stream transport so far, by reason
  /// (every reason, zeros included).
  pub stream_fallbacks: Vec<(crate::hub::StreamReason, u64)>,
  /// The Redis bus's figures; `None` when no bus was started.
  pub bus: Option<crate::bus::BusStatsSnapshot>,
}
