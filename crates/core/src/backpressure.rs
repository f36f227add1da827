//! The slow-client decision, one rule for both transports: a connection may
//! hold at most `max_buffered_bytes` that the client has not taken yet. The
//! socket writer applies it to its own queue; the stream transport to what
//! Node buffers for the response (`writableLength`); replay to what it is
//! about to send.

/// What to do with a connection whose backlog would pass the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
  /// Close it (the binding destroys the response).
  Disconnect,
  /// Skip whole frames until the backlog drains.
  Drop,
}

/// The answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
  /// Within the bound: queue (or write) it.
  Queue,
  /// Past the bound under [`SlowPolicy::Drop`]: skip this whole frame.
  Drop,
  /// Past the bound under [`SlowPolicy::Disconnect`]: close the connection.
  Disconnect,
}

/// Whether a frame of `len` bytes may join a backlog of `queued` bytes.
pub fn admit(queued: usize, len: usize, max_buffered_bytes: usize, policy: SlowPolicy) -> Admit {
  if queued.saturating_add(len) <= max_buffered_bytes {
    return Admit::Queue;
  }
  match policy {
    SlowPolicy::Drop => Admit::Drop,
    SlowPolicy::Disconnect => Admit::Disconnect,
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_bound_is_inclusive_and_the_policy_decides_past_it() {
    assert_eq!(admit(0, 10, 10, SlowPolicy::Disconnect), Admit::Queue);
    assert_eq!(admit(5, 5, 10, SlowPolicy::Drop), Admit::Queue);
    assert_eq!(admit(5, 6, 10, SlowPolicy::Drop), Admit::Drop);
    assert_eq!(admit(5, 6, 10, SlowPolicy::Disconnect), Admit::Disconnect);
    // A single frame larger than the bound never fits.
    assert_eq!(admit(0, 11, 10, SlowPolicy::Drop), Admit::Drop);
    assert_eq!(admit(usize::MAX, 1, 10, SlowPolicy::Drop), Admit::Drop);
  }
}
