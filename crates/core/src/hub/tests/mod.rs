//! The hub's decisions, tested without JS.

use super::options::{BusOptions, EventOptions};
use super::*;
use crate::bus::link::Notice;
use crate::bus::BusEvent;
use crate::registry::ConnKey;
use crate::test_util::{collect_until, pair};
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn at(secs: u64) -> Instant {
  // One base for every test instant, so differences are exact.
  thread_local!(static BASE: Instant = Instant::now());
  BASE.with(|b| *b + Duration::from_secs(secs))
}

fn stream_hub() -> HubCore<&'static str> {
  HubCore::new(1000)
}

fn kinds<H>(effects: &[Effect<H>]) -> Vec<String> {
  effects
    .iter()
    .map(|e| match e {
      Effect::Finish { how, socket, .. } => format!("finish {how:?} socket={socket}"),
      Effect::Slow { id } => format!("slow {id}"),
      Effect::Disconnect { id, reason } => format!("disconnect {id} {}", reason.as_str()),
      Effect::Drain { .. } => "drain".into(),
      Effect::WriterDied { .. } => "writer died".into(),
      Effect::Closed => "closed".into(),
      Effect::ReleaseHub => "release hub".into(),
    })
    .collect()
}

#[test]
fn milliseconds_saturate_instead_of_panicking() {
  assert_eq!(millis(1500.0), Duration::from_millis(1500));
  assert_eq!(millis(-5.0), Duration::ZERO);
  assert_eq!(millis(f64::NAN), Duration::ZERO);
  assert_eq!(millis(1e23), Duration::MAX);
  assert_eq!(millis(f64::MAX), Duration::MAX);
  assert_eq!(millis(f64::INFINITY), Duration::MAX);
}

#[test]
fn removal_finishes_once_then_reports_slow_before_disconnect() {
  let mut hub = stream_hub();
  let (key, wire) = hub.register("a", "res-a", None, at(0));
  assert_eq!(wire, None);
  let effects = hub.remove(key, Removal::Destroy, Reason::Slow);
  assert_eq!(
    kinds(&effects),
    ["finish Destroy socket=false", "slow a", "disconnect a slow"]
  );
  assert!(matches!(
    effects[0],
    Effect::Finish {
      handle: "res-a",
      ..
    }
  ));
  assert_eq!(hub.stats().slow_disconnects, 1);
  // Gone: a second removal (a late close event) does nothing.
  assert!(hub.remove(key, Removal::Forget, Reason::Closed).is_empty());
  assert!(hub.leave(Leave::Destroying(key)).is_empty());
  assert_eq!(hub.connections().len(), 0);
}

#[test]
fn a_close_ends_the_response_as_the_original_listener_does() {
  let mut hub = stream_hub();
  let (key, _) = hub.register("a", "res-a", None, at(0));
  assert_eq!(
    kinds(&hub.leave(Leave::Closed(key))),
    ["finish Closed socket=false", "disconnect a close"]
  );
  assert!(hub.leave(Leave::Closed(key)).is_empty());
  // The app destroying it is only a forget: nothing is ended first.
  let (key, _) = hub.register("b", "res-b", None, at(0));
  assert_eq!(
    kinds(&hub.leave(Leave::Destroying(key))),
    ["finish Destroyed socket=false", "disconnect b close"]
  );
}

#[test]
fn registering_again_restarts_the_age_under_any_id() {
  let mut hub = stream_hub();
  let (key, _) = hub.register("a", "res", None, at(0));
  let limit = Duration::from_secs(5);
  assert_eq!(hub.connections().older_than(at(9), limit), [key]);
  // Under another id, then under the same one: each counts from now.
  assert!(hub.reregister(key, "b", at(10)));
  assert!(hub.connections().older_than(at(14), limit).is_empty());
  assert_eq!(hub.connections().older_than(at(16), limit), [key]);
  assert!(hub.reregister(key, "b", at(20)));
  assert!(hub.connections().older_than(at(24), limit).is_empty());
  assert_eq!(&*hub.connections().get(key).unwrap().id, "b");
}

#[test]
fn a_rolled_back_registration_reports_nothing() {
  let mut hub = stream_hub();
  let (key, _) = hub.register("a", "res", None, at(0));
  assert_eq!(
    kinds(&hub.remove(key, Removal::Forget, Reason::Rollback)),
    ["finish Forget socket=false"]
  );
}

#[test]
fn close_ends_everyone_and_reports_closed_once() {
  let mut hub = stream_hub();
  hub.register("a", "ra", None, at(0));
  hub.register("b", "rb", None, at(0));
  let effects = hub.close();
  assert_eq!(
    kinds(&effects),
    [
      "finish End socket=false",
      "disconnect a removed",
      "finish End socket=false",
      "disconnect b removed",
      "closed"
    ]
  );
  assert!(!hub.socket_slot_free());
  assert!(hub.close().is_empty());
}

/// A broadcast of `data` with no options, to everyone.
fn plain(data: &str) -> Broadcast<'_> {
  Broadcast {
    data,
    options: EventOptions::default(),
    channel: None,
    filtered: false,
  }
}

/// The dispatch of a broadcast that needs no filter.
fn ready(planned: Result<Planned, CoreError>) -> Dispatch {
  match planned {
    Ok(Planned::Ready(dispatch)) => dispatch,
    other => panic!("not ready: {other:?}"),
  }
}

fn body(dispatch: &Dispatch) -> String {
  String::from_utf8(dispatch.frame.body().to_vec()).unwrap()
}

fn target_keys(dispatch: &Dispatch) -> Vec<ConnKey> {
  dispatch.targets.iter().map(|t| t.key).collect()
}

#[test]
fn stream_outcomes_set_congestion_and_remove_the_slow_and_the_failed() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (b, _) = hub.register("b", "rb", None, at(0));
  let (c, _) = hub.register("c", "rc", None, at(0));
  let (d, _) = hub.register("d", "rd", None, at(0));
  // "data: abcd\n\n": 12 bytes.
  let dispatch = ready(hub.broadcast(plain("abcd"), at(1)));
  assert_eq!(dispatch.sockets, 0);
  assert_eq!(target_keys(&dispatch), [a, b, c, d]);
  let settled = hub.settle(
    &dispatch,
    &[
      (a, Outcome::Buffered),
      (b, Outcome::Written { buffering: false }),
      (c, Outcome::Slow),
      (d, Outcome::Failed),
    ],
  );
  assert_eq!(settled.count, 2);
  assert_eq!(
    kinds(&settled.effects),
    [
      "finish Destroy socket=false",
      "slow c",
      "disconnect c slow",
      "finish End socket=false",
      "disconnect d error"
    ]
  );
  let congestion: Vec<bool> = hub
    .connections()
    .iter()
    .map(|e| {
      matches!(
        e.handle.transport,
        Transport::Stream {
          congested: true,
          ..
        }
      )
    })
    .collect();
  assert_eq!(congestion, [true, false]);
  let stats = hub.stats();
  assert_eq!((stats.frames_sent, stats.bytes_sent), (2, 24));
  assert_eq!(stats.slow_disconnects, 1);
  hub.settle(&dispatch, &[(a, Outcome::Dropped)]);
  assert_eq!(hub.stats().frames_dropped, 1);
  // The next frame goes out with a's flag set; a write with nothing left
  // buffered clears it, and b's stays clear.
  let next = ready(hub.broadcast(plain("e"), at(2)));
  let flags: Vec<(ConnKey, bool)> = next.targets.iter().map(|t| (t.key, t.congested)).collect();
  assert_eq!(flags, [(a, true), (b, false)]);
  let written = Outcome::Written { buffering: false };
  hub.settle(&next, &[(a, written), (b, written)]);
  let last = ready(hub.broadcast(plain("f"), at(3)));
  assert!(last.targets.iter().all(|t| !t.congested));
}

#[test]
fn targeted_delivery_names_only_the_targets_and_marks_them_sent() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (_b, _) = hub.register("b", "rb", None, at(0));
  let dispatch = hub.send_one(a, Frame::comment("x"), at(20));
  assert_eq!(target_keys(&dispatch), [a]);
  assert_eq!(body(&dispatch), ": x\n\n");
  // Heartbeats: only b was idle for 15 s at t=30.
  hub.broadcast(plain("x"), at(0)).unwrap();
  assert_eq!(hub.idle(at(30), Duration::from_secs(15)).len(), 1);
  assert_eq!(hub.idle(at(40), Duration::from_secs(15)).len(), 2);
  let beat = hub.heartbeat(Duration::from_secs(15), at(40));
  assert_eq!(body(&beat), ": heartbeat\n\n");
  assert_eq!(beat.targets.len(), 2);
  // A recent broadcast to everyone holds heartbeats back.
  hub.broadcast(plain("x"), at(35)).unwrap();
  assert!(hub.idle(at(40), Duration::from_secs(15)).is_empty());
  let none = hub.heartbeat(Duration::from_secs(15), at(40));
  assert!(none.targets.is_empty());
  assert_eq!(hub.settle(&none, &[]).count, 0);
  // A huge idle time selects nobody and does not overflow.
  assert!(hub.idle(at(40), Duration::MAX).is_empty());
}

/// The `id:` line of a framed event.
fn id_of(dispatch: &Dispatch) -> String {
  let text = body(dispatch);
  let line = text.lines().find(|l| l.starts_with("id: ")).unwrap();
  line["id: ".len()..].to_string()
}

#[test]
fn replay_is_bounded_by_max_buffered_bytes() {
  let mut hub = stream_hub();
  hub
    .configure(Settings {
      history_size: Some(100),
      max_buffered_bytes: Some(130),
      ..Settings::default()
    })
    .unwrap();
  let mut ids = vec![String::new()];
  for _ in 0..50 {
    let dispatch = ready(hub.broadcast(plain("x"), at(0)));
    ids.push(id_of(&dispatch));
  }
  let (key, _) = hub.register("a", "r", None, at(0));
  // Each frame is "id: <8-char epoch>:NN\ndata: x\n\n" (25 bytes): 5 fit in 130.
  let fits = hub.replay(key, &ids[45], at(1)).unwrap();
  assert_eq!(target_keys(&fits), [key]);
  assert_eq!(body(&fits).matches("data: x").count(), 5);
  let too_far = hub.replay(key, &ids[1], at(1)).unwrap();
  let reset = format!("event: reset\nid: {}\ndata: null\n\n", ids[50]);
  assert_eq!(body(&too_far), reset);
  assert!(hub.replay(key, &ids[50], at(1)).is_none());
  let stats = hub.stats();
  assert_eq!((stats.replays, stats.resets), (1, 1));
}

#[test]
fn a_storm_of_replays_from_one_place_shares_one_read_until_the_history_changes() {
  let mut hub = stream_hub();
  hub
    .configure(Settings {
      history_size: Some(100),
      channel_history_size: Some(100),
      ..Settings::default()
    })
    .unwrap();
  let from = hub.position().unwrap();
  ready(hub.broadcast(plain("b1"), at(0)));
  let news = Broadcast {
    channel: Some("news"),
    ..plain("n1")
  };
  ready(hub.broadcast(news, at(0)));
  let replay = |hub: &mut HubCore<&'static str>, id: &str, channels: &[&str]| {
    let (key, _) = hub.register(id, "r", None, at(1));
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    let dispatch = hub.resume(key, Some(&from), &channels, at(1)).unwrap();
    assert_eq!(target_keys(&dispatch), [key]);
    (body(&dispatch), dispatch.frame.replay_id().unwrap())
  };
  let (first, shared) = replay(&mut hub, "a", &["news"]);
  assert_eq!(first.matches("data: ").count(), 2);
  for n in 0..10 {
    assert_eq!(
      replay(&mut hub, &format!("c{n}"), &["news"]),
      (first.clone(), shared)
    );
  }
  assert!(hub.replay_shared_live(shared));
  // Not in the channel: its own replay, the broadcast only.
  let (other, other_id) = replay(&mut hub, "x", &[]);
  assert_ne!(other_id, shared);
  assert_eq!(other.matches("data: ").count(), 1);
  let stats = hub.stats();
  assert_eq!((stats.replays, stats.replays_shared), (12, 10));
  // A broadcast between two reconnections: the later one gets it too.
  ready(hub.broadcast(plain("b2"), at(2)));
  assert!(!hub.replay_shared_live(shared));
  let (later, later_id) = replay(&mut hub, "d", &["news"]);
  assert_ne!(later_id, shared);
  assert!(later.starts_with(&first));
  assert!(later.ends_with("data: b2\n\n"));
  assert_eq!(later.matches("data: ").count(), 3);
  // Closing lets go of it.
  hub.close();
  assert!(!hub.replay_shared_live(later_id));
}

#[test]
fn socket_connections_replaying_from_one_place_get_the_same_chunks() {
  let mut hub = socket_hub(10);
  hub
    .configure(Settings {
      history_size: Some(10),
      ..Settings::default()
    })
    .unwrap();
  let from = hub.position().unwrap();
  for text in ["one", "two"] {
    ready(hub.broadcast(plain(text), at(0)));
  }
  let mut clients = Vec::new();
  for n in 0..3 {
    let (key, wire, (server, client)) = connect(&mut hub, &format!("s{n}"), "r");
    assert!(wire.is_some());
    assert!(hub.resume(key, Some(&from), &[], at(1)).is_none());
    clients.push((server, client));
  }
  let stats = hub.stats();
  assert_eq!((stats.replays, stats.replays_shared), (3, 2));
  for (_server, client) in &mut clients {
    client
      .set_read_timeout(Some(Duration::from_secs(10)))
      .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: two\n\n") {
      let n = client.read(&mut buf).unwrap();
      assert!(n > 0, "closed early");
      got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("data: one\n").count(), 1);
    assert!(text.find("data: one").unwrap() < text.find("data: two").unwrap());
  }
}

#[test]
fn a_broadcast_to_everyone_gets_the_next_id_and_is_recorded_others_are_not() {
  let mut hub = stream_hub();
  hub
    .configure(Settings {
      history_size: Some(10),
      ..Settings::default()
    })
    .unwrap();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (b, _) = hub.register("b", "rb", None, at(0));
  assert!(hub.set_membership(b, "news", true));
  let first = ready(hub.broadcast(plain("one"), at(1)));
  let generated = id_of(&first);
  assert!(generated.ends_with(":1"), "{generated}");
  assert_eq!(hub.position(), Some(generated.clone()));
  // The app's id is kept, and recorded under it.
  let given = Broadcast {
    options: EventOptions {
      id: Some("mine"),
      event: Some("tick"),
      ..Default::default()
    },
    ..plain("two")
  };
  let second = ready(hub.broadcast(given, at(2)));
  assert_eq!(body(&second), "event: tick\nid: mine\ndata: two\n\n");
  assert_eq!(hub.position().as_deref(), Some("mine"));
  // A channel's broadcast has no id and is not recorded.
  let news = Broadcast {
    channel: Some("news"),
    ..plain("three")
  };
  let third = ready(hub.broadcast(news, at(3)));
  assert_eq!(body(&third), "data: three\n\n");
  assert_eq!(target_keys(&third), [b]);
  assert_eq!(hub.position().as_deref(), Some("mine"));
  // A filtered one names every candidate, then goes to the chosen.
  let filtered = Broadcast {
    filtered: true,
    ..plain("four")
  };
  let Ok(Planned::Filter { frame, candidates }) = hub.broadcast(filtered, at(4)) else {
    panic!("a filter decides first");
  };
  assert_eq!(candidates, [a, b]);
  let chosen = hub.broadcast_to(frame, &[a], at(4));
  assert_eq!(target_keys(&chosen), [a]);
  assert_eq!(
    hub
      .settle(&chosen, &[(a, Outcome::Written { buffering: false })])
      .count,
    1
  );
  // Nothing is recorded or framed for a refused one.
  let bad = Broadcast {
    options: EventOptions {
      retry: Some(-1.0),
      ..Default::default()
    },
    ..plain("five")
  };
  assert_eq!(
    hub.broadcast(bad, at(5)).unwrap_err().to_string(),
    "options.retry must be a non-negative integer (milliseconds)"
  );
  let bad_channel = Broadcast {
    channel: Some(""),
    ..plain("six")
  };
  let err = hub.broadcast(bad_channel, at(6)).unwrap_err();
  assert!(err.to_string().starts_with("options.channel "), "{err}");
  assert_eq!(hub.position().as_deref(), Some("mine"));
}

#[test]
fn send_to_counts_a_connection_whose_write_threw() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let nobody = hub
    .send_to("zz", "x", &EventOptions::default(), at(1))
    .unwrap();
  assert_eq!(hub.settle(&nobody, &[]).count, 0);
  let dispatch = hub
    .send_to("a", "x", &EventOptions::default(), at(1))
    .unwrap();
  assert_eq!(target_keys(&dispatch), [a]);
  let settled = hub.settle(&dispatch, &[(a, Outcome::Threw)]);
  assert_eq!(settled.count, 1);
  assert_eq!(
    kinds(&settled.effects),
    ["finish End socket=false", "disconnect a error"]
  );
}

/// Starts a bus on `hub` whose Redis is never there (nothing listens on
/// port 1: it stays connecting); returns its options.
fn start_unreachable_bus(hub: &mut HubCore<&'static str>) -> BusOptions<'static> {
  let options = BusOptions {
    url: "redis://127.0.0.1:1/",
    stream: "sse",
    max_len: 100.0,
    replay_limit: 10.0,
    ca: None,
  };
  let config = hub.check_bus(&options).unwrap();
  hub.start_bus(config, Arc::new(|| {})).unwrap();
  options
}

#[test]
fn a_bus_without_redis_delivers_locally_without_an_id_and_counts_it() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let options = start_unreachable_bus(&mut hub);
  assert_eq!(hub.check_bus(&options).unwrap_err(), CoreError::BusRunning);
  // An id is refused with a bus.
  let with_id = Broadcast {
    options: EventOptions {
      id: Some("1"),
      ..Default::default()
    },
    ..plain("x")
  };
  let err = hub.broadcast(with_id, at(1)).unwrap_err();
  assert!(err.to_string().starts_with("options.id cannot be set"));
  // Redis is away: delivered here at once, without an id.
  let local = ready(hub.broadcast(plain("hi"), at(1)));
  assert_eq!(body(&local), "data: hi\n\n");
  assert_eq!(target_keys(&local), [a]);
  let settled = hub.settle(&local, &[(a, Outcome::Written { buffering: false })]);
  assert_eq!(settled.count, 1);
  assert_eq!(hub.stats().bus.unwrap().local_fallbacks, 1);
  // Once close() told the bus to stop, events are refused.
  hub.close();
  hub.stop_bus();
  assert_eq!(
    hub.broadcast(plain("late"), at(2)).unwrap_err(),
    CoreError::BusClosed
  );
  assert_eq!(
    hub
      .send_to("a", "late", &EventOptions::default(), at(2))
      .unwrap_err()
      .code(),
    "ERR_SSE_CLOSED"
  );
}

#[test]
fn the_writer_threads_cannot_change_while_it_runs() {
  let mut hub = socket_hub(10);
  let more = Settings {
    writer_threads: Some(2),
    history_size: Some(5),
    ..Settings::default()
  };
  assert_eq!(hub.configure(more), Err(CoreError::WriterRunning));
  assert!(!hub.recording(), "nothing applied");
  let same = Settings {
    writer_threads: Some(1),
    ..Settings::default()
  };
  assert_eq!(hub.configure(same), Ok(()));
}

mod socket;
use socket::{connect, socket_hub};

#[test]
fn ready_is_answered_from_the_link_the_js_thread_was_told_of() {
  let mut hub = stream_hub();
  // Without a bus: at once.
  assert_eq!(hub.ask_bus(BusAsk::Ready(1)), Some(Ok(0.0)));
  assert_eq!(hub.state().bus, BusLink::Off);
  start_unreachable_bus(&mut hub);
  assert_eq!(hub.state().bus, BusLink::Connecting);
  // Connecting: it waits, until the step that tells JS it connected.
  assert_eq!(hub.ask_bus(BusAsk::Ready(2)), None);
  assert_eq!(hub.ask_bus(BusAsk::Ready(3)), None);
  let step = hub.bus_step(BusEvent::Link(Notice::Connected), at(1));
  assert!(matches!(step, BusStep::Link { ready, .. } if ready == [2, 3]));
  assert_eq!(hub.state().bus, BusLink::Connected);
  assert_eq!(hub.ask_bus(BusAsk::Ready(4)), Some(Ok(0.0)));
  // Lost again: a new ready() waits for the next connection.
  let lost = Notice::Disconnected("gone".into());
  let step = hub.bus_step(BusEvent::Link(lost), at(2));
  assert!(matches!(step, BusStep::Link { ready, .. } if ready.is_empty()));
  assert_eq!(hub.state().bus, BusLink::Disconnected);
  assert_eq!(hub.ask_bus(BusAsk::Ready(5)), None);
  // Stopped before it came back: the waiting one is refused, and so is any
  // later one.
  let step = hub.bus_step(BusEvent::Stopped, at(3));
  assert!(matches!(step, BusStep::Stopped { ready } if ready == [5]));
  assert_eq!(hub.state().bus, BusLink::Closed);
  assert_eq!(hub.ask_bus(BusAsk::Ready(6)), Some(Err(CoreError::Closed)));
  // Nothing runs to ask any more.
  assert!(matches!(
    hub.ask_bus(BusAsk::Count(7)),
    Some(Err(CoreError::Bus(_)))
  ));
  assert_eq!(hub.ask_bus(BusAsk::Flush(8)), Some(Ok(0.0)));
}
