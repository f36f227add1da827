//! One frame on its way to its recipients, as the core decided it: the
//! socket connections were handed their share through the writer before
//! the [`Dispatch`] comes back, the stream-transport ones are named for
//! the binding to write on the JS thread, and [`HubCore::settle`] takes
//! their outcomes and says what follows (removals, events) and what the
//! call returns.

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Instant;

use super::{Effect, HubCore, Outcome, Reason, Removal, Transport};
use crate::backpressure::{self, Admit, SlowPolicy};
use crate::frame;
use crate::registry::ConnKey;
use crate::shards::ShardGroups;

/// One framed event (or comment): the SSE body, which a stream
/// connection's `write` gets, and its HTTP chunk, which the socket writer
/// sends and the history keeps. Each view is made once; a frame read back
/// from the bus carries only its chunk, whose payload is the body.
#[derive(Debug)]
pub struct Frame {
  body: Body,
  chunk: OnceCell<Arc<[u8]>>,
}

#[derive(Debug)]
enum Body {
  Owned(Vec<u8>),
  /// The body is `chunk[start..len - 2]` of the frame's chunk.
  InChunk {
    start: usize,
  },
  /// A replay shared by every client that stands where this one does
  /// (see [`Frame::shared_replay`]).
  Shared {
    bytes: Arc<[u8]>,
    replay: u64,
  },
}

impl Frame {
  /// A frame from its SSE body; the chunk is made when first needed.
  pub fn new(body: Vec<u8>) -> Frame {
    Frame {
      body: Body::Owned(body),
      chunk: OnceCell::new(),
    }
  }

  /// A frame from the HTTP chunk [`frame::http_chunk`] made of it.
  pub fn from_chunk(chunk: Arc<[u8]>) -> Frame {
    let start = frame::chunk_payload_start(&chunk);
    Frame {
      body: Body::InChunk { start },
      chunk: OnceCell::from(chunk),
    }
  }

  /// A replay's bytes, read once and shared by every client replayed the
  /// same (a reconnect storm): `replay` names them, so the binding can
  /// keep the JS value it makes of them while the core keeps them
  /// ([`HubCore::replay_shared_live`]).
  pub fn shared_replay(bytes: Arc<[u8]>, replay: u64) -> Frame {
    Frame {
      body: Body::Shared { bytes, replay },
      chunk: OnceCell::new(),
    }
  }

  /// The shared replay these bytes are, if they are one.
  pub fn replay_id(&self) -> Option<u64> {
    match &self.body {
      Body::Shared { replay, .. } => Some(*replay),
      _ => None,
    }
  }

  /// A comment: `: text` per line, then the blank line.
  pub fn comment(text: &str) -> Frame {
    let mut body = Vec::with_capacity(text.len() + 4);
    frame::push_comment(&mut body, text);
    body.push(b'\n');
    Frame::new(body)
  }

  /// The SSE body.
  pub fn body(&self) -> &[u8] {
    match &self.body {
      Body::Owned(body) => body,
      Body::Shared { bytes, .. } => bytes,
      Body::InChunk { start } => {
        let chunk = self.chunk.get().map_or(&[][..], |c| &c[..]);
        &chunk[*start..end_of(chunk, *start)]
      }
    }
  }

  /// The frame in HTTP/1.1 chunked coding, shared by every socket
  /// recipient (and the history).
  pub fn chunk(&self) -> Arc<[u8]> {
    self
      .chunk
      .get_or_init(|| frame::http_chunk(self.body()).into())
      .clone()
  }

  /// Where the SSE body starts in [`Frame::chunk`], after the size line;
  /// it ends before the chunk's closing CRLF. The binding hands the chunk
  /// to JS with this, which takes the body out of it as a view.
  pub fn body_start(&self) -> usize {
    frame::chunk_payload_start(&self.chunk())
  }

  /// Bytes of the SSE body (what the counts count).
  pub fn len(&self) -> usize {
    self.body().len()
  }

  /// Whether the body is empty.
  pub fn is_empty(&self) -> bool {
    self.body().is_empty()
  }
}

/// The SSE body inside an HTTP chunk [`frame::http_chunk`] made.
pub(super) fn payload(chunk: &[u8]) -> &[u8] {
  let start = frame::chunk_payload_start(chunk);
  &chunk[start..end_of(chunk, start)]
}

/// Where a chunk's payload ends: before its closing CRLF.
fn end_of(chunk: &[u8], start: usize) -> usize {
  chunk.len().saturating_sub(2).max(start)
}

/// A stream-transport connection the binding writes the frame to.
/// `congested` when Node was buffering for it at the last write: only then
/// does the binding read how much, for [`Dispatch::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
  pub key: ConnKey,
  pub congested: bool,
}

/// How a call's return value is made from the outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
  /// Connections written or queued (socket connections count once their
  /// frame is handed over).
  Written,
  /// [`Count::Written`], plus stream connections whose `write` threw
  /// (they were live when the send began): `sendToClient`'s rule.
  Attempted,
  /// Decided already (an event queued to the bus).
  Fixed(u32),
}

/// A frame on its way: what the binding must write on the JS thread, then
/// report to [`HubCore::settle`].
#[derive(Debug)]
pub struct Dispatch {
  /// The frame.
  pub frame: Frame,
  /// The stream-transport connections to write, in order (empty, and not
  /// allocated, when there are none).
  pub targets: Vec<Target>,
  /// Socket connections the writer was already handed the frame for.
  pub sockets: usize,
  /// Events in the frame: one, but a run of bus entries for the same
  /// stream connections is one frame of several ([`HubCore::bus_frames`]).
  pub(super) events: usize,
  pub(super) count: Count,
  max_buffered_bytes: usize,
  slow_policy: SlowPolicy,
}

impl Dispatch {
  /// The slow-client rule for a target Node holds `pending` bytes for.
  pub fn admit(&self, pending: usize) -> Admit {
    backpressure::admit(
      pending,
      self.frame.len(),
      self.max_buffered_bytes,
      self.slow_policy,
    )
  }
}

/// What settling a [`Dispatch`] gives the binding.
#[derive(Debug)]
pub struct Settled<H> {
  /// The call's return value (a count; a boolean call returns `count > 0`).
  pub count: u32,
  /// What to execute, in order.
  pub effects: Vec<Effect<H>>,
}

impl<H> HubCore<H> {
  /// A dispatch that writes nothing and returns `count`.
  pub(super) fn dispatch_nothing(&self, count: u32) -> Dispatch {
    self.dispatch_of(Frame::new(Vec::new()), Vec::new(), 0, Count::Fixed(count))
  }

  pub(super) fn dispatch_of(
    &self,
    frame: Frame,
    targets: Vec<Target>,
    sockets: usize,
    count: Count,
  ) -> Dispatch {
    Dispatch {
      frame,
      targets,
      sockets,
      events: 1,
      count,
      max_buffered_bytes: self.writer_config.max_buffered_bytes,
      slow_policy: self.writer_config.slow_policy,
    }
  }

  /// Sends `frame` to every connection (`keys` `None`) or to `keys`: the
  /// socket connections get it from the writer now (one message per shard,
  /// the chunk shared, no list for a broadcast), the stream ones come back
  /// as targets. Named connections are marked sent at `now` (heartbeats).
  pub(super) fn fan_out(
    &mut self,
    keys: Option<&[ConnKey]>,
    frame: Frame,
    count: Count,
    now: Instant,
  ) -> Dispatch {
    let mut targets = Vec::new();
    let sockets = match keys {
      Some(keys) => {
        let mut wires = ShardGroups::new();
        for key in keys {
          let Some(entry) = self.registry.get_mut(*key) else {
            continue;
          };
          entry.last_sent = now;
          match &entry.handle.transport {
            Transport::Stream { congested, .. } => targets.push(Target {
              key: entry.key,
              congested: *congested,
            }),
            Transport::Socket { shard, .. } => wires.push(*shard, entry.key),
          }
        }
        let sockets = wires.len();
        if let (true, Some(writer)) = (sockets > 0, &self.writer) {
          writer.send(wires, frame.chunk());
        }
        sockets
      }
      None => {
        // Only stream connections are walked, if there are any.
        if self.sockets < self.registry.len() {
          for entry in self.registry.iter() {
            if let Transport::Stream { congested, .. } = &entry.handle.transport {
              targets.push(Target {
                key: entry.key,
                congested: *congested,
              });
            }
          }
        }
        let sockets = self.sockets;
        if let (true, Some(writer)) = (sockets > 0, &self.writer) {
          writer.broadcast(frame.chunk());
        }
        sockets
      }
    };
    self.dispatch_of(frame, targets, sockets, count)
  }

  /// Applies the stream writes' outcomes of `dispatch`: counts,
  /// congestion, and removal of the slow (`Destroy`, `slow`) and of those
  /// whose write failed (`End`, `error`). Returns the call's value and the
  /// effects.
  pub fn settle(&mut self, dispatch: &Dispatch, outcomes: &[(ConnKey, Outcome)]) -> Settled<H> {
    let mut written = 0;
    let mut dropped = 0;
    let mut threw = 0;
    let mut effects = Vec::new();
    // The targets Node was buffering for when the frame went out (nearly
    // always none, and then nothing is allocated): only theirs and those
    // now buffering change, so the rest are not looked up again. A set, so
    // a send to thousands of slow clients stays linear.
    let were_congested: std::collections::HashSet<ConnKey> = dispatch
      .targets
      .iter()
      .filter(|t| t.congested)
      .map(|t| t.key)
      .collect();
    for (key, outcome) in outcomes {
      let congested = match outcome {
        Outcome::Written { buffering } => *buffering,
        Outcome::Buffered => true,
        Outcome::Dropped => {
          dropped += 1;
          continue;
        }
        Outcome::Slow => {
          effects.extend(self.remove(*key, Removal::Destroy, Reason::Slow));
          continue;
        }
        Outcome::Failed | Outcome::Threw => {
          threw += u32::from(*outcome == Outcome::Threw);
          effects.extend(self.remove(*key, Removal::End, Reason::Error));
          continue;
        }
      };
      written += 1;
      // A flag a nested send set meanwhile stays set: the next send only
      // looks at how much Node holds before it clears it.
      if !congested && !were_congested.contains(key) {
        continue;
      }
      if let Some(Transport::Stream {
        congested: flag, ..
      }) = self.registry.get_mut(*key).map(|e| &mut e.handle.transport)
      {
        *flag = congested;
      }
    }
    let len = dispatch.frame.len();
    self
      .stats
      .frames((written * dispatch.events) as u64, (written * len) as u64);
    self.stats.dropped(dropped);
    let written = (written + dispatch.sockets) as u32;
    let count = match dispatch.count {
      Count::Written => written,
      Count::Attempted => written + threw,
      Count::Fixed(n) => n,
    };
    Settled { count, effects }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// Every way a frame is made: its body is where `body_start` says in its
  /// chunk, up to the closing CRLF.
  #[test]
  fn the_body_is_at_body_start_in_the_chunk() {
    let long = vec![b'x'; 70_000];
    let frames = [
      Frame::new(b"data: 1\n\n".to_vec()),
      Frame::new(long.clone()),
      Frame::new(Vec::new()),
      Frame::from_chunk(frame::http_chunk(b"data: 2\n\n").into()),
      Frame::shared_replay(Arc::from(&b"id: 1\ndata: 3\n\n"[..]), 7),
      Frame::comment("hi"),
    ];
    for f in &frames {
      let chunk = f.chunk();
      let start = f.body_start();
      assert_eq!(&chunk[start..chunk.len() - 2], f.body());
      assert_eq!(&chunk[..start], format!("{:x}\r\n", f.len()).as_bytes());
    }
  }
}
