//! The hub's figures at one instant (`getStats()`).

use std::sync::atomic::Ordering;

use super::{HubCore, TransportMode};
use crate::shards::Writers;
use crate::stats::{Stats, StatsSnapshot};

impl<H> HubCore<H> {
  pub fn stats(&self) -> StatsSnapshot {
    let socket = self.sockets;
    let read = |c: &std::sync::atomic::AtomicU64| Stats::read(c);
    // The hub's own counts (stream connections, replays, writers retired)
    // plus each running writer thread's.
    let writers = self.writer.as_ref().map(Writers::stats).unwrap_or_default();
    let admission = self.admission_stats();
    let both =
      |f: fn(&Stats) -> &std::sync::atomic::AtomicU64| read(f(&self.stats)) + read(f(&writers));
    StatsSnapshot {
      clients: self.registry.len(),
      stream_connections: self.registry.len() - socket,
      socket_connections: socket,
      frames_sent: both(|s| &s.frames_sent),
      bytes_sent: both(|s| &s.bytes_sent),
      frames_dropped: both(|s| &s.frames_dropped),
      channels: self.registry.channel_count(),
      replays: read(&self.stats.replays),
      replays_shared: read(&self.stats.replays_shared),
      resets: read(&self.stats.resets),
      slow_disconnects: read(&self.stats.slow_disconnects),
      queued_bytes: writers.queued_bytes.load(Ordering::Relaxed),
      writer_threads: self
        .writer
        .as_ref()
        .map_or(self.writer_threads, Writers::running),
      socket_connections_by_thread: self
        .writer
        .as_ref()
        .map(Writers::connections)
        .unwrap_or_default(),
      socket_capacity: match (self.mode, self.fd_budget) {
        (TransportMode::Stream, _) => Some(0),
        (_, usize::MAX) => None,
        (_, budget) => Some(budget),
      },
      refused_max_clients: admission.refused_max_clients,
      refused_max_clients_per_key: admission.refused_max_clients_per_key,
      pending_admissions: admission.pending_admissions,
      admission_keys: admission.admission_keys,
      stream_fallbacks: self.stream_fallbacks.by_reason(),
      bus: self.bus_stats(),
    }
  }
}
