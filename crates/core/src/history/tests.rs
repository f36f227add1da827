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

// Shared replays (a reconnect storm): one read per place and channel set
// while the history does not change, and always exactly `since_in`.

/// What `since_in` gives, as the bytes a stream connection is written.
fn expected_bytes(h: &History, id: &str, chans: &[Arc<str>], max: usize) -> Vec<u8> {
  match h.since_in(id, chans, max) {
    Replay::Missed(events) => events.iter().flat_map(|e| e.frame()).copied().collect(),
    Replay::Reset => frame::reset_frame(h.newest_id()),
  }
}

/// `since_shared`'s bytes, its id and whether it was kept already;
/// checked against `since_in` and, for events, against their chunks.
fn shared(h: &mut History, id: &str, chans: &[Arc<str>], max: usize) -> (Vec<u8>, u64, bool) {
  let expected = expected_bytes(h, id, chans, max);
  let (replay, hit) = h.since_shared(id, chans, max);
  let bytes = replay.outcome.bytes().to_vec();
  if let SharedOutcome::Missed { chunks, .. } = &replay.outcome {
    let from_chunks: Vec<u8> = chunks
      .iter()
      .flat_map(|c| shared::payload(c).to_vec())
      .collect();
    assert_eq!(from_chunks, bytes);
  }
  assert_eq!(bytes, expected, "shared replay of {id} in {chans:?}");
  (bytes, replay.id, hit)
}

#[test]
fn clients_at_one_place_in_the_same_channels_share_one_read() {
  let mut h = with_channels(10, 10);
  let start = h.position();
  record(&mut h, None, "b1");
  record(&mut h, Some("a"), "a1");
  record(&mut h, Some("z"), "z1");
  let (first, id, hit) = shared(&mut h, &start, &channels(&["a", "z"]), ANY);
  assert!(!hit);
  assert_eq!(first, b"b1a1z1");
  // The same channels in another order: the same replay, not read again.
  let (again, same, hit) = shared(&mut h, &start, &channels(&["z", "a"]), ANY);
  assert!(hit);
  assert_eq!((again, same), (first, id));
  assert!(h.shared_kept(id));
  assert_eq!(h.shared_len(), 1);
}

#[test]
fn a_shared_replay_ends_with_any_change_to_the_history() {
  let mut h = with_channels(10, 10);
  let start = h.position();
  record(&mut h, None, "b1");
  let (_, id, _) = shared(&mut h, &start, &channels(&["a"]), ANY);
  // Recorded between two reconnections: the later one gets it too.
  let version = h.version();
  record(&mut h, Some("a"), "a1");
  assert!(h.version() > version);
  assert!(!h.shared_kept(id));
  let (bytes, other, hit) = shared(&mut h, &start, &channels(&["a"]), ANY);
  assert!(!hit);
  assert_ne!(other, id);
  assert_eq!(bytes, b"b1a1");
  // A capacity changed, and what it trimmed.
  h.set_capacity(0);
  assert!(!h.shared_kept(other));
  let (bytes, _, hit) = shared(&mut h, &start, &channels(&["a"]), ANY);
  assert!(!hit);
  assert_eq!(bytes, frame::reset_frame(h.newest_id()));
  let (_, id, _) = shared(&mut h, &start, &[], ANY);
  h.set_channel_capacity(0);
  assert!(!h.shared_kept(id));
  let (_, id, _) = shared(&mut h, &start, &[], ANY);
  h.forget_shared();
  assert!(!h.shared_kept(id));
  assert_eq!(h.shared_len(), 0);
}

/// A client's last id, channels and bound, and the bytes it is replayed.
type Case = (String, Vec<Arc<str>>, usize, &'static [u8]);

#[test]
fn other_channels_another_place_or_another_bound_are_their_own_replays() {
  let mut h = with_channels(10, 10);
  let start = h.position();
  record(&mut h, None, "b1");
  let mid = record(&mut h, Some("a"), "a1");
  record(&mut h, Some("b"), "b-1");
  record(&mut h, None, "b2");
  let cases: Vec<Case> = vec![
    (start.clone(), channels(&["a"]), ANY, b"b1a1b2"),
    (start.clone(), channels(&["b"]), ANY, b"b1b-1b2"),
    (start.clone(), channels(&[]), ANY, b"b1b2"),
    (start.clone(), channels(&["a", "b"]), ANY, b"b1a1b-1b2"),
    (mid.clone(), channels(&["a"]), ANY, b"b2"),
    (mid.clone(), channels(&["b"]), ANY, b"b-1b2"),
  ];
  let mut ids = Vec::new();
  for (id, chans, max, want) in &cases {
    let (bytes, shared_id, hit) = shared(&mut h, id, chans, *max);
    assert!(!hit, "{id} in {chans:?}");
    assert_eq!(bytes, *want);
    ids.push(shared_id);
  }
  // Each kept, each found again.
  for ((id, chans, max, want), shared_id) in cases.iter().zip(&ids) {
    let (bytes, again, hit) = shared(&mut h, id, chans, *max);
    assert!(hit);
    assert_eq!((bytes.as_slice(), again), (*want, *shared_id));
  }
  // A smaller bound is its own replay: here, a reset.
  let (bytes, _, hit) = shared(&mut h, &start, &channels(&["a"]), 5);
  assert!(!hit);
  assert_eq!(bytes, frame::reset_frame(h.newest_id()));
}

#[test]
fn resets_are_shared_and_unchanged() {
  let mut h = with_channels(10, 2);
  let start = h.position();
  for text in ["a1", "a2", "a3"] {
    record(&mut h, Some("a"), text);
  }
  let reset = frame::reset_frame(h.newest_id());
  // The channel's ring wrapped: its members reset, the others do not.
  let (bytes, id, _) = shared(&mut h, &start, &channels(&["a"]), ANY);
  assert_eq!(bytes, reset);
  assert_eq!(
    shared(&mut h, &start, &channels(&["a"]), ANY),
    (reset.clone(), id, true)
  );
  assert_eq!(shared(&mut h, &start, &[], ANY).0, b"");
  // Another life's ids and ids never given: every one a reset.
  for unknown in ["zzzzzzzz:1", "nonsense", ""] {
    assert_eq!(shared(&mut h, unknown, &channels(&["a"]), ANY).0, reset);
  }
  // An id of this life not handed out yet is unknown until it is.
  let future = format!("{}:{}", h.epoch(), 4);
  assert_eq!(shared(&mut h, &future, &[], ANY).0, reset);
  let given = h.next_id();
  assert_eq!(given, future);
  let (_, _, hit) = shared(&mut h, &future, &[], ANY);
  assert!(!hit);
}

#[test]
fn shared_replays_are_bounded_in_number_and_bytes() {
  let mut h = with_channels(100, 0);
  let ids: Vec<String> = (0..MAX_SHARED + 5)
    .map(|n| record(&mut h, None, &format!("e{n:03}")))
    .collect();
  for id in &ids {
    shared(&mut h, id, &[], ANY);
    assert!(h.shared_len() <= MAX_SHARED);
  }
  assert_eq!(h.shared_len(), MAX_SHARED);
  // The oldest went first: the newest are found again.
  assert!(shared(&mut h, ids.last().unwrap(), &[], ANY).2);
  assert!(!shared(&mut h, &ids[0], &[], ANY).2);
  // In bytes: at most BYTES_FACTOR bounds' worth. Five channel sets
  // (no rings of their own) at one place, each replayed the same four
  // frames: at most four replays' frames fit under four bounds of four.
  h.forget_shared();
  let from = &ids[ids.len() - 5];
  let one = expected_bytes(&h, &ids[ids.len() - 2], &[], ANY).len();
  let max = 4 * one;
  for n in 0..5 {
    let (bytes, _, hit) = shared(&mut h, from, &channels(&[&format!("x{n}")]), max);
    assert!(!hit);
    assert_eq!(bytes.len(), 4 * one);
    assert!(h.shared.weight() <= max * BYTES_FACTOR);
  }
  assert_eq!(h.shared_len(), 4);
}
