//! What a writer thread reports back to its owner.

use crate::registry::ConnKey;

/// Why the writer gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
  /// A write failed (EPIPE, ECONNRESET, ...).
  WriteError,
  /// Its queue passed `max_buffered_bytes` under the disconnect policy (or
  /// an app write would have, under any policy).
  Slow,
  /// It was ended but did not take its queue within `end_timeout`.
  EndTimeout,
}

/// Something the owner must act on, taken with
/// [`SocketWriter::take_events`](super::SocketWriter::take_events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEvent {
  /// The writer stopped writing to it and closed its fd; the binding should
  /// drop the connection.
  Dead(ConnKey, DeadReason),
  /// Everything queued before `end` has been written and the writer let go
  /// of the fd; the binding may now end the response through Node.
  Ended(ConnKey),
  /// The app's writes to it were flushed after one was refused (`write`
  /// returned false): the binding emits `drain` on the response.
  Drain(ConnKey),
  /// The writer thread stopped after
  /// [`SocketWriter::close`](super::SocketWriter::close); every fd it held
  /// is closed.
  Stopped,
  /// The writer thread panicked: every connection it held is gone (their
  /// fds closed). The binding must tear them down and stop using it.
  Died,
}
