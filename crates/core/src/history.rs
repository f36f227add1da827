//! Replay history: the last `capacity` broadcast events, each with its id,
//! kept so a client that reconnects with `Last-Event-ID` gets what it missed
//! (WHATWG HTML 9.2.4: the `Last-Event-ID` request header).
//!
//! Pure Rust. Memory is bounded by the capacity: the ring never holds more
//! events than that, and it holds each frame once, shared with the send.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame;

#[derive(Debug, Clone)]
pub struct Recorded {
  pub id: Arc<str>,
  /// The complete SSE frame (`id:` line included) in HTTP/1.1 chunked
  /// coding: the socket writer sends this very buffer, and the SSE frame is
  /// the slice inside it, so one allocation serves both transports.
  chunk: Arc<[u8]>,
  /// Where the SSE frame starts inside `chunk` (after `<hex size>\r\n`).
  frame_start: usize,
}

impl Recorded {
  /// The SSE frame, as the stream transport writes it.
  pub fn frame(&self) -> &[u8] {
    &self.chunk[self.frame_start..self.chunk.len() - 2]
  }

  /// The frame as one HTTP chunk, shared with the broadcast that made it.
  pub fn chunk(&self) -> &Arc<[u8]> {
    &self.chunk
  }
}

/// What a reconnecting client gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a> {
  /// The events after the one it last saw, oldest first (possibly none).
  Missed(Vec<&'a Recorded>),
  /// Its id is not in the buffer any more (or never was), or what it missed
  /// is more than one connection may hold: it missed an unknown number of
  /// events, or too many to send, and should resynchronize.
  Reset,
}

impl PartialEq for Recorded {
  fn eq(&self, other: &Self) -> bool {
    self.id == other.id && self.chunk == other.chunk
  }
}

impl Eq for Recorded {}

#[derive(Debug)]
pub struct History {
  capacity: usize,
  events: VecDeque<Recorded>,
  /// Id of the newest event pushed out of the ring: a client that saw it
  /// missed exactly what the ring holds.
  last_evicted: Option<Arc<str>>,
  /// The last counter this hub generated; ids are `<epoch>:<counter>`,
  /// the counter strictly increasing, unless the app gives its own.
  last_generated: u64,
  /// Random per history (per hub life): an id from another life (another
  /// process, before a restart) is never one of this life's, so its client
  /// gets `reset` rather than this life's events after the same counter.
  epoch: String,
}

/// Characters of an epoch: 8 of base 36 (about 41 random bits).
const EPOCH_LEN: usize = 8;

/// A new random epoch: lowercase letters and digits, never all digits, so
/// an id can never read as a Redis stream id (`<ms>-<seq>`) or a number.
fn new_epoch() -> String {
  const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
  let mut bits = uuid::Uuid::new_v4().as_u128();
  let mut epoch = String::with_capacity(EPOCH_LEN);
  // The first is a letter.
  epoch.push(DIGITS[10 + (bits % 26) as usize] as char);
  bits /= 26;
  for _ in 1..EPOCH_LEN {
    epoch.push(DIGITS[(bits % 36) as usize] as char);
    bits /= 36;
  }
  epoch
}

impl History {
  pub fn new(capacity: usize) -> Self {
    Self {
      capacity,
      events: VecDeque::with_capacity(capacity.min(4096)),
      last_evicted: None,
      last_generated: 0,
      epoch: new_epoch(),
    }
  }

  /// This life's epoch, the part before `:` of every id it generates.
  pub fn epoch(&self) -> &str {
    &self.epoch
  }

  pub fn capacity(&self) -> usize {
    self.capacity
  }

  pub fn len(&self) -> usize {
    self.events.len()
  }

  pub fn is_empty(&self) -> bool {
    self.events.is_empty()
  }

  /// Changes the capacity, dropping the oldest events that no longer fit.
  pub fn set_capacity(&mut self, capacity: usize) {
    self.capacity = capacity;
    while self.events.len() > capacity {
      self.evict();
    }
  }

  /// Id of the newest event held, if any.
  pub fn newest_id(&self) -> Option<&str> {
    self.events.back().map(|e| &*e.id)
  }

  /// Where the history stands now, as an id a client can resume from: the
  /// newest event's, or, before any, this life's start (`<epoch>:0`), from
  /// which a client gets everything recorded after it. (A ring that evicted
  /// holds at least its newest event.)
  pub fn position(&self) -> String {
    self
      .newest_id()
      .map_or_else(|| self.start_id(), str::to_string)
  }

  /// `<epoch>:0`: before this life's first event.
  fn start_id(&self) -> String {
    format!("{}:0", self.epoch)
  }

  /// The id for the next event when the app gives none.
  pub fn next_id(&mut self) -> String {
    self.last_generated += 1;
    format!("{}:{}", self.epoch, self.last_generated)
  }

  /// Keeps `chunk`, an SSE frame in HTTP chunked coding as
  /// [`frame::http_chunk`] makes it, under `id`.
  pub fn record(&mut self, id: &str, chunk: Arc<[u8]>) {
    if self.capacity == 0 {
      return;
    }
    if self.events.len() == self.capacity {
      self.evict();
    }
    let frame_start = frame::chunk_payload_start(&chunk);
    self.events.push_back(Recorded {
      id: Arc::from(id),
      chunk,
      frame_start,
    });
  }

  fn evict(&mut self) {
    if let Some(oldest) = self.events.pop_front() {
      self.last_evicted = Some(oldest.id);
    }
  }

  /// The events after `last_event_id`, as long as their frames add up to at
  /// most `max_bytes` (the slow-client bound: a replay may not queue more
  /// for one connection than live events may). The newest match wins when
  /// an app reused an id. The search walks back from the newest event and
  /// stops past `max_bytes`, so a client asking from far back costs no more
  /// than one that fits.
  pub fn since(&self, last_event_id: &str, max_bytes: usize) -> Replay<'_> {
    let mut bytes = 0usize;
    let mut start = None;
    for (i, event) in self.events.iter().enumerate().rev() {
      if &*event.id == last_event_id {
        start = Some(i + 1);
        break;
      }
      bytes = bytes.saturating_add(event.frame().len());
      if bytes > max_bytes {
        return Replay::Reset;
      }
    }
    let start = match start {
      Some(start) => start,
      None if self.last_evicted.as_deref() == Some(last_event_id) => 0,
      // Nothing was ever evicted: this life's start misses nothing kept.
      None if self.last_evicted.is_none() && last_event_id == self.start_id() => 0,
      None => return Replay::Reset,
    };
    Replay::Missed(self.events.range(start..).collect())
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn generated_ids_carry_an_epoch_that_differs_between_lives() {
    let mut a = History::new(4);
    let mut b = History::new(4);
    let epoch = a.epoch().to_string();
    assert_eq!(epoch.len(), EPOCH_LEN);
    assert!(epoch.as_bytes()[0].is_ascii_lowercase());
    assert!(epoch
      .bytes()
      .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(a.next_id(), format!("{epoch}:1"));
    assert_eq!(a.next_id(), format!("{epoch}:2"));
    assert_ne!(a.epoch(), b.epoch());
    // Another life's id with the same counter is unknown here: reset.
    let id = b.next_id();
    b.record(&id, frame("x"));
    assert_eq!(texts(a.since(&id, ANY)), vec!["RESET"]);
  }

  fn frame(text: &str) -> Arc<[u8]> {
    frame::http_chunk(text.as_bytes()).into()
  }

  fn texts(replay: Replay<'_>) -> Vec<String> {
    match replay {
      Replay::Missed(frames) => frames
        .iter()
        .map(|f| String::from_utf8(f.frame().to_vec()).unwrap())
        .collect(),
      Replay::Reset => vec!["RESET".into()],
    }
  }

  const ANY: usize = usize::MAX;

  #[test]
  fn the_position_replays_exactly_what_came_after_it() {
    let mut h = History::new(2);
    let start = h.position();
    assert_eq!(start, format!("{}:0", h.epoch()));
    assert_eq!(texts(h.since(&start, ANY)), Vec::<String>::new());
    let id = h.next_id();
    h.record(&id, frame("one"));
    assert_eq!(texts(h.since(&start, ANY)), vec!["one"]);
    let now = h.position();
    assert_eq!(now, id);
    for text in ["two", "three"] {
      let id = h.next_id();
      h.record(&id, frame(text));
    }
    assert_eq!(texts(h.since(&now, ANY)), vec!["two", "three"]);
    // The start was evicted past: what it missed is gone.
    assert_eq!(texts(h.since(&start, ANY)), vec!["RESET"]);
  }

  #[test]
  fn generated_ids_strictly_increase() {
    let mut h = History::new(3);
    let ids: Vec<u64> = (0..5)
      .map(|_| h.next_id().rsplit_once(':').unwrap().1.parse().unwrap())
      .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
  }

  #[test]
  fn replays_what_came_after_the_last_seen_id() {
    let mut h = History::new(10);
    for i in 1..=5 {
      h.record(&i.to_string(), frame(&format!("e{i}")));
    }
    assert_eq!(texts(h.since("2", ANY)), vec!["e3", "e4", "e5"]);
    assert_eq!(texts(h.since("5", ANY)), Vec::<String>::new());
    assert_eq!(texts(h.since("99", ANY)), vec!["RESET"]);
  }

  #[test]
  fn memory_is_bounded_by_the_capacity() {
    let mut h = History::new(3);
    for i in 1..=1000 {
      h.record(&i.to_string(), frame("x"));
    }
    assert_eq!(h.len(), 3);
    // 998..=1000 are held: a client that saw 997 missed exactly those.
    assert_eq!(texts(h.since("997", ANY)).len(), 3);
    assert_eq!(texts(h.since("998", ANY)).len(), 2);
    assert_eq!(texts(h.since("996", ANY)), vec!["RESET"]);
    h.set_capacity(1);
    assert_eq!(h.len(), 1);
    assert_eq!(texts(h.since("999", ANY)), vec!["x"]);
  }

  #[test]
  fn a_replay_larger_than_the_bound_is_a_reset() {
    let mut h = History::new(100);
    for i in 1..=50 {
      h.record(&i.to_string(), frame("0123456789"));
    }
    // 10 bytes each: from 40 the client missed 100 bytes.
    assert_eq!(texts(h.since("40", 100)).len(), 10);
    assert_eq!(texts(h.since("39", 100)), vec!["RESET"]);
    assert_eq!(texts(h.since("1", 100)), vec!["RESET"]);
    assert_eq!(texts(h.since("50", 0)), Vec::<String>::new());
    // The chunk is shared, the frame is the slice inside it.
    if let Replay::Missed(events) = h.since("49", ANY) {
      assert_eq!(&events[0].chunk()[..], b"a\r\n0123456789\r\n");
      assert_eq!(events[0].frame(), b"0123456789");
    } else {
      panic!("expected a replay");
    }
  }

  #[test]
  fn zero_capacity_records_nothing() {
    let mut h = History::new(0);
    h.record("1", frame("x"));
    assert!(h.is_empty());
    assert_eq!(h.since("1", ANY), Replay::Reset);
  }

  #[test]
  fn app_ids_are_matched_as_given() {
    let mut h = History::new(5);
    h.record("a", frame("1"));
    h.record("b", frame("2"));
    h.record("a", frame("3"));
    h.record("c", frame("4"));
    assert_eq!(texts(h.since("a", ANY)), vec!["4"]);
    assert_eq!(texts(h.since("b", ANY)), vec!["3", "4"]);
  }
}
