//! Redis bus entries on the writer thread: each goes to the connections its
//! route names, through each one's replay gate, and an id-less entry (sent
//! locally while Redis was away) that finds a gate held waits in
//! `held_local` until that connection's replay is released.

use crate::registry::ConnKey;
use std::rc::Rc;
use std::sync::Arc;

use super::conn::Conn;
use super::state::WriterState;
use super::write::write_to;
use crate::bus::entry::{BusFrame, EntryId, Route};
use crate::frame::reset_chunk;

impl Conn {
  /// Whether a bus entry goes to this connection now (the gate moves on
  /// when it does). An id-less one that finds the gate held is kept for
  /// after the replay, within `max_bytes`.
  fn takes(&self, frame: &BusFrame, max_bytes: usize) -> bool {
    if !frame
      .route
      .matches(&self.client.borrow(), &self.channels.borrow())
    {
      return false;
    }
    if frame.id.is_none() && self.gate.get().is_held() {
      self.held_local.borrow_mut().hold(&frame.chunk, max_bytes);
      return false;
    }
    let mut gate = self.gate.get();
    let admitted = gate.admits(frame.id);
    self.gate.set(gate);
    admitted
  }
}

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
    if everyone && conn.gate.get().is_open() {
      write_to(state, conn, &shared);
      continue;
    }
    let mine: Vec<Arc<[u8]>> = frames
      .iter()
      .filter(|f| conn.takes(f, state.config.get().max_buffered_bytes))
      .map(|f| f.chunk.clone())
      .collect();
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
    let mut gate = conn.gate.get();
    gate.release(cursor);
    conn.gate.set(gate);
    frames.extend(conn.held_local.borrow_mut().take(reset_chunk));
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
    *conn.client.borrow_mut() = client;
    *conn.channels.borrow_mut() = channels;
  }
}
