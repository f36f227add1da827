//! Every refusal the core makes, and the one failure it reports on its own
//! (a writer thread's death, as an `'error'` event), as one type. The
//! binding turns each into a JS error in one place (`src/error.rs`): a
//! `TypeError` for a bad argument value, an `Error` with the variant's code
//! otherwise. The messages are part of the API: tests compare them byte for
//! byte.

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
  /// A new connection was offered while `max` (`maxClients`) are
  /// registered or reserved; `retry_after` is the refusal's `Retry-After`
  /// in seconds.
  Capacity { max: usize, retry_after: u32 },
  /// A new connection was offered while `max` (`maxClientsPerKey`) under
  /// its `key` are registered or reserved.
  KeyCapacity {
    max: usize,
    key: String,
    retry_after: u32,
  },
  /// An argument's value is out of its range or malformed; the message
  /// starts with the argument's name.
  InvalidValue(String),
  /// A request to the Redis bus (`globalClientCount()`) failed; the
  /// bus's reason.
  Bus(String),
  /// A socket writer thread stopped unexpectedly (`all`: the last one);
  /// its connections were closed. Reported, never a refusal.
  WriterDied { all: bool },
}

impl CoreError {
  /// The error's `code` property, as Node's own errors carry one.
  pub fn code(&self) -> &'static str {
    match self {
      CoreError::Closed | CoreError::BusClosed => "ERR_SSE_CLOSED",
      CoreError::WriterRunning => "ERR_SSE_WRITER_RUNNING",
      CoreError::BusRunning => "ERR_SSE_BUS_RUNNING",
      CoreError::Capacity { .. } => "ERR_SSE_CAPACITY",
      CoreError::KeyCapacity { .. } => "ERR_SSE_KEY_CAPACITY",
      CoreError::InvalidValue(_) => "ERR_INVALID_ARG_VALUE",
      CoreError::Bus(_) => "ERR_SSE_BUS",
      CoreError::WriterDied { .. } => "ERR_SSE_WRITER_DIED",
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
    match self {
      CoreError::Capacity { max, .. } => {
        return write!(f, "the SSE hub is at its limit of {max} clients");
      }
      CoreError::KeyCapacity { max, .. } => {
        return write!(f, "the SSE hub is at its limit of {max} clients per key");
      }
      _ => {}
    }
    if let CoreError::Bus(reason) = self {
      return write!(f, "Redis bus: {reason}");
    }
    f.write_str(match self {
      CoreError::Closed => "the SSE hub was closed",
      CoreError::BusClosed => "the SSE hub was closed: its Redis bus takes no more events",
      CoreError::WriterRunning => "options.writerThreads cannot change while the socket writer runs: set it before the first connection (or after close())",
      CoreError::BusRunning => "options.redis is already set: a hub's Redis bus is configured once",
      CoreError::InvalidValue(message) => message,
      CoreError::WriterDied { all: true } => {
        "the native socket writer stopped unexpectedly; its connections were closed and new ones use the stream transport"
      }
      CoreError::WriterDied { all: false } => {
        "a native socket writer thread stopped unexpectedly; its connections were closed and the other threads take new ones"
      }
      CoreError::Capacity { .. } | CoreError::KeyCapacity { .. } | CoreError::Bus(_) => "",
    })
  }
}

impl std::error::Error for CoreError {}
