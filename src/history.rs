//! Replay history: the last `capacity` broadcast events, each with its id,
//! kept so a client that reconnects with `Last-Event-ID` gets what it missed
//! (WHATWG HTML 9.2.4: the `Last-Event-ID` request header).
//!
//! Pure Rust. Memory is bounded by the capacity: the ring never holds more
//! events than that, and it holds each frame once, shared with the send.

use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Recorded {
  pub id: Arc<str>,
  /// The complete SSE frame, `id:` line included.
  pub frame: Arc<[u8]>,
}

/// What a reconnecting client gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a> {
  /// The events after the one it last saw, oldest first (possibly none).
  Missed(Vec<&'a Arc<[u8]>>),
  /// Its id is not in the buffer any more (or never was): it missed an
  /// unknown number of events and should resynchronize.
  Reset,
}

#[derive(Debug)]
pub struct History {
  capacity: usize,
  events: VecDeque<Recorded>,
  /// Id of the newest event pushed out of the ring: a client that saw it
  /// missed exactly what the ring holds.
  last_evicted: Option<Arc<str>>,
  /// The last id this hub generated; ids are strictly increasing integers
  /// unless the app gives its own.
  last_generated: u64,
}

impl History {
  pub fn new(capacity: usize) -> Self {
    Self {
      capacity,
      events: VecDeque::with_capacity(capacity.min(4096)),
      last_evicted: None,
      last_generated: 0,
    }
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

  /// The id for the next event when the app gives none.
  pub fn next_id(&mut self) -> String {
    self.last_generated += 1;
    self.last_generated.to_string()
  }

  pub fn record(&mut self, id: &str, frame: Arc<[u8]>) {
    if self.capacity == 0 {
      return;
    }
    if self.events.len() == self.capacity {
      self.evict();
    }
    self.events.push_back(Recorded {
      id: Arc::from(id),
      frame,
    });
  }

  fn evict(&mut self) {
    if let Some(oldest) = self.events.pop_front() {
      self.last_evicted = Some(oldest.id);
    }
  }

  /// The events after `last_event_id`. The newest match wins when an app
  /// reused an id.
  pub fn since(&self, last_event_id: &str) -> Replay<'_> {
    let start = match self.events.iter().rposition(|e| &*e.id == last_event_id) {
      Some(i) => i + 1,
      None if self.last_evicted.as_deref() == Some(last_event_id) => 0,
      None => return Replay::Reset,
    };
    Replay::Missed(self.events.iter().skip(start).map(|e| &e.frame).collect())
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn frame(text: &str) -> Arc<[u8]> {
    Arc::from(text.as_bytes())
  }

  fn texts(replay: Replay<'_>) -> Vec<String> {
    match replay {
      Replay::Missed(frames) => frames
        .iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect(),
      Replay::Reset => vec!["RESET".into()],
    }
  }

  #[test]
  fn generated_ids_strictly_increase() {
    let mut h = History::new(3);
    let ids: Vec<u64> = (0..5).map(|_| h.next_id().parse().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
  }

  #[test]
  fn replays_what_came_after_the_last_seen_id() {
    let mut h = History::new(10);
    for i in 1..=5 {
      h.record(&i.to_string(), frame(&format!("e{i}")));
    }
    assert_eq!(texts(h.since("2")), vec!["e3", "e4", "e5"]);
    assert_eq!(texts(h.since("5")), Vec::<String>::new());
    assert_eq!(texts(h.since("99")), vec!["RESET"]);
  }

  #[test]
  fn memory_is_bounded_by_the_capacity() {
    let mut h = History::new(3);
    for i in 1..=1000 {
      h.record(&i.to_string(), frame("x"));
    }
    assert_eq!(h.len(), 3);
    // 998..=1000 are held: a client that saw 997 missed exactly those.
    assert_eq!(texts(h.since("997")).len(), 3);
    assert_eq!(texts(h.since("998")).len(), 2);
    assert_eq!(texts(h.since("996")), vec!["RESET"]);
    h.set_capacity(1);
    assert_eq!(h.len(), 1);
    assert_eq!(texts(h.since("999")), vec!["x"]);
  }

  #[test]
  fn zero_capacity_records_nothing() {
    let mut h = History::new(0);
    h.record("1", frame("x"));
    assert!(h.is_empty());
    assert_eq!(h.since("1"), Replay::Reset);
  }

  #[test]
  fn app_ids_are_matched_as_given() {
    let mut h = History::new(5);
    h.record("a", frame("1"));
    h.record("b", frame("2"));
    h.record("a", frame("3"));
    h.record("c", frame("4"));
    assert_eq!(texts(h.since("a")), vec!["4"]);
    assert_eq!(texts(h.since("b")), vec!["3", "4"]);
  }
}
