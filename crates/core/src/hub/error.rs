//! Every refusal the core makes, as one type. The binding turns each into
//! a JS error in one place (`src/error.rs`): a `TypeError` for a bad
//! argument value, an `Error` with the variant's code otherwise. The
//! messages are part of the API: tests compare them byte for byte.

use std::fmt;

/// Why the core refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
  /// A connection was offered after `close()`.
  Closed,
  /// An event was sent after `close()` told the Redis bus to stop: nothing
  /// can reach the other instances any more, and dropping it silently
  /// would hide that.
  BusClosed,
  /// `writerThreads` changed while the socket writer runs.
  WriterRunning,
  /// `redis` was configured a second time.
  BusRunning,
  /// A new connection was offered while `maxClients` (the value) are
  /// registered.
  Capacity(usize),
  /// An argument's value is out of its range or malformed; the message
  /// starts with the argument's name.
  InvalidValue(String),
}

impl CoreError {
  /// The error's `code` property, as Node's own errors carry one.
  pub fn code(&self) -> &'static str {
    match self {
      CoreError::Closed | CoreError::BusClosed => "ERR_SSE_CLOSED",
      CoreError::WriterRunning => "ERR_SSE_WRITER_RUNNING",
      CoreError::BusRunning => "ERR_SSE_BUS_RUNNING",
      CoreError::Capacity(_) => "ERR_SSE_CAPACITY",
      CoreError::InvalidValue(_) => "ERR_INVALID_ARG_VALUE",
    }
  }

  /// Whether JS sees it as a `TypeError` (a bad argument) rather than an
  /// `Error` (the hub's state refuses).
  pub fn is_type_error(&self) -> bool {
    matches!(self, CoreError::InvalidValue(_))
  }

  /// An [`CoreError::InvalidValue`] from anything printable.
  pub fn invalid(message: impl fmt::Display) -> CoreError {
    CoreError::InvalidValue(message.to_string())
  }
}

impl fmt::Display for CoreError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let CoreError::Capacity(max) = self {
      return write!(f, "the SSE hub is at its limit of {max} clients");
    }
    f.write_str(match self {
      CoreError::Closed => "the SSE hub was closed",
      CoreError::BusClosed => "the SSE hub was closed: its Redis bus takes no more events",
      CoreError::WriterRunning => "options.writerThreads cannot change while the socket writer runs: set it before the first connection (or after close())",
      CoreError::BusRunning => "options.redis is already set: a hub's Redis bus is configured once",
      CoreError::InvalidValue(message) => message,
      CoreError::Capacity(_) => "",
    })
  }
}

impl std::error::Error for CoreError {}
