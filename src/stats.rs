//! `getStats()`'s native figures as JS objects: the core's snapshot
//! converted field by field (counts as numbers, an unlimited socket
//! capacity as `Infinity`).

use std::collections::BTreeMap;

use napi_derive::napi;
use sse_helper_core::bus::BusStatsSnapshot;
use sse_helper_core::hub::{Runtime, StreamReason};
use sse_helper_core::stats::StatsSnapshot;

/// What the debug log says of the stream-transport reason `name` (a key
/// of `getStats().streamFallbacks`) on `platform` (`process.platform`)
/// under `runtime` (`'bun'`, `'deno'`, else Node); `null` for a name the
/// core does not count.
#[napi(catch_unwind)]
// Only #[napi]'s registration calls it, and a test build registers nothing.
#[cfg_attr(test, allow(dead_code))]
pub fn describe_stream_reason(name: String, platform: String, runtime: String) -> Option<String> {
  let runtime = match runtime.as_str() {
    "bun" => Runtime::Bun,
    "deno" => Runtime::Deno,
    _ => Runtime::Node,
  };
  StreamReason::from_name(&name).map(|reason| reason.describe(&platform, runtime))
}

/// Registry counters, transports and writer figures at one instant.
#[napi(object)]
pub struct NativeStats {
  /// Registered connections.
  pub clients: u32,
  /// Connections written through the response's own `write`.
  pub stream_connections: u32,
  /// Connections written by the native socket writer.
  pub socket_connections: u32,
  /// Frames handed to connections (each recipient counts once).
  pub frames_sent: f64,
  /// Bytes handed to connections.
  pub bytes_sent: f64,
  /// Frames skipped for slow clients under the `drop` policy.
  pub frames_dropped: f64,
  /// Channels with at least one member.
  pub channels: u32,
  /// Reconnections that were replayed missed events from history.
  pub replays: f64,
  /// Replays and resets that shared a read of the history another
  /// reconnection made (same place, same channels, history unchanged).
  pub replays_shared: f64,
  /// Reconnections whose Last-Event-ID was no longer in history, or whose
  /// missed events were more than `maxBufferedBytes`.
  pub resets: f64,
  /// Connections closed for passing `maxBufferedBytes`.
  pub slow_disconnects: f64,
  /// Bytes waiting in the socket writer's queues now.
  pub queued_bytes: f64,
  /// Most connections this hub's socket writer may hold at once: about
  /// half the open-files limit (each costs a second fd), which Node raises
  /// to the hard limit at startup. Later ones use the stream transport.
  /// `Infinity` where the limit is unlimited or unreadable, 0 with
  /// `transport: 'stream'`.
  pub socket_capacity: f64,
  /// Socket writer threads (running, or the number the first hand-off
  /// starts).
  pub writer_threads: u32,
  /// Socket connections on each running writer thread.
  pub socket_connections_by_thread: Vec<u32>,
  /// Connections refused for `maxClients` (answered 503).
  pub refused_max_clients: f64,
  /// Connections refused for `maxClientsPerKey` (answered 429).
  pub refused_max_clients_per_key: f64,
  /// Places `initResponse` reserved that `addClient` has not taken yet
  /// (each is given back when its response closes).
  pub pending_admissions: u32,
  /// Client keys `maxClientsPerKey` counts now.
  pub admission_keys: u32,
  /// Connections registered on the stream transport since the hub was
  /// made, by why the native writer did not take them (every reason,
  /// zeros included).
  pub stream_fallbacks: BTreeMap<String, f64>,
  /// The Redis bus, when configured.
  pub bus: Option<NativeBusStats>,
}

/// The Redis bus's state and counters.
#[napi(object)]
pub struct NativeBusStats {
  /// `'connecting'`, `'connected'`, `'disconnected'` (retrying) or `'closed'`.
  pub state: String,
  /// Entries this instance appended to the stream.
  pub entries_written: f64,
  /// Entries read back from the stream (every instance's).
  pub entries_read: f64,
  /// Reconnections to Redis after an outage.
  pub reconnects: f64,
  /// Reconnecting clients replayed missed entries from the stream.
  pub replays: f64,
  /// Clients sent `event: reset` by the bus (id trimmed or unknown, more
  /// missed than the replay bounds, or entries trimmed during an outage).
  pub resets: f64,
  /// Entries skipped because they broke the encoding.
  pub malformed: f64,
  /// Events delivered to local clients only, without an id, because Redis
  /// was away.
  pub local_fallbacks: f64,
}

impl NativeStats {
  /// The core's figures, and the bus's when it has one.
  pub fn of(s: StatsSnapshot) -> Self {
    NativeStats {
      clients: s.clients as u32,
      stream_connections: s.stream_connections as u32,
      socket_connections: s.socket_connections as u32,
      frames_sent: s.frames_sent as f64,
      bytes_sent: s.bytes_sent as f64,
      frames_dropped: s.frames_dropped as f64,
      channels: s.channels as u32,
      replays: s.replays as f64,
      replays_shared: s.replays_shared as f64,
      resets: s.resets as f64,
      slow_disconnects: s.slow_disconnects as f64,
      queued_bytes: s.queued_bytes as f64,
      socket_capacity: s.socket_capacity.map_or(f64::INFINITY, |c| c as f64),
      writer_threads: s.writer_threads as u32,
      socket_connections_by_thread: s
        .socket_connections_by_thread
        .iter()
        .map(|&n| n as u32)
        .collect(),
      refused_max_clients: s.refused_max_clients as f64,
      refused_max_clients_per_key: s.refused_max_clients_per_key as f64,
      pending_admissions: s.pending_admissions as u32,
      admission_keys: s.admission_keys as u32,
      stream_fallbacks: s
        .stream_fallbacks
        .iter()
        .map(|&(reason, n)| (reason.name().to_string(), n as f64))
        .collect(),
      bus: s.bus.map(NativeBusStats::of),
    }
  }
}

impl NativeBusStats {
  fn of(b: BusStatsSnapshot) -> Self {
    NativeBusStats {
      state: b.state.as_str().to_string(),
      entries_written: b.entries_written as f64,
      entries_read: b.entries_read as f64,
      reconnects: b.reconnects as f64,
      replays: b.replays as f64,
      resets: b.resets as f64,
      malformed: b.malformed as f64,
      local_fallbacks: b.local_fallbacks as f64,
    }
  }
}
