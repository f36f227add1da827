//! History, replay from `Last-Event-ID`, heartbeats and stale connections.

use std::time::{Duration, Instant};

use super::{Dispatch, Frame, HubCore};
use crate::frame;
use crate::history::Replay;
use crate::registry::ConnKey;

impl<H> HubCore<H> {
  /// Whether anything is kept for replay: broadcasts to everyone, or
  /// channel publishes.
  pub fn recording(&self) -> bool {
    self.history.recording()
  }

  /// The id a page can embed to subscribe from now on (`lastEventId`):
  /// with a bus, the last stream entry delivered live here (`None` before
  /// the bus first reached Redis); otherwise the history's position (`None`
  /// with history off, where nothing can be replayed).
  pub fn position(&self) -> Option<String> {
    if let Some(mark) = self.bus_mark() {
      return match mark {
        crate::bus::Mark::At(id) => Some(id.to_string()),
        crate::bus::Mark::Unknown => None,
      };
    }
    self.recording().then(|| self.history.position())
  }

  /// What `key` missed since `last_event_id`, before any live event. A
  /// replay obeys the slow-client bound: past `maxBufferedBytes` (or with
  /// an id no longer in history) the client gets an `event: reset`
  /// instead. A socket connection gets the history's own chunks from the
  /// writer (shared, not copied) and `None` comes back; a stream
  /// connection's bytes (at most the bound) come back as one frame for the
  /// binding to write.
  pub fn replay(&mut self, key: ConnKey, last_event_id: &str, now: Instant) -> Option<Dispatch> {
    let bytes = self.replay_bytes(key, last_event_id)?;
    Some(self.send_one(key, Frame::new(bytes), now))
  }

  /// Where a connection just registered starts: first it joins `channels`
  /// (`addClient`'s option), so what follows counts them. With a running
  /// bus it was held for the bus's replay at registration
  /// ([`HubCore::register_with`]), and nothing more happens here;
  /// otherwise history replays what it missed since `last_event_id`, its
  /// channels' messages included ([`HubCore::replay`]).
  pub fn resume(
    &mut self,
    key: ConnKey,
    last_event_id: Option<&str>,
    channels: &[String],
    now: Instant,
  ) -> Option<Dispatch> {
    for channel in channels {
      self.set_membership(key, channel, true);
    }
    if self.bus.running().is_some() {
      return None;
    }
    self.replay(key, last_event_id?, now)
  }

  fn replay_bytes(&mut self, key: ConnKey, last_event_id: &str) -> Option<Vec<u8>> {
    if !self.history.recording() {
      return None;
    }
    let entry = self.registry.get(key)?;
    let socket = entry.handle.transport.is_socket();
    // The broadcasts, and the publishes of the channels it is in now.
    match self.history.since_in(
      last_event_id,
      &entry.channels,
      self.writer_config.max_buffered_bytes,
    ) {
      Replay::Missed(events) if events.is_empty() => None,
      Replay::Missed(events) => {
        self.stats.replay();
        match (socket, &self.writer) {
          (true, Some(writer)) => {
            writer.send_frames(key, events.iter().map(|e| e.chunk().clone()).collect());
            None
          }
          _ => Some(events.iter().flat_map(|e| e.frame()).copied().collect()),
        }
      }
      Replay::Reset => {
        self.stats.reset();
        Some(frame::reset_frame(self.history.newest_id()))
      }
    }
  }

  /// Connections nothing was sent to for `idle` (none while a broadcast to
  /// everyone went out within `idle`).
  pub fn idle(&self, now: Instant, idle: Duration) -> Vec<ConnKey> {
    if now.saturating_duration_since(self.last_broadcast) < idle {
      return Vec::new();
    }
    self
      .registry
      .iter()
      .filter(|e| now.saturating_duration_since(e.last_sent) >= idle)
      .map(|e| e.key)
      .collect()
  }

  /// Connections that have been registered for longer than `max_age`.
  pub fn older_than(&self, now: Instant, max_age: Duration) -> Vec<ConnKey> {
    self.registry.older_than(now, max_age)
  }
}
