//! The bus's counters: atomics the bus thread and the JS thread both count
//! into, read by `getStats()`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::link::LinkState;

#[derive(Debug, Default)]
pub struct BusStats {
  /// Entries this instance appended to the stream.
  pub entries_written: AtomicU64,
  /// Entries read back from the stream (every instance's).
  pub entries_read: AtomicU64,
  /// Sessions after the first (each reconnection after an outage).
  pub reconnects: AtomicU64,
  /// Reconnecting clients replayed missed entries from the stream.
  pub replays: AtomicU64,
  /// Clients told to reset: their id was gone, they missed more than the
  /// replay bounds, or entries were trimmed during an outage.
  pub resets: AtomicU64,
  /// Entries skipped because they did not follow the encoding.
  pub malformed: AtomicU64,
  /// Events delivered locally, without an id, because Redis was away.
  pub local_fallbacks: AtomicU64,
}

/// The counters at one instant, with the connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusStatsSnapshot {
  pub state: LinkState,
  pub entries_written: u64,
  pub entries_read: u64,
  pub reconnects: u64,
  pub replays: u64,
  pub resets: u64,
  pub malformed: u64,
  pub local_fallbacks: u64,
}

impl BusStats {
  pub fn add(&self, counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
  }

  pub fn snapshot(&self, state: LinkState) -> BusStatsSnapshot {
    let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
    BusStatsSnapshot {
      state,
      entries_written: read(&self.entries_written),
      entries_read: read(&self.entries_read),
      reconnects: read(&self.reconnects),
      replays: read(&self.replays),
      resets: read(&self.resets),
      malformed: read(&self.malformed),
      local_fallbacks: read(&self.local_fallbacks),
    }
  }
}
