//! Replays shared by a reconnect storm: while the history does not change,
//! every client that stands at the same place with the same channels is
//! replayed the same events, so the rings are read once for all of them
//! and the result kept, with its stream bytes made once, until the
//! history changes.
//!
//! Bounded: at most [`MAX_SHARED`] replays are kept, holding at most
//! [`BYTES_FACTOR`] times the replay bound in frames; any change to the
//! history (an event recorded, an id handed out, a capacity changed) lets
//! go of all of them.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame;

/// Most distinct replays kept at once (distinct places or channel sets).
pub const MAX_SHARED: usize = 16;

/// The kept replays' frames add up to at most this many times the replay
/// bound (`maxBufferedBytes`); the oldest go first (one is always kept).
pub const BYTES_FACTOR: usize = 4;

/// What every client at one place, in one set of channels, is replayed.
#[derive(Debug)]
pub struct SharedReplay {
  /// Names this replay for as long as it is kept, never reused (the
  /// binding keeps the JS value of its bytes under it).
  pub id: u64,
  pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
  /// Nothing was missed.
  Nothing,
  /// The missed events' HTTP chunks, oldest first (shared with the rings;
  /// the socket writer sends these very buffers), and the SSE frames
  /// concatenated, made once on first need, for stream connections.
  Missed {
    chunks: Vec<Arc<[u8]>>,
    bytes: OnceCell<Arc<[u8]>>,
  },
  /// The `event: reset` frame.
  Reset(Arc<[u8]>),
}

impl Outcome {
  /// The SSE bytes a stream connection is written (empty for `Nothing`).
  pub fn bytes(&self) -> Arc<[u8]> {
    match self {
      Outcome::Nothing => Arc::from(&[][..]),
      Outcome::Missed { chunks, bytes } => bytes
        .get_or_init(|| {
          let mut out = Vec::with_capacity(chunks.iter().map(|c| payload(c).len()).sum());
          for chunk in chunks {
            out.extend_from_slice(payload(chunk));
          }
          out.into()
        })
        .clone(),
      Outcome::Reset(bytes) => bytes.clone(),
    }
  }

  /// Bytes of SSE frames it stands for.
  fn weight(&self) -> usize {
    match self {
      Outcome::Nothing => 0,
      Outcome::Missed { chunks, .. } => chunks.iter().map(|c| payload(c).len()).sum(),
      Outcome::Reset(bytes) => bytes.len(),
    }
  }
}

/// The SSE frame inside one HTTP chunk.
pub(super) fn payload(chunk: &[u8]) -> &[u8] {
  let start = frame::chunk_payload_start(chunk);
  &chunk[start..chunk.len().saturating_sub(2).max(start)]
}

/// What a shared replay is for: every client with these is replayed the
/// same, at one history version.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Key {
  pub(super) place: Option<u64>,
  /// Sorted.
  pub(super) channels: Vec<Arc<str>>,
  pub(super) max_bytes: usize,
}

/// The replays kept since the history last changed.
#[derive(Debug, Default)]
pub(super) struct Shared {
  entries: VecDeque<(Key, SharedReplay)>,
  weight: usize,
  next_id: u64,
}

impl Shared {
  /// Lets go of every kept replay (the history changed).
  pub(super) fn clear(&mut self) {
    self.entries.clear();
    self.weight = 0;
  }

  /// Bytes of SSE frames the kept replays stand for.
  #[cfg(test)]
  pub(super) fn weight(&self) -> usize {
    self.weight
  }

  pub(super) fn len(&self) -> usize {
    self.entries.len()
  }

  pub(super) fn contains(&self, id: u64) -> bool {
    self.entries.iter().any(|(_, r)| r.id == id)
  }

  /// Where the replay for `key` is kept, if it is.
  pub(super) fn find(&self, key: &Key) -> Option<usize> {
    self.entries.iter().position(|(k, _)| k == key)
  }

  pub(super) fn get(&self, at: usize) -> &SharedReplay {
    &self.entries[at].1
  }

  /// Keeps `outcome` for `key` (the oldest let go of past the bounds);
  /// returns where.
  pub(super) fn insert(&mut self, key: Key, outcome: Outcome) -> usize {
    let weight = outcome.weight();
    let budget = key.max_bytes.saturating_mul(BYTES_FACTOR);
    while !self.entries.is_empty()
      && (self.entries.len() >= MAX_SHARED || self.weight + weight > budget)
    {
      if let Some((_, old)) = self.entries.pop_front() {
        self.weight -= old.outcome.weight();
      }
    }
    self.next_id += 1;
    self.weight += weight;
    self.entries.push_back((
      key,
      SharedReplay {
        id: self.next_id,
        outcome,
      },
    ));
    self.entries.len() - 1
  }
}
