//! [`Subscription`]: what decides whether a live bus entry reaches one
//! connection, written once for both holders. A socket connection's lives
//! on its writer thread (which has no registry to ask), a stream
//! connection's in the hub; each asks [`Subscription::takes`] for every
//! entry and [`Subscription::release`] when its replay arrives.

use std::sync::Arc;

use super::entry::{BusFrame, EntryId, Route};
use super::gate::{Gate, HeldLocal};
use crate::frame::reset_chunk;

/// One connection's view of the bus: who it is (client id and channels,
/// what an entry's [`Route`] names), its replay gate, and the id-less
/// events held for after its replay.
#[derive(Debug, Default)]
pub struct Subscription {
  client: Arc<str>,
  channels: Vec<Arc<str>>,
  gate: Gate,
  held_local: HeldLocal,
}

impl Subscription {
  /// A subscription with no route yet (see [`Subscription::set_route`]);
  /// when `held`, it waits for a replay and lets nothing live through
  /// before [`Subscription::release`].
  pub fn new(held: bool) -> Subscription {
    Subscription {
      gate: if held { Gate::held() } else { Gate::default() },
      ..Subscription::default()
    }
  }

  /// The client id and channels entries are routed by (whenever either
  /// changes).
  pub fn set_route(&mut self, client: Arc<str>, channels: Vec<Arc<str>>) {
    self.client = client;
    self.channels = channels;
  }

  /// True when every entry for it passes unchecked (no replay pending, no
  /// cursor): a batch of broadcasts then needs no per-entry decision.
  pub fn is_open(&self) -> bool {
    self.gate.is_open()
  }

  /// Whether `route` names this connection.
  pub fn is_on(&self, route: &Route) -> bool {
    route.matches(&self.client, &self.channels)
  }

  /// Whether the live entry `frame` goes to this connection now (its gate
  /// moves past it when it does). An entry not routed here is not; an
  /// id-less one (delivered locally while Redis was away) that finds the
  /// gate held is kept, within `max_bytes`, to follow the replay.
  pub fn takes(&mut self, frame: &BusFrame, max_bytes: usize) -> bool {
    if !self.is_on(&frame.route) {
      return false;
    }
    if frame.id.is_none() && self.gate.is_held() {
      self.held_local.hold(&frame.chunk, max_bytes);
      return false;
    }
    self.gate.admits(frame.id)
  }

  /// Its replay arrived: the gate opens (entries up to `cursor`, when
  /// given, are still skipped), and what was held meanwhile is returned, to
  /// be written after the replay (with an `event: reset` if any was
  /// dropped).
  pub fn release(&mut self, cursor: Option<EntryId>) -> Vec<Arc<[u8]>> {
    self.gate.release(cursor);
    self.held_local.take(reset_chunk)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn frame(id: Option<u64>, route: Route, byte: u8) -> BusFrame {
    BusFrame {
      id: id.map(|ms| EntryId { ms, seq: 0 }),
      route,
      chunk: vec![byte; 4].into(),
    }
  }

  fn routed(held: bool) -> Subscription {
    let mut sub = Subscription::new(held);
    sub.set_route("alice".into(), vec!["news".into()]);
    sub
  }

  #[test]
  fn routes_by_client_id_and_channels() {
    let mut sub = routed(false);
    assert!(sub.takes(&frame(Some(1), Route::All, 1), 100));
    assert!(sub.takes(&frame(Some(2), Route::Channel("news".into()), 1), 100));
    assert!(!sub.takes(&frame(Some(3), Route::Channel("sport".into()), 1), 100));
    assert!(sub.takes(&frame(Some(4), Route::Client("alice".into()), 1), 100));
    assert!(!sub.takes(&frame(Some(5), Route::Client("bob".into()), 1), 100));
    sub.set_route("bob".into(), Vec::new());
    assert!(sub.takes(&frame(Some(6), Route::Client("bob".into()), 1), 100));
    assert!(!sub.takes(&frame(Some(7), Route::Channel("news".into()), 1), 100));
  }

  #[test]
  fn a_held_subscription_takes_nothing_then_follows_its_replay_with_what_came_locally() {
    let mut sub = routed(true);
    assert!(!sub.is_open());
    assert!(
      !sub.takes(&frame(Some(1), Route::All, 1), 100),
      "the replay has it"
    );
    assert!(
      !sub.takes(&frame(None, Route::All, 2), 100),
      "held for after"
    );
    assert!(
      !sub.takes(&frame(None, Route::Channel("sport".into()), 3), 100),
      "not routed here: not held"
    );
    let after = sub.release(None);
    assert_eq!(after, vec![frame(None, Route::All, 2).chunk]);
    assert!(sub.is_open());
    assert!(sub.takes(&frame(Some(2), Route::All, 1), 100));
    assert!(sub.release(None).is_empty(), "held events are taken once");
  }

  #[test]
  fn what_does_not_fit_while_held_becomes_a_reset_after_those_kept() {
    let mut sub = routed(true);
    for byte in 1..=3 {
      sub.takes(&frame(None, Route::All, byte), 9);
    }
    let after = sub.release(None);
    assert_eq!(after.len(), 3);
    assert_eq!(
      after[..2],
      [
        frame(None, Route::All, 1).chunk,
        frame(None, Route::All, 2).chunk
      ]
    );
    assert_eq!(after[2], reset_chunk());
  }

  #[test]
  fn a_cursor_skips_what_the_client_has_and_local_events_pass() {
    let mut sub = routed(true);
    assert!(sub.release(Some(EntryId { ms: 5, seq: 0 })).is_empty());
    assert!(!sub.is_open());
    assert!(!sub.takes(&frame(Some(5), Route::All, 1), 100));
    assert!(sub.takes(&frame(None, Route::All, 1), 100));
    assert!(sub.takes(&frame(Some(6), Route::All, 1), 100));
    assert!(sub.is_open());
  }
}
