use super::*;
use crate::frame;

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

fn channels(names: &[&str]) -> Vec<Arc<str>> {
  names.iter().map(|n| Arc::from(*n)).collect()
}

/// A history with channel rings of `per_channel`, and `record(ring, text)`
/// taking the next generated id.
fn with_channels(global: usize, per_channel: usize) -> History {
  let mut h = History::new(global);
  h.set_channel_capacity(per_channel);
  h
}

fn record(h: &mut History, channel: Option<&str>, text: &str) -> String {
  let id = h.next_id();
  h.record_in(channel, &id, frame(text));
  id
}

#[test]
fn a_member_gets_broadcasts_and_its_channels_merged_in_sequence() {
  let mut h = with_channels(10, 10);
  let start = h.position();
  record(&mut h, None, "b1");
  record(&mut h, Some("a"), "a1");
  record(&mut h, Some("z"), "z1");
  let mid = record(&mut h, None, "b2");
  record(&mut h, Some("a"), "a2");
  assert_eq!(
    texts(h.since_in(&start, &channels(&["a"]), ANY)),
    vec!["b1", "a1", "b2", "a2"]
  );
  assert_eq!(texts(h.since_in(&start, &[], ANY)), vec!["b1", "b2"]);
  assert_eq!(
    texts(h.since_in(&mid, &channels(&["a", "z"]), ANY)),
    vec!["a2"]
  );
  // The position is the newest event of any ring, and a client there
  // misses nothing, whichever channels it reads.
  let now = h.position();
  assert!(now.ends_with(":5"));
  assert_eq!(
    texts(h.since_in(&now, &channels(&["z"]), ANY)),
    Vec::<String>::new()
  );
}

#[test]
fn a_channel_ring_that_let_go_of_a_missed_event_is_a_reset_for_its_members_only() {
  let mut h = with_channels(10, 2);
  let start = h.position();
  for text in ["a1", "a2", "a3"] {
    record(&mut h, Some("a"), text);
  }
  assert_eq!(
    texts(h.since_in(&start, &channels(&["a"]), ANY)),
    vec!["RESET"]
  );
  assert_eq!(texts(h.since_in(&start, &[], ANY)), Vec::<String>::new());
  // The newest let go of is a place a member resumes from exactly.
  assert_eq!(
    texts(h.since_in(&format!("{}:1", h.epoch()), &channels(&["a"]), ANY)),
    vec!["a2", "a3"]
  );
}

#[test]
fn the_byte_bound_spans_every_ring_of_a_replay() {
  let mut h = with_channels(10, 10);
  let start = h.position();
  record(&mut h, None, "0123456789");
  record(&mut h, Some("a"), "0123456789");
  assert_eq!(texts(h.since_in(&start, &channels(&["a"]), 20)).len(), 2);
  assert_eq!(
    texts(h.since_in(&start, &channels(&["a"]), 19)),
    vec!["RESET"]
  );
}

#[test]
fn channel_rings_are_bounded_in_number_and_a_dropped_one_resets_its_members() {
  let mut h = with_channels(10, 4);
  let start = h.position();
  for n in 0..MAX_CHANNEL_RINGS {
    record(&mut h, Some(&format!("c{n}")), "x");
  }
  assert_eq!(h.channels.len(), MAX_CHANNEL_RINGS);
  let before_new = h.position();
  // One more channel lets go of the stalest ring, c0.
  record(&mut h, Some("new"), "y");
  assert_eq!(h.channels.len(), MAX_CHANNEL_RINGS);
  assert!(!h.channels.contains_key("c0"));
  assert_eq!(
    texts(h.since_in(&start, &channels(&["c0"]), ANY)),
    vec!["RESET"]
  );
  // A member from after the dropped ring's newest event lost nothing.
  assert_eq!(
    texts(h.since_in(&before_new, &channels(&["c0", "new"]), ANY)),
    vec!["y"]
  );
  // Held ids stay indexed; the dropped ring's are forgotten.
  assert_eq!(h.index.len(), MAX_CHANNEL_RINGS);
}

#[test]
fn turning_channel_history_off_drops_the_rings_and_their_ids() {
  let mut h = with_channels(10, 4);
  let start = h.position();
  let id = record(&mut h, Some("a"), "a1");
  h.set_channel_capacity(0);
  assert!(h.index.is_empty());
  // A member that saw the ring's newest event lost nothing with it (its
  // generated id still names its place).
  assert_eq!(
    texts(h.since_in(&id, &channels(&["a"]), ANY)),
    Vec::<String>::new()
  );
  // One from before it did: reset.
  assert_eq!(
    texts(h.since_in(&start, &channels(&["a"]), ANY)),
    vec!["RESET"]
  );
  // Nothing of the broadcasts was lost: a non-member from the start is whole.
  assert_eq!(texts(h.since_in(&start, &[], ANY)), Vec::<String>::new());
  // Publishing now records nothing.
  record(&mut h, Some("a"), "a2");
  assert!(h.channels.is_empty());
}

#[test]
fn a_ring_made_again_after_it_was_dropped_resets_a_member_from_before_the_drop() {
  // Review finding: the new, empty ring had no trace of what the dropped
  // one held, so a member from before it was replayed past a gap.
  let mut h = with_channels(10, 4);
  let seen = record(&mut h, None, "b");
  record(&mut h, Some("c"), "c1");
  h.set_channel_capacity(0);
  h.set_channel_capacity(4);
  record(&mut h, Some("c"), "c2");
  assert_eq!(
    texts(h.since_in(&seen, &channels(&["c"]), ANY)),
    vec!["RESET"]
  );
  // From after the drop, the new ring is whole.
  let after = h.position();
  record(&mut h, Some("c"), "c3");
  assert_eq!(
    texts(h.since_in(&after, &channels(&["c"]), ANY)),
    vec!["c3"]
  );
}

#[test]
fn a_dropped_ring_resets_only_its_own_members() {
  let mut h = with_channels(10, 4);
  let seen = record(&mut h, None, "b");
  for n in 0..=MAX_CHANNEL_RINGS {
    record(&mut h, Some(&format!("c{n}")), "x");
  }
  // c0 was dropped; a member of a channel that never published lost nothing.
  assert_eq!(
    texts(h.since_in(&seen, &channels(&["c0"]), ANY)),
    vec!["RESET"]
  );
  assert_eq!(
    texts(h.since_in(&seen, &channels(&["quiet"]), ANY)),
    Vec::<String>::new()
  );
}

#[test]
fn a_position_in_a_busy_channel_is_still_a_place_for_a_client_outside_it() {
  // Review finding: position() named the newest event of any ring; once that
  // busy channel's ring let go of it, a client of other channels was reset.
  let mut h = with_channels(10, 2);
  record(&mut h, None, "b1");
  let position = record(&mut h, Some("busy"), "x1");
  assert_eq!(h.position(), position);
  for text in ["x2", "x3", "x4"] {
    record(&mut h, Some("busy"), text);
  }
  record(&mut h, Some("a"), "a1");
  assert_eq!(
    texts(h.since_in(&position, &channels(&["a"]), ANY)),
    vec!["a1"]
  );
  // A member of the busy channel itself lost x2 (evicted): reset.
  assert_eq!(
    texts(h.since_in(&position, &channels(&["busy"]), ANY)),
    vec!["RESET"]
  );
}
