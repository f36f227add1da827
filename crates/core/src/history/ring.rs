//! [`Ring`]: the last events of one stream of history (the broadcasts to
//! everyone, or one channel's publishes), oldest first, bounded by count.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame;

/// One kept event.
#[derive(Debug, Clone)]
pub struct Recorded {
  pub id: Arc<str>,
  /// Its place in the hub's one sequence of recorded events (every ring's):
  /// replays merge rings in this order.
  pub(super) seq: u64,
  /// The complete SSE frame (`id:` line included) in HTTP/1.1 chunked
  /// coding: the socket writer sends this very buffer, and the SSE frame is
  /// the slice inside it, so one allocation serves both transports.
  chunk: Arc<[u8]>,
  /// Where the SSE frame starts inside `chunk` (after `<hex size>\r\n`).
  frame_start: usize,
}

impl Recorded {
  pub(super) fn new(id: Arc<str>, seq: u64, chunk: Arc<[u8]>) -> Recorded {
    let frame_start = frame::chunk_payload_start(&chunk);
    Recorded {
      id,
      seq,
      chunk,
      frame_start,
    }
  }

  /// The SSE frame, as the stream transport writes it.
  pub fn frame(&self) -> &[u8] {
    &self.chunk[self.frame_start..self.chunk.len() - 2]
  }

  /// The frame as one HTTP chunk, shared with the broadcast that made it.
  pub fn chunk(&self) -> &Arc<[u8]> {
    &self.chunk
  }
}

impl PartialEq for Recorded {
  fn eq(&self, other: &Self) -> bool {
    self.id == other.id && self.chunk == other.chunk
  }
}

impl Eq for Recorded {}

/// The newest event a ring let go of: a client that saw it missed exactly
/// what the ring holds.
#[derive(Debug, Clone)]
pub(super) struct Evicted {
  pub(super) id: Arc<str>,
  pub(super) seq: u64,
}

#[derive(Debug)]
pub(super) struct Ring {
  capacity: usize,
  events: VecDeque<Recorded>,
  evicted: Option<Evicted>,
  /// The newest place this channel may have lost before the ring was made
  /// (an earlier ring of it was let go of as a whole): a client from before
  /// it missed something.
  floor: u64,
}

impl Ring {
  /// The broadcasts' ring, sized up front (it is one).
  pub(super) fn new(capacity: usize) -> Ring {
    Ring {
      capacity,
      events: VecDeque::with_capacity(capacity.min(4096)),
      evicted: None,
      floor: 0,
    }
  }

  /// A channel's ring: it grows as it fills (there may be thousands), and
  /// knows what an earlier ring of the channel may have lost.
  pub(super) fn for_channel(capacity: usize, floor: u64) -> Ring {
    Ring {
      capacity,
      events: VecDeque::new(),
      evicted: None,
      floor,
    }
  }

  pub(super) fn capacity(&self) -> usize {
    self.capacity
  }

  /// The newest place it holds or let go of (0: none).
  pub(super) fn newest_seq(&self) -> u64 {
    self
      .events
      .back()
      .map(|e| e.seq)
      .or(self.evicted.as_ref().map(|e| e.seq))
      .unwrap_or(0)
  }

  /// What an earlier ring of its channel may have lost.
  pub(super) fn floor(&self) -> u64 {
    self.floor
  }

  /// Its events, for forgetting them.
  pub(super) fn into_events(self) -> Vec<Recorded> {
    self.events.into()
  }

  pub(super) fn len(&self) -> usize {
    self.events.len()
  }

  pub(super) fn newest(&self) -> Option<&Recorded> {
    self.events.back()
  }

  pub(super) fn evicted(&self) -> Option<&Evicted> {
    self.evicted.as_ref()
  }

  /// Changes the capacity; returns the events that no longer fit, oldest first.
  pub(super) fn set_capacity(&mut self, capacity: usize) -> Vec<Recorded> {
    self.capacity = capacity;
    let mut out = Vec::new();
    while self.events.len() > capacity {
      out.extend(self.evict());
    }
    out
  }

  /// Keeps `event`; returns the one it pushed out, if the ring was full.
  pub(super) fn push(&mut self, event: Recorded) -> Option<Recorded> {
    if self.capacity == 0 {
      return None;
    }
    let out = if self.events.len() == self.capacity {
      self.evict()
    } else {
      None
    };
    self.events.push_back(event);
    out
  }

  fn evict(&mut self) -> Option<Recorded> {
    let oldest = self.events.pop_front()?;
    self.evicted = Some(Evicted {
      id: oldest.id.clone(),
      seq: oldest.seq,
    });
    Some(oldest)
  }

  /// Whether an event after `seq` was let go of (a client at `seq` missed it).
  pub(super) fn lost_after(&self, seq: u64) -> bool {
    seq < self.floor || self.evicted.as_ref().is_some_and(|e| e.seq > seq)
  }

  /// The events after `seq`, newest first, walking back; stops (false)
  /// once their frames add up to more than `budget` bytes, which it
  /// lowers by what it takes.
  pub(super) fn after<'a>(
    &'a self,
    seq: u64,
    budget: &mut usize,
    out: &mut Vec<&'a Recorded>,
  ) -> bool {
    for event in self.events.iter().rev() {
      if event.seq <= seq {
        break;
      }
      match budget.checked_sub(event.frame().len()) {
        Some(left) => *budget = left,
        None => return false,
      }
      out.push(event);
    }
    true
  }
}
