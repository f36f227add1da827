//! History, replay from `Last-Event-ID`, heartbeats and stale connections.

use std::time::{Duration, Instant};

use super::{Dispatch, Frame, HubCore};
use crate::history::SharedOutcome;
use crate::registry::ConnKey;

impl<H> HubCore<H> {
  /// Whether anything is kept for replay: broadcasts to everyone, or
  /// channel publishes.
  pub(crate) fn recording(&self) -> bool {
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
  pub(crate) fn replay(
    &mut self,
    key: ConnKey,
    last_event_id: &str,
    now: Instant,
  ) -> Option<Dispatch> {
    let frame = self.replay_frame(key, last_event_id)?;
    Some(self.send_one(key, frame, now))
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

  /// What `key` is replayed, shared with every client at the same place
  /// in the same channels while the history does not change
  /// ([`History::since_shared`]): a socket connection is handed the
  /// history's chunks (the list copied, not the bytes); a stream
  /// connection's frame is the replay's one buffer, which names the shared
  /// replay so the binding makes its JS value once.
  ///
  /// [`History::since_shared`]: crate::history::History::since_shared
  fn replay_frame(&mut self, key: ConnKey, last_event_id: &str) -> Option<Frame> {
    if !self.history.recording() {
      return None;
    }
    let entry = self.registry.get(key)?;
    let shard = entry.handle.transport.shard();
    // The broadcasts, and the publishes of the channels it is in now.
    let (replay, shared) = self.history.since_shared(
      last_event_id,
      &entry.channels,
      self.writer_config.max_buffered_bytes,
    );
    if shared && !matches!(replay.outcome, SharedOutcome::Nothing) {
      self.stats.replay_shared();
    }
    match &replay.outcome {
      SharedOutcome::Nothing => None,
      SharedOutcome::Missed { chunks, .. } => {
        self.stats.replay();
        match (shard, &self.writer) {
          (Some(shard), Some(writer)) => {
            writer.send_frames(shard, key, chunks.clone());
            None
          }
          _ => Some(Frame::shared_replay(replay.outcome.bytes(), replay.id)),
        }
      }
      SharedOutcome::Reset(_) => {
        self.stats.reset();
        Some(Frame::shared_replay(replay.outcome.bytes(), replay.id))
      }
    }
  }

  /// Whether the shared replay a frame names ([`Frame::replay_id`]) is
  /// still kept: while it is, every client replayed the same gets that
  /// frame, and the binding may keep the JS value it made of it; once not,
  /// it lets that value go.
  pub fn replay_shared_live(&self, id: u64) -> bool {
    self.history.shared_kept(id)
  }

  /// Connections nothing was sent to for `idle` (none while a broadcast to
  /// everyone went out within `idle`).
  pub(crate) fn idle(&self, now: Instant, idle: Duration) -> Vec<ConnKey> {
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
}
