//! The replay gate of one connection: what keeps "missed entries, then
//! live ones" free of gaps and duplicates.
//!
//! A connection that reconnects with a `Last-Event-ID` is registered held:
//! live entries pass it by, because the bus will replay them. The bus serves
//! the replay between two reads of the stream, up to the last entry it has
//! delivered live (L), and releases the gate in the same ordered queue as
//! the live entries, so every entry up to L came from the replay and every
//! later one comes live. When the client's id is newer than L (another
//! instance read further), the gate keeps that id as a cursor and lets only
//! newer entries through.

use std::sync::Arc;

use super::entry::EntryId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
  held: bool,
  cursor: Option<EntryId>,
}

impl Gate {
  /// A gate that lets nothing live through until [`Gate::release`].
  pub fn held() -> Gate {
    Gate {
      held: true,
      cursor: None,
    }
  }

  /// True when every live entry passes (no hold, no cursor): the common
  /// case, where a broadcast needs no per-connection check.
  pub fn is_open(&self) -> bool {
    !self.held && self.cursor.is_none()
  }

  pub fn is_held(&self) -> bool {
    self.held
  }

  /// Opens the gate after a replay; entries up to `cursor` (when given)
  /// are still skipped.
  pub fn release(&mut self, cursor: Option<EntryId>) {
    self.held = false;
    self.cursor = cursor;
  }

  /// Whether a live entry with this id goes to the connection. An entry
  /// without id (delivered locally while Redis was down) passes unless held.
  pub fn admits(&mut self, id: Option<EntryId>) -> bool {
    if self.held {
      return false;
    }
    match (self.cursor, id) {
      (Some(cursor), Some(id)) if id <= cursor => false,
      (Some(_), Some(_)) => {
        // Stream ids only grow: past the cursor once, past it for good.
        self.cursor = None;
        true
      }
      _ => true,
    }
  }
}

/// Events without an id (delivered locally while Redis was away) that came
/// while a connection's gate was held: they follow its replay. Bounded by
/// `maxBufferedBytes`; what does not fit is dropped, and the connection is
/// told so with an `event: reset` after those kept, never a silent gap.
#[derive(Debug, Default)]
pub struct HeldLocal {
  chunks: Vec<Arc<[u8]>>,
  bytes: usize,
  dropped: bool,
}

impl HeldLocal {
  /// Keeps `chunk` if it fits within `max_bytes` with those kept so far.
  /// Once one is dropped, later ones are too: the client's events stay a
  /// prefix of what was sent, then the reset.
  pub fn hold(&mut self, chunk: &Arc<[u8]>, max_bytes: usize) {
    if !self.dropped && self.bytes + chunk.len() <= max_bytes {
      self.bytes += chunk.len();
      self.chunks.push(chunk.clone());
    } else {
      self.dropped = true;
    }
  }

  /// What follows the replay, in order: the chunks kept, then `reset` if
  /// any was dropped. Empties it.
  pub fn take(&mut self, reset: impl FnOnce() -> Arc<[u8]>) -> Vec<Arc<[u8]>> {
    let mut chunks = std::mem::take(&mut self.chunks);
    if std::mem::take(&mut self.dropped) {
      chunks.push(reset());
    }
    self.bytes = 0;
    chunks
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn held_local_events_keep_a_prefix_within_the_cap_then_a_reset() {
    let chunk = |b: u8| -> Arc<[u8]> { vec![b; 4].into() };
    let mut held = HeldLocal::default();
    for b in 1..=4 {
      held.hold(&chunk(b), 10);
    }
    let reset = || -> Arc<[u8]> { b"R".as_slice().into() };
    let out = held.take(reset);
    assert_eq!(out, vec![chunk(1), chunk(2), b"R".as_slice().into()]);
    // Empty again, and nothing dropped: no reset.
    held.hold(&chunk(5), 10);
    assert_eq!(held.take(reset), vec![chunk(5)]);
    assert!(held.take(reset).is_empty());
  }

  fn id(ms: u64) -> Option<EntryId> {
    Some(EntryId { ms, seq: 0 })
  }

  #[test]
  fn a_held_gate_passes_nothing_until_released() {
    let mut gate = Gate::held();
    assert!(!gate.is_open());
    assert!(!gate.admits(id(1)));
    assert!(!gate.admits(None));
    gate.release(None);
    assert!(gate.is_open());
    assert!(gate.admits(id(2)));
  }

  #[test]
  fn a_cursor_skips_what_the_client_already_has_then_opens() {
    let mut gate = Gate::held();
    gate.release(id(5));
    assert!(!gate.admits(id(4)));
    assert!(!gate.admits(id(5)));
    assert!(gate.admits(None), "local events pass");
    assert!(gate.admits(id(6)));
    assert!(gate.is_open());
    assert!(gate.admits(id(3)), "an open gate checks nothing");
  }
}
