//! The state the JS thread's handle and the bus task both see.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::admission::Live;
use super::entry::{BusFrame, EntryId};
use super::link::LinkState;
use super::request::BusEvent;
use super::stats::BusStats;

/// State both threads see.
pub(super) struct BusShared {
  pub(super) state: AtomicU8,
  pub(super) stats: BusStats,
  /// This instance's registered connections (for presence).
  pub(super) local_count: AtomicUsize,
  /// Stream-transport connections: live entries are handed to the JS
  /// thread only when there are any.
  pub(super) stream_conns: AtomicUsize,
  /// A presence refresh is queued (at most one is).
  pub(super) presence_queued: AtomicBool,
  pub(super) pending_appends: AtomicUsize,
  pub(super) live: Arc<Mutex<Live>>,
  pub(super) events: Mutex<Vec<BusEvent>>,
  pub(super) notify: Arc<dyn Fn() + Send + Sync>,
}

impl BusShared {
  pub(super) fn emit(&self, event: BusEvent) {
    let was_empty = {
      let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
      let was_empty = events.is_empty();
      events.push(event);
      was_empty
    };
    if was_empty {
      (self.notify)();
    }
  }

  pub(super) fn set_state(&self, state: LinkState) {
    self.state.store(state.to_u8(), Ordering::SeqCst);
  }

  pub(super) fn live(&self) -> std::sync::MutexGuard<'_, Live> {
    self.live.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Live entries to every local connection they are for: each writer
  /// thread gets the batch (shared, framed once), and the JS thread too if
  /// it has stream connections. `position` is where the reader now is (the
  /// last entry read, delivered or skipped); `None` for frames that are not
  /// stream entries (a reset, a local fallback).
  pub(super) fn deliver(&self, frames: Vec<BusFrame>, position: Option<EntryId>) {
    let mut live = self.live();
    if position.is_some() {
      live.position = position;
    }
    if frames.is_empty() {
      return;
    }
    let frames: Arc<[BusFrame]> = frames.into();
    for port in &live.ports {
      port.bus(frames.clone());
    }
    if self.stream_conns.load(Ordering::SeqCst) > 0 {
      self.emit(BusEvent::Frames(frames));
    }
  }
}
