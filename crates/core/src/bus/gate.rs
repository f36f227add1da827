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

#[cfg(test)]
mod tests {
  use super::*;

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
