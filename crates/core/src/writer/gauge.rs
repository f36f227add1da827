//! One connection's backlog, read on the JS thread and kept by the writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One connection's backlog, shared between the binding (which reads it to
/// answer the app's `res.write` like Node would) and the writer.
///
/// The `drain` handshake has each thread store one atomic and then read the
/// other (the JS thread sets `want_drain`, then reads the backlog; the writer
/// lowers the backlog, then takes `want_drain`), so every access is
/// `SeqCst`: with weaker orderings both could read the other's old value and
/// the `drain` would be lost.
#[derive(Debug, Default)]
pub struct ConnGauge {
  /// Bytes of the app's own writes submitted and not yet taken by the writer.
  pub submitted: AtomicUsize,
  /// Bytes in the writer's queue for this connection.
  pub queued: AtomicUsize,
  /// Set when the app's `write` returned false: the writer reports
  /// [`WriterEvent::Drain`](super::WriterEvent::Drain) once the backlog is
  /// gone.
  pub want_drain: AtomicBool,
}

impl ConnGauge {
  /// Everything the connection still has to send.
  pub fn backlog(&self) -> usize {
    self.submitted.load(Ordering::SeqCst) + self.queued.load(Ordering::SeqCst)
  }
}
