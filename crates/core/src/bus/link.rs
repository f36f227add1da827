//! The bus's connection state and its reconnect schedule: capped
//! exponential backoff, and a notice only when the state changes (one
//! `disconnected` per outage, not one per failed attempt).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
  /// Not connected yet.
  Connecting,
  Connected,
  /// Lost, or never reached; retrying.
  Disconnected,
  /// Stopped by `close()`.
  Closed,
}

impl LinkState {
  pub fn as_str(self) -> &'static str {
    match self {
      LinkState::Connecting => "connecting",
      LinkState::Connected => "connected",
      LinkState::Disconnected => "disconnected",
      LinkState::Closed => "closed",
    }
  }

  pub fn to_u8(self) -> u8 {
    self as u8
  }

  pub fn from_u8(n: u8) -> LinkState {
    match n {
      0 => LinkState::Connecting,
      1 => LinkState::Connected,
      2 => LinkState::Disconnected,
      _ => LinkState::Closed,
    }
  }
}

/// What the app hears of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
  Connected,
  Disconnected(String),
}

#[derive(Debug)]
pub struct Link {
  state: LinkState,
  /// Failed attempts since the last success.
  failures: u32,
  /// Successful connections after the first.
  reconnects: u64,
  first: Duration,
  cap: Duration,
}

impl Link {
  pub fn new(first: Duration, cap: Duration) -> Link {
    Link {
      state: LinkState::Connecting,
      failures: 0,
      reconnects: 0,
      first,
      cap,
    }
  }

  pub fn state(&self) -> LinkState {
    self.state
  }

  pub fn reconnects(&self) -> u64 {
    self.reconnects
  }

  /// A connection attempt succeeded.
  pub fn connected(&mut self) -> Option<Notice> {
    let was = self.state;
    if was == LinkState::Closed {
      return None;
    }
    if was == LinkState::Disconnected {
      self.reconnects += 1;
    }
    self.state = LinkState::Connected;
    self.failures = 0;
    (was != LinkState::Connected).then_some(Notice::Connected)
  }

  /// An attempt failed, or the live connection broke: how long to wait
  /// before the next attempt, and the notice if this is news.
  pub fn failed(&mut self, error: &str) -> (Duration, Option<Notice>) {
    if self.state == LinkState::Closed {
      return (Duration::ZERO, None);
    }
    let notice =
      (self.state != LinkState::Disconnected).then(|| Notice::Disconnected(error.to_string()));
    self.state = LinkState::Disconnected;
    let delay = self
      .first
      .saturating_mul(1u32 << self.failures.min(16))
      .min(self.cap);
    self.failures = self.failures.saturating_add(1);
    (delay, notice)
  }

  pub fn close(&mut self) {
    self.state = LinkState::Closed;
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn backoff_doubles_to_its_cap_and_resets_on_success() {
    let mut link = Link::new(Duration::from_millis(100), Duration::from_secs(2));
    let delays: Vec<u128> = (0..7).map(|_| link.failed("down").0.as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    link.connected();
    assert_eq!(link.failed("down").0.as_millis(), 100);
    for _ in 0..100 {
      link.failed("down");
    }
    assert_eq!(link.failed("down").0, Duration::from_secs(2), "no overflow");
  }

  #[test]
  fn notices_only_on_transitions() {
    let mut link = Link::new(Duration::from_millis(100), Duration::from_secs(2));
    assert_eq!(link.state(), LinkState::Connecting);
    assert_eq!(
      link.failed("refused").1,
      Some(Notice::Disconnected("refused".into())),
      "a first attempt that fails is news"
    );
    assert_eq!(link.failed("refused").1, None);
    assert_eq!(link.connected(), Some(Notice::Connected));
    assert_eq!(link.reconnects(), 1);
    assert_eq!(link.connected(), None);
    assert_eq!(
      link.failed("reset").1,
      Some(Notice::Disconnected("reset".into()))
    );
    assert_eq!(link.connected(), Some(Notice::Connected));
    assert_eq!(link.reconnects(), 2);
  }

  #[test]
  fn a_first_connection_is_not_a_reconnect_and_closed_is_final() {
    let mut link = Link::new(Duration::from_millis(100), Duration::from_secs(2));
    assert_eq!(link.connected(), Some(Notice::Connected));
    assert_eq!(link.reconnects(), 0);
    link.close();
    assert_eq!(link.failed("x"), (Duration::ZERO, None));
    assert_eq!(link.connected(), None);
    assert_eq!(link.state(), LinkState::Closed);
    for state in [
      LinkState::Connecting,
      LinkState::Connected,
      LinkState::Disconnected,
      LinkState::Closed,
    ] {
      assert_eq!(LinkState::from_u8(state.to_u8()), state);
    }
  }
}
