//! The bus's errors, typed: what a count or a flush answers, why a URL is
//! refused, why a session ended. Their `Display` is the text the app sees
//! (JS errors and `disconnected` events carry it), so it stays as it was.

use std::fmt;

/// Why a request to the bus ([`super::Bus::count`]) failed.
#[derive(Debug, Clone)]
pub enum BusError {
  /// The bus thread has stopped.
  Closed,
  /// Redis is away (between sessions).
  NotConnected,
  /// Redis failed or refused the command.
  Redis(redis::RedisError),
}

impl fmt::Display for BusError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match self {
      BusError::Closed => f.write_str("the Redis bus is closed"),
      BusError::NotConnected => f.write_str("Redis is not connected"),
      BusError::Redis(e) => e.fmt(f),
    }
  }
}

impl std::error::Error for BusError {}

impl From<redis::RedisError> for BusError {
  fn from(e: redis::RedisError) -> Self {
    BusError::Redis(e)
  }
}

/// Why a Redis URL (with its CA) cannot be used ([`super::check_url`]).
#[derive(Debug, Clone)]
pub struct UrlError(pub(super) redis::RedisError);

impl fmt::Display for UrlError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    self.0.fmt(f)
  }
}

impl std::error::Error for UrlError {}
