//! The machine's rules, each from the outside: inputs in, actions out.

use super::*;
use crate::bus::entry::Route;
use crate::bus::request::ReplayTarget;
use crate::registry::ConnKey;

fn id(ms: u64) -> EntryId {
  EntryId { ms, seq: 0 }
}

fn entry(origin: &str) -> Entry {
  Entry {
    route: Route::All,
    event: None,
    retry: None,
    data: "x".into(),
    origin: Some(origin.into()),
  }
}

fn replay(key: f64, from: ReplayFrom) -> ReplayRequest {
  ReplayRequest {
    from,
    client: "c".into(),
    channels: Vec::new(),
    target: ReplayTarget::Stream {
      key: ConnKey::from_f64(key).unwrap(),
    },
  }
}

/// The replies among `actions`: (request, Ok(n) or the error's text).
fn replies(actions: &[Action]) -> Vec<(u32, Result<f64, String>)> {
  actions
    .iter()
    .filter_map(|a| match a {
      Action::Reply { request, result } => {
        Some((*request, result.clone().map_err(|e| e.to_string())))
      }
      _ => None,
    })
    .collect()
}

/// The `reset` answers among `actions`: (connection key, why).
fn resets(actions: &[Action]) -> Vec<(f64, &'static str)> {
  actions
    .iter()
    .filter_map(|a| match a {
      Action::Reset { replay, why, .. } => match &replay.target {
        ReplayTarget::Stream { key } => Some((key.to_f64(), *why)),
        ReplayTarget::Socket { .. } => None,
      },
      _ => None,
    })
    .collect()
}

/// A machine in a session at `position`, having appended up to `written`.
fn in_session(position: u64, written: Option<u64>) -> BusMachine {
  let mut machine = BusMachine::default();
  machine.started_at(id(position));
  machine.session_started();
  if let Some(written) = written {
    machine.appended(id(written));
  }
  machine
}

#[test]
fn offline_appends_go_local_counts_fail_flushes_are_done() {
  let mut machine = BusMachine::default();
  let actions = machine.offline(Request::Append(entry("a:1")));
  assert!(matches!(&actions[..], [Action::Local(e)] if e.origin.as_deref() == Some("a:1")));
  let actions = machine.offline(Request::Count(7));
  assert_eq!(
    replies(&actions),
    [(7, Err("Redis is not connected".to_string()))]
  );
  assert_eq!(replies(&machine.offline(Request::Flush(8))), [(8, Ok(0.0))]);
  assert!(matches!(
    &machine.offline(Request::Presence)[..],
    [Action::DropPresence]
  ));
  assert!(machine.offline(Request::Stop).is_empty());
}

#[test]
fn a_replay_waits_for_the_first_session_but_not_through_an_outage() {
  let mut machine = BusMachine::default();
  // The first connect is under way: the replay waits for it.
  assert!(machine
    .offline(Request::Replay(replay(1.0, ReplayFrom::Start)))
    .is_empty());
  assert!(machine.has_replays());
  // The connect failed: the waiting one and the new one get `reset`.
  machine.link_failed();
  let actions = machine.offline(Request::Replay(replay(2.0, ReplayFrom::Start)));
  assert_eq!(
    resets(&actions),
    [
      (1.0, "Redis is not connected"),
      (2.0, "Redis is not connected")
    ]
  );
  assert!(!machine.has_replays());
  // Back in a session, replays wait for the next read again.
  machine.session_started();
  let actions = machine.request(Request::Replay(replay(3.0, ReplayFrom::Start)), false);
  assert!(matches!(&actions[..], [Action::Unblock]));
  assert!(machine.has_replays());
}

#[test]
fn the_read_is_interrupted_once_for_replays() {
  let mut machine = in_session(5, None);
  let actions = machine.request(Request::Replay(replay(1.0, ReplayFrom::Start)), true);
  assert!(actions.is_empty(), "already asked");
}

#[test]
fn waiting_replays_are_bounded() {
  let mut machine = BusMachine::default();
  for n in 0..MAX_WAITING_REPLAYS {
    assert!(machine
      .offline(Request::Replay(replay(n as f64, ReplayFrom::Start)))
      .is_empty());
  }
  let actions = machine.offline(Request::Replay(replay(1e6, ReplayFrom::Start)));
  assert_eq!(resets(&actions), [(1e6, "too many replays waiting")]);
}

#[test]
fn deferred_requests_are_served_offline_when_the_session_fails() {
  let mut machine = in_session(5, Some(9));
  // Taken off the queue while batching appends.
  machine.defer(Request::Count(1));
  machine.defer(Request::Append(entry("a:2")));
  machine.defer(Request::Flush(2));
  machine.defer(Request::Replay(replay(4.0, ReplayFrom::Start)));
  // A flush waiting for an entry the reader has not passed.
  assert!(machine.request(Request::Flush(3), false).is_empty());
  let (stop, actions) = machine.session_failed();
  assert!(!stop);
  assert_eq!(
    replies(&actions),
    [
      (1, Err("Redis is not connected".to_string())),
      (2, Ok(0.0)),
      (3, Ok(0.0)),
    ]
  );
  assert!(actions
    .iter()
    .any(|a| matches!(a, Action::Local(e) if e.origin.as_deref() == Some("a:2"))));
  assert_eq!(resets(&actions), [(4.0, "Redis is not connected")]);
  assert!(machine.next_deferred().is_none());
  assert!(!machine.has_replays());
}

#[test]
fn a_deferred_stop_ends_the_task_when_the_session_fails() {
  let mut machine = in_session(5, None);
  machine.defer(Request::Stop);
  let (stop, actions) = machine.session_failed();
  assert!(stop);
  assert!(actions.is_empty());
}

#[test]
fn deferred_requests_are_served_in_their_order() {
  let mut machine = in_session(5, None);
  machine.defer(Request::Count(1));
  machine.defer(Request::Count(2));
  assert!(matches!(machine.next_deferred(), Some(Request::Count(1))));
  assert!(matches!(machine.next_deferred(), Some(Request::Count(2))));
  assert!(machine.next_deferred().is_none());
}

#[test]
fn a_flush_is_answered_once_the_reader_passes_what_was_appended() {
  // Nothing appended: answered at once.
  let mut machine = in_session(5, None);
  assert_eq!(
    replies(&machine.request(Request::Flush(1), false)),
    [(1, Ok(0.0))]
  );
  // Appended up to 9, read up to 5: it waits, until the reader gets there.
  let mut machine = in_session(5, Some(9));
  assert!(machine.request(Request::Flush(2), false).is_empty());
  assert!(replies(&machine.advanced(id(8))).is_empty());
  assert_eq!(replies(&machine.advanced(id(9))), [(2, Ok(0.0))]);
  // Already read past what was appended: at once.
  assert_eq!(
    replies(&machine.request(Request::Flush(3), false)),
    [(3, Ok(0.0))]
  );
}

#[test]
fn flushes_are_answered_when_the_stream_goes_back() {
  for go_back in [
    BusMachine::truncated as fn(&mut BusMachine, EntryId) -> Vec<Action>,
    |m: &mut BusMachine, _: EntryId| m.replaced(),
  ] {
    let mut machine = in_session(5, Some(9));
    assert!(machine.request(Request::Flush(1), false).is_empty());
    assert_eq!(replies(&go_back(&mut machine, id(3))), [(1, Ok(0.0))]);
    assert!(machine.take_reread(), "the read in flight gives way");
    assert!(!machine.take_reread(), "once");
  }
}

#[test]
fn the_stream_going_back_moves_the_position() {
  let mut machine = in_session(5, None);
  machine.truncated(id(3));
  assert_eq!(machine.position, Some(id(3)));
  machine.replaced();
  assert_eq!(machine.position, Some(EntryId::ZERO));
}

#[test]
fn an_append_at_or_below_the_position_means_the_stream_went_back() {
  let mut machine = in_session(5, None);
  assert!(!machine.appended(id(6)));
  assert!(machine.appended(id(5)));
  assert!(machine.appended(id(2)));
  // From an empty stream's start nothing is behind.
  let mut machine = in_session(0, None);
  assert!(!machine.appended(id(1)));
}

#[test]
fn a_count_in_a_session_is_asked_of_redis() {
  let mut machine = in_session(5, None);
  assert!(matches!(
    &machine.request(Request::Count(4), false)[..],
    [Action::Count(4)]
  ));
  assert!(matches!(
    &machine.request(Request::Presence, false)[..],
    [Action::DropPresence, Action::RefreshPresence]
  ));
  assert!(matches!(
    &machine.request(Request::Stop, false)[..],
    [Action::Leave]
  ));
}

#[test]
fn closing_answers_everything_still_queued() {
  let mut machine = in_session(5, Some(9));
  machine.defer(Request::Count(1));
  assert!(machine.request(Request::Flush(2), false).is_empty());
  machine.link_failed();
  let actions = machine.closed([
    Request::Flush(3),
    Request::Append(entry("a:3")),
    Request::Replay(replay(5.0, ReplayFrom::Start)),
  ]);
  assert!(resets(&actions).is_empty(), "replays are dropped");
  assert_eq!(
    replies(&actions),
    [
      (1, Err("Redis is not connected".to_string())),
      (3, Ok(0.0)),
      (2, Ok(0.0)),
    ]
  );
  assert!(actions.iter().any(|a| matches!(a, Action::Local(_))));
}

#[test]
fn replays_from_one_id_share_one_read_and_a_failed_read_requeues_them() {
  let mut machine = in_session(5, None);
  for (key, from) in [
    (1.0, ReplayFrom::After("3-0".into())),
    (2.0, ReplayFrom::After("3-0".into())),
    (3.0, ReplayFrom::Start),
  ] {
    machine.request(Request::Replay(replay(key, from)), true);
  }
  let mut groups = machine.take_replays();
  groups.sort_by_key(|(_, g)| g.len());
  let sizes: Vec<usize> = groups.iter().map(|(_, g)| g.len()).collect();
  assert_eq!(sizes, [1, 2]);
  assert!(!machine.has_replays());
  machine.requeue(groups.into_iter().flat_map(|(_, g)| g));
  assert!(machine.has_replays());
  assert_eq!(machine.until(), id(5));
}

#[test]
fn an_entry_delivered_locally_after_a_failed_append_is_skipped_once() {
  let mut machine = in_session(5, None);
  let failed = [entry("a:1"), entry("a:2")];
  machine.uncertain(&failed);
  assert!(machine.seen(&entry("a:1")));
  assert!(!machine.seen(&entry("a:1")), "only once");
  assert!(!machine.seen(&entry("b:1")));
  assert!(machine.seen(&entry("a:2")));
}

fn frame(ms: u64, route: Route, bytes: usize) -> BusFrame {
  BusFrame {
    id: Some(id(ms)),
    route,
    chunk: vec![b'x'; bytes].into(),
  }
}

#[test]
fn a_replay_share_is_the_frames_routed_to_it_within_the_byte_bound() {
  let request = ReplayRequest {
    channels: vec!["news".into()],
    ..replay(1.0, ReplayFrom::Start)
  };
  let frames = [
    frame(1, Route::All, 10),
    frame(2, Route::Channel("sport".into()), 1000),
    frame(3, Route::Channel("news".into()), 10),
    frame(4, Route::Client("other".into()), 1000),
    frame(5, Route::Client("c".into()), 10),
  ];
  let cursor = Some(id(5));
  let outcome = Outcome::Replay { cursor };
  let Share::Frames {
    chunks,
    cursor: got,
  } = share(&request, &outcome, &frames, 30)
  else {
    panic!("30 bytes fit");
  };
  assert_eq!(chunks.len(), 3);
  assert_eq!(got, cursor);
  // One byte less than its share: reset, whatever the others weigh.
  assert_eq!(share(&request, &outcome, &frames, 29), Share::Reset);
  // The planner's own reset (too many entries, gone) stays one.
  assert_eq!(
    share(&request, &Outcome::Reset("gone"), &frames, usize::MAX),
    Share::Reset
  );
  // Nothing for it: an empty share, its gate released all the same.
  assert_eq!(
    share(&request, &outcome, &frames[1..2], 0),
    Share::Frames {
      chunks: Vec::new(),
      cursor
    }
  );
}
