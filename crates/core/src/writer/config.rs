//! The writer's settings, changed at run time by [`Command::Configure`].
//!
//! [`Command::Configure`]: super::command::Command::Configure

use std::time::Duration;

use crate::backpressure::SlowPolicy;

/// How a writer thread bounds what it queues for slow clients.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
  /// Most bytes one connection may have queued before the slow-client
  /// policy applies.
  pub max_buffered_bytes: usize,
  /// What happens to a frame past the bound: dropped, or the client
  /// disconnected.
  pub slow_policy: SlowPolicy,
  /// How long an ended connection may take to flush its queue before it
  /// is torn down (a client that stopped reading must not hold its fd and
  /// queue forever).
  pub end_timeout: Duration,
}

impl Default for WriterConfig {
  fn default() -> Self {
    Self {
      max_buffered_bytes: 1024 * 1024,
      slow_policy: SlowPolicy::Disconnect,
      end_timeout: Duration::from_secs(30),
    }
  }
}
