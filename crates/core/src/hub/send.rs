//! Sending one frame: the socket connections through the writer, the
//! stream ones named for the binding, then their outcomes settled.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{AppWrite, Effect, HubCore, Outcome, Reason, Removal, Transport};
use crate::registry::ConnKey;

impl<H> HubCore<H> {
  /// Plans one frame's delivery to every connection (`keys` `None`) or to
  /// `keys`: the socket connections get it from the writer right away (one
  /// message, the frame shared), the stream ones are visited with their
  /// handle and congestion so the binding can write them, then report each
  /// [`Outcome`] to [`HubCore::settle`]. Returns how many socket
  /// connections it went to.
  pub fn deliver(
    &mut self,
    keys: Option<&[ConnKey]>,
    chunk: impl FnOnce() -> Arc<[u8]>,
    now: Instant,
    mut visit: impl FnMut(ConnKey, &H, bool),
  ) -> usize {
    let mut wires = Vec::new();
    match keys {
      Some(keys) => {
        for key in keys {
          let Some(entry) = self.registry.get_mut(*key) else {
            continue;
          };
          entry.last_sent = now;
          match &entry.handle.transport {
            Transport::Stream { congested } => visit(entry.key, &entry.handle.handle, *congested),
            Transport::Socket { wire, .. } => wires.push(*wire),
          }
        }
      }
      None => {
        // A broadcast reaches every socket connection with one message and
        // no list; only stream connections are walked, if there are any.
        if self.wires.len() < self.registry.len() {
          for entry in self.registry.iter() {
            if let Transport::Stream { congested } = &entry.handle.transport {
              visit(entry.key, &entry.handle.handle, *congested);
            }
          }
        }
      }
    }
    let socket_count = match keys {
      Some(_) => wires.len(),
      None => self.wires.len(),
    };
    if socket_count > 0 {
      if let Some(writer) = &self.writer {
        match keys {
          Some(_) => writer.send(wires, chunk()),
          None => writer.broadcast(chunk()),
        }
      }
    }
    socket_count
  }

  /// Applies the stream writes' outcomes for a frame of `len` bytes:
  /// counts, congestion, and removal of the slow (`Destroy`, `slow`) and of
  /// those whose write failed (`End`, `error`). Returns how many were
  /// written, and the effects.
  pub fn settle(&mut self, outcomes: &[(ConnKey, Outcome)], len: usize) -> (usize, Vec<Effect<H>>) {
    let mut written = 0;
    let mut dropped = 0;
    let mut effects = Vec::new();
    for (key, outcome) in outcomes {
      let congested = match outcome {
        Outcome::Written { buffering } => {
          written += 1;
          *buffering
        }
        Outcome::Buffered => {
          written += 1;
          true
        }
        Outcome::Dropped => {
          dropped += 1;
          continue;
        }
        Outcome::Slow => {
          effects.extend(self.remove(*key, Removal::Destroy, Reason::Slow));
          continue;
        }
        Outcome::Failed => {
          effects.extend(self.remove(*key, Removal::End, Reason::Error));
          continue;
        }
      };
      if let Some(Transport::Stream { congested: flag }) =
        self.registry.get_mut(*key).map(|e| &mut e.handle.transport)
      {
        *flag = congested;
      }
    }
    self.stats.frames(written as u64, (written * len) as u64);
    self.stats.dropped(dropped);
    (written, effects)
  }

  /// The app's own `res.write` on a socket connection: `chunk` (one HTTP
  /// chunk, empty for none) goes after everything queued for it, and the
  /// answer follows Node's contract against `high_water_mark`.
  pub fn app_write(
    &self,
    key: ConnKey,
    chunk: Option<Arc<[u8]>>,
    high_water_mark: usize,
  ) -> AppWrite {
    let Some(Transport::Socket { wire, gauge }) =
      self.registry.get(key).map(|e| &e.handle.transport)
    else {
      return AppWrite::Gone;
    };
    let Some(writer) = &self.writer else {
      return AppWrite::Gone;
    };
    if let Some(chunk) = chunk {
      gauge.submitted.fetch_add(chunk.len(), Ordering::SeqCst);
      writer.write(*wire, chunk);
    }
    if gauge.backlog() < high_water_mark {
      return AppWrite::Accepted;
    }
    // SeqCst with the writer's side (see `ConnGauge`): either it sees the
    // flag, or this thread sees the backlog it emptied.
    gauge.want_drain.store(true, Ordering::SeqCst);
    if gauge.backlog() == 0 && gauge.want_drain.swap(false, Ordering::SeqCst) {
      return AppWrite::Accepted;
    }
    AppWrite::Full
  }
}
