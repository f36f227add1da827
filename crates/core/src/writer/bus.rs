//! Redis bus entries on the writer thread: each goes to the connections
//! whose [`Subscription`] takes it (route, replay gate, and id-less entries
//! held for after a replay are decided there, as for stream connections).
//!
//! [`Subscription`]: crate::bus::subscription::Subscription

use crate::registry::ConnKey;
use std::rc::Rc;
use std::sync::Arc;

use super::state::WriterState;
use super::write::write_to;
use crate::bus::entry::{BusFrame, EntryId, Route};

/// Bus entries: a connection whose gate is open gets every broadcast in
/// the batch from one shared list; the others (a channel or client entry in
/// the batch, a gate held for a replay) get their own.
pub(super) fn deliver_bus_frames(state: &Rc<WriterState>, frames: &[BusFrame]) {
  let everyone = frames.iter().all(|f| f.route == Route::All);
  let shared: Vec<Arc<[u8]>> = if everyone {
    frames.iter().map(|f| f.chunk.clone()).collect()
  } else {
    Vec::new()
  };
  // A snapshot: writing may kill a connection, which reorders the table.
  let conns = state.conns.borrow().snapshot();
  for conn in &conns {
    if everyone && conn.subscription.borrow().is_open() {
      write_to(state, conn, &shared);
      continue;
    }
    let max_bytes = state.config.get().max_buffered_bytes;
    let mine: Vec<Arc<[u8]>> = {
      let mut subscription = conn.subscription.borrow_mut();
      frames
        .iter()
        .filter(|f| subscription.takes(f, max_bytes))
        .map(|f| f.chunk.clone())
        .collect()
    };
    if !mine.is_empty() {
      write_to(state, conn, &mine);
    }
  }
}

/// Writes a replay to `wire` and opens its gate (at `cursor`, when given),
/// then what was held for it locally meanwhile.
pub(super) fn release_replay(
  state: &Rc<WriterState>,
  wire: ConnKey,
  mut frames: Vec<Arc<[u8]>>,
  cursor: Option<EntryId>,
) {
  let conn = state.conns.borrow().get(wire);
  if let Some(conn) = conn {
    let held = conn.subscription.borrow_mut().release(cursor);
    frames.extend(held);
    write_to(state, &conn, &frames);
  }
}

/// Sets the client id and channels bus entries route `wire` by.
pub(super) fn set_route(
  state: &WriterState,
  wire: ConnKey,
  client: Arc<str>,
  channels: Vec<Arc<str>>,
) {
  if let Some(conn) = state.conns.borrow().get(wire) {
    conn.subscription.borrow_mut().set_route(client, channels);
  }
}
