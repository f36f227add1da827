//! How connections leave and how the hub ends: removal, ending socket
//! connections, `close()`, the garbage-collected hub, and what the writer
//! threads report.

use super::{BusSlot, Conn, Effect, Ending, HubCore, Lifecycle, Reason, Removal};
use crate::registry::ConnKey;
use crate::shards::{Event, ShardId, Writers};
use crate::stats::Stats;
use crate::writer::DeadReason;

impl<H> HubCore<H> {
  /// The one way out of the registry. A socket connection ended gracefully
  /// while the writer runs becomes *ending*: the writer flushes its queue,
  /// then [`HubCore::writer_events`] finishes it. Everything else is
  /// finished now. Events come after the entry is gone, `slow` before
  /// `disconnect`. Empty when `key` is not registered.
  pub(crate) fn remove(
    &mut self,
    key: ConnKey,
    removal: Removal,
    reason: Reason,
  ) -> Vec<Effect<H>> {
    let mut effects = Vec::new();
    let Some(entry) = self.registry.remove(key) else {
      return effects;
    };
    let Conn {
      handle,
      transport,
      client_key,
      ..
    } = entry.handle;
    self.left(client_key.as_deref());
    let shard = transport.shard();
    let socket = shard.is_some();
    if socket {
      self.sockets -= 1;
    }
    let ending = match (shard, &mut self.writer) {
      (Some(shard), Some(writer)) if removal == Removal::End => {
        writer.end(shard, key);
        Some(shard)
      }
      (Some(shard), Some(writer)) => {
        writer.remove(shard, key);
        writer.release(shard);
        None
      }
      _ => None,
    };
    match ending {
      // Its key is never reused, so the writer's events for it still name
      // this connection, whatever registers after.
      Some(shard) => {
        self.ending.insert(key, Ending { handle, shard });
      }
      None => effects.push(Effect::Finish {
        handle,
        how: removal,
        socket,
      }),
    }
    if reason == Reason::Slow {
      self.stats.slow_disconnect();
    }
    self.bus_counts();
    if reason != Reason::Rollback && self.reports_events() {
      if reason == Reason::Slow {
        effects.push(Effect::Slow {
          id: entry.id.clone(),
        });
      }
      effects.push(Effect::Disconnect {
        id: entry.id,
        reason,
      });
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  pub(super) fn going_away(&mut self, key: ConnKey, how: Removal) -> Vec<Effect<H>> {
    if self.registry.contains(key) {
      return self.remove(key, how, Reason::Closed);
    }
    let Some(ending) = self.ending.get(&key) else {
      return Vec::new();
    };
    if let Some(writer) = &self.writer {
      writer.remove(ending.shard, key);
    }
    self.finish_ending(key, how)
  }

  /// Ends every connection and refuses new ones; the writer stops once the
  /// last ending connection is done, then [`Effect::Closed`] follows.
  pub(crate) fn close(&mut self) -> Vec<Effect<H>> {
    if matches!(self.lifecycle, Lifecycle::Open | Lifecycle::Draining) {
      self.lifecycle = Lifecycle::Closing;
    }
    self.drop_reservations();
    // Nobody is replayed any more.
    self.history.forget_shared();
    let mut effects = Vec::new();
    for key in self.registry.keys() {
      effects.extend(self.remove(key, Removal::End, Reason::Removed));
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// The JS hub was garbage-collected (no JS may run now): socket
  /// connections are ended through the writer, which flushes them first;
  /// stream connections stay until their `close` event. Events are no
  /// longer reported. The effects hold only `ReleaseHub`, if nothing is left.
  pub(crate) fn orphan(&mut self) -> Vec<Effect<H>> {
    self.lifecycle = match self.lifecycle {
      Lifecycle::Closing => Lifecycle::Orphaned {
        report_closed: true,
      },
      Lifecycle::Released => Lifecycle::Released,
      _ => Lifecycle::Orphaned {
        report_closed: false,
      },
    };
    // Nobody is left to hear from it. No `ready()` can be waiting: its
    // promise keeps the JS hub alive until it is answered.
    self.bus = BusSlot::None;
    self.link.closed();
    let socket_keys: Vec<ConnKey> = self
      .registry
      .iter()
      .filter(|e| e.handle.transport.is_socket())
      .map(|e| e.key)
      .collect();
    let mut effects = Vec::new();
    for key in socket_keys {
      effects.extend(self.remove(key, Removal::End, Reason::Removed));
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  fn finish_ending(&mut self, key: ConnKey, how: Removal) -> Vec<Effect<H>> {
    let mut effects = Vec::new();
    if let Some(Ending { handle, shard }) = self.ending.remove(&key) {
      if let Some(writer) = &mut self.writer {
        writer.release(shard);
      }
      effects.push(Effect::Finish {
        handle,
        how,
        socket: true,
      });
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// After any removal: a closing hub with nothing left stops its writer
  /// (and reports `Closed` once it has); an orphaned one lets go of all.
  fn settle_lifecycle(&mut self, effects: &mut Vec<Effect<H>>) {
    if !self.registry.is_empty() || !self.ending.is_empty() {
      return;
    }
    if !matches!(self.lifecycle, Lifecycle::Open | Lifecycle::Draining) {
      if let Some(writer) = &mut self.writer {
        writer.shutdown();
      }
    }
    if self.writer.as_ref().is_some_and(Writers::stopped) {
      self.retire_writer();
    }
    let stopped = self.writer.is_none();
    self.lifecycle = match self.lifecycle {
      Lifecycle::Closing if stopped => {
        effects.push(Effect::Closed);
        Lifecycle::Closed
      }
      Lifecycle::Orphaned { report_closed } => {
        if report_closed && stopped {
          effects.push(Effect::Closed);
        }
        effects.push(Effect::ReleaseHub);
        Lifecycle::Released
      }
      state => state,
    };
  }

  /// Whether `slow` and `disconnect` are still reported (not once the JS
  /// hub is gone).
  fn reports_events(&self) -> bool {
    !matches!(
      self.lifecycle,
      Lifecycle::Orphaned { .. } | Lifecycle::Released
    )
  }

  /// Drops a writer whose threads have all stopped, keeping its counts.
  fn retire_writer(&mut self) {
    if let Some(writer) = self.writer.take() {
      let done = writer.stats();
      self.stats.frames(
        Stats::read(&done.frames_sent),
        Stats::read(&done.bytes_sent),
      );
      self.stats.dropped(Stats::read(&done.frames_dropped));
    }
  }

  /// What the writer threads reported since last time, as effects.
  pub fn writer_events(&mut self) -> Vec<Effect<H>> {
    let events = match &mut self.writer {
      Some(writer) => writer.take_events(),
      None => return Vec::new(),
    };
    let mut effects = Vec::new();
    for event in events {
      match event {
        Event::Ended(key) => effects.extend(self.finish_ending(key, Removal::End)),
        Event::Dead(wire, why) => {
          if self.ending.contains_key(&wire) {
            effects.extend(self.finish_ending(wire, Removal::Destroy));
          } else if self.holds_socket(wire) {
            let reason = match why {
              DeadReason::Slow => Reason::Slow,
              DeadReason::WriteError | DeadReason::EndTimeout => Reason::Error,
            };
            effects.extend(self.remove(wire, Removal::Destroy, reason));
          }
        }
        Event::Drain(wire) => {
          if self.holds_socket(wire) {
            effects.push(Effect::Drain { key: wire });
          }
        }
        Event::Stopped => self.settle_lifecycle(&mut effects),
        Event::Died { shard, all } => effects.extend(self.writer_died(shard, all)),
      }
    }
    effects
  }

  /// A writer thread panicked: the fds of its connections are closed and
  /// their queues gone. Each of them, registered or ending, is torn down;
  /// when no thread is left, later connections use the stream transport.
  fn writer_died(&mut self, shard: ShardId, all: bool) -> Vec<Effect<H>> {
    if all {
      self.writer_died = true;
    }
    let on_shard = |transport: &super::Transport| transport.shard() == Some(shard);
    let registered: Vec<ConnKey> = self
      .registry
      .iter()
      .filter(|e| on_shard(&e.handle.transport))
      .map(|e| e.key)
      .collect();
    let ending: Vec<ConnKey> = self
      .ending
      .iter()
      .filter(|(_, e)| e.shard == shard)
      .map(|(&key, _)| key)
      .collect();
    let mut effects = Vec::new();
    for key in ending {
      effects.extend(self.finish_ending(key, Removal::Destroy));
    }
    for key in registered {
      effects.extend(self.remove(key, Removal::Destroy, Reason::Error));
    }
    effects.push(Effect::WriterDied { all });
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// Whether `key` is registered and on the socket writer.
  fn holds_socket(&self, key: ConnKey) -> bool {
    self
      .registry
      .get(key)
      .is_some_and(|e| e.handle.transport.is_socket())
  }

  /// Fault injection for tests: a writer thread panics.
  pub fn crash_writer(&self) -> bool {
    self.writer.as_ref().is_some_and(Writers::crash)
  }
}
