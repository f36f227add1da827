//! What one writer thread holds: its connections, settings, event queue and
//! counters, and the bookkeeping every part of it shares.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::{Conn, Table};
use super::{DeadReason, WriterConfig, WriterEvent};
use crate::mailbox::Mailbox;
use crate::stats::Stats;

/// The writer thread's state, owned by its `LocalSet` (no lock: one thread).
pub(super) struct WriterState {
  pub(super) conns: RefCell<Table>,
  pub(super) config: Cell<WriterConfig>,
  pub(super) events: Arc<Mailbox<WriterEvent>>,
  pub(super) stats: Arc<Stats>,
}

impl WriterState {
  pub(super) fn new(
    config: WriterConfig,
    events: Arc<Mailbox<WriterEvent>>,
    stats: Arc<Stats>,
  ) -> WriterState {
    WriterState {
      conns: RefCell::new(Table::default()),
      config: Cell::new(config),
      events,
      stats,
    }
  }

  /// Queues an event for the owner, waking it when the queue was empty.
  pub(super) fn emit(&self, event: WriterEvent) {
    self.events.post(event);
  }

  /// Stops writing to a connection and reports why. Dropping the last `Rc`
  /// closes the duplicated fd and aborts its flush task.
  pub(super) fn kill(&self, conn: &Conn, reason: DeadReason) {
    if let Some(conn) = self.conns.borrow_mut().remove(conn.wire) {
      self.release_queue(&conn);
      // The hub counts the slow disconnect when it removes the connection.
      self.emit(WriterEvent::Dead(conn.wire, reason));
    }
  }

  /// Drops what a connection had queued and uncounts it.
  pub(super) fn release_queue(&self, conn: &Conn) {
    conn.queue.borrow_mut().clear();
    let queued = conn.gauge.queued.swap(0, Ordering::SeqCst);
    self.stats.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
  }

  /// Reports `drain` once the app's refused writes have all left.
  pub(super) fn maybe_drain(&self, conn: &Conn) {
    let gauge = &conn.gauge;
    if gauge.want_drain.load(Ordering::SeqCst)
      && gauge.backlog() == 0
      && gauge.want_drain.swap(false, Ordering::SeqCst)
    {
      self.emit(WriterEvent::Drain(conn.wire));
    }
  }

  /// Counts a frame that has wholly left for the socket.
  pub(super) fn frame_done(&self, chunk: &[u8]) {
    self.stats.frames(1, chunk_payload_len(chunk) as u64);
  }

  /// Lets go of an ended connection whose queue is empty.
  pub(super) fn finish_end(&self, conn: &Conn) {
    if self.conns.borrow_mut().remove(conn.wire).is_some() {
      self.emit(WriterEvent::Ended(conn.wire));
    }
  }
}

/// The payload size an HTTP chunk announces in its `<hex>\r\n` prefix; the
/// whole length for bytes that are not a chunk.
fn chunk_payload_len(chunk: &[u8]) -> usize {
  let line_end = chunk.iter().position(|&b| b == b'\r');
  line_end
    .and_then(|end| std::str::from_utf8(&chunk[..end]).ok())
    .and_then(|hex| usize::from_str_radix(hex, 16).ok())
    .unwrap_or(chunk.len())
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn payload_bytes_exclude_the_chunk_framing() {
    assert_eq!(chunk_payload_len(b"c\r\ndata: \"hi\"\n\n\r\n"), 12);
    assert_eq!(chunk_payload_len(b"no chunk"), 8);
  }
}
