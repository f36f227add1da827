//! The hub's decisions, tested without JS.

use super::options::{BusOptions, EventOptions};
use super::*;
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
  assert!(hub.forget(key).is_empty());
  assert_eq!(hub.connections().len(), 0);
}

#[test]
fn a_close_ends_the_response_as_the_original_listener_does() {
  let mut hub = stream_hub();
  let (key, _) = hub.register("a", "res-a", None, at(0));
  assert_eq!(
    kinds(&hub.closed(key)),
    ["finish Closed socket=false", "disconnect a close"]
  );
  assert!(hub.closed(key).is_empty());
  // The app destroying it is only a forget: nothing is ended first.
  let (key, _) = hub.register("b", "res-b", None, at(0));
  assert_eq!(
    kinds(&hub.forget(key)),
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

/// A hub with one writer thread running and room for `budget` socket
/// connections.
fn socket_hub(budget: usize) -> HubCore<&'static str> {
  sharded_hub(budget, 1)
}

fn sharded_hub(budget: usize, threads: usize) -> HubCore<&'static str> {
  let mut hub = HubCore::new(budget);
  hub
    .configure(Settings {
      writer_threads: Some(threads),
      ..Settings::default()
    })
    .unwrap();
  hub.start_writer(Arc::new(|| {})).unwrap();
  hub
}

/// Registers a real loopback connection, offered to the writer. Returns
/// its key, its wire (if the writer took it) and both ends of the socket.
fn connect(
  hub: &mut HubCore<&'static str>,
  id: &str,
  handle: &'static str,
) -> (ConnKey, Option<ConnKey>, (TcpStream, TcpStream)) {
  let (server, client) = pair();
  let fd = server.as_fd().try_clone_to_owned().unwrap();
  let (key, wire) = hub.register(id, handle, Some(fd.into()), at(0));
  (key, wire, (server, client))
}

/// Waits for the writer's events and applies them.
fn events_until<H: std::fmt::Debug>(
  hub: &mut HubCore<H>,
  done: impl Fn(&[Effect<H>]) -> bool,
) -> Vec<Effect<H>> {
  collect_until(|| hub.writer_events(), done)
}

#[test]
fn a_socket_connection_ends_after_its_queue_and_forget_releases_an_ending_one() {
  let mut hub = socket_hub(10);
  let (key, wire, (_server, mut client)) = connect(&mut hub, "a", "ra");
  assert!(wire.is_some());
  assert_eq!(hub.stats().socket_connections, 1);
  let sent = hub.send_one(key, Frame::from_chunk(Arc::from(&b"hello"[..])), at(1));
  assert_eq!((sent.sockets, sent.targets.len()), (1, 0));
  // Ending: the finish comes from the writer, after the bytes.
  assert_eq!(
    kinds(&hub.remove(key, Removal::End, Reason::Removed)),
    ["disconnect a removed"]
  );
  let effects = events_until(&mut hub, |e| !e.is_empty());
  assert_eq!(kinds(&effects), ["finish End socket=true"]);
  let mut got = [0u8; 5];
  client.read_exact(&mut got).unwrap();
  assert_eq!(&got, b"hello");

  // An ending connection whose client never reads is released at once
  // when its response goes away.
  let (key2, _, _server2) = connect(&mut hub, "b", "rb");
  let big: Arc<[u8]> = vec![b'x'; 4 << 20].into();
  hub.send_one(key2, Frame::from_chunk(big), at(1));
  hub.remove(key2, Removal::End, Reason::Removed);
  assert_eq!(kinds(&hub.forget(key2)), ["finish Destroyed socket=true"]);
  assert!(hub.forget(key2).is_empty());

  // Its `close` instead: released at once too, and ended through Node.
  let (key3, _, _server3) = connect(&mut hub, "c", "rc");
  let big: Arc<[u8]> = vec![b'x'; 4 << 20].into();
  hub.send_one(key3, Frame::from_chunk(big), at(1));
  hub.remove(key3, Removal::End, Reason::Removed);
  assert_eq!(kinds(&hub.closed(key3)), ["finish Closed socket=true"]);
}

/// Crashes the first writer thread, which holds the connection `a`, and
/// checks that exactly `a` is torn down and the death reported.
fn crash_the_thread_holding_a(hub: &mut HubCore<&'static str>) {
  assert!(hub.crash_writer());
  let effects = events_until(hub, |e| {
    e.iter().any(|e| matches!(e, Effect::WriterDied { .. }))
  });
  assert_eq!(
    kinds(&effects),
    [
      "finish Destroy socket=true",
      "disconnect a error",
      "writer died"
    ]
  );
}

#[test]
fn a_dead_writer_tears_its_connections_down_and_later_ones_use_the_stream() {
  let mut hub = socket_hub(10);
  let (_, _, _server) = connect(&mut hub, "a", "ra");
  crash_the_thread_holding_a(&mut hub);
  assert!(!hub.socket_slot_free());
  let (_, wire, _server2) = connect(&mut hub, "b", "rb");
  assert_eq!(wire, None);
  assert_eq!(hub.stats().stream_connections, 1);
}

#[test]
fn a_dead_shard_takes_only_its_connections_down() {
  let mut hub = sharded_hub(10, 2);
  // One connection per shard (the least loaded takes the next).
  let (_, _, _a) = connect(&mut hub, "a", "ra");
  let (_, _, _b) = connect(&mut hub, "b", "rb");
  assert_eq!(hub.stats().socket_connections_by_thread, [1, 1]);
  crash_the_thread_holding_a(&mut hub);
  // Only the running thread is reported.
  assert_eq!(hub.stats().writer_threads, 1);
  assert_eq!(hub.stats().socket_connections_by_thread, [1]);
  // The other shard still writes and still takes new connections.
  assert!(hub.socket_slot_free());
  let (_, wire, _c) = connect(&mut hub, "c", "rc");
  assert!(wire.is_some());
  assert_eq!(hub.stats().socket_connections, 2);
  assert_eq!(hub.stats().socket_connections_by_thread, [2]);
}

#[test]
fn closing_with_a_writer_reports_closed_once_it_stopped() {
  let mut hub = socket_hub(10);
  let (_, _, _server) = connect(&mut hub, "a", "ra");
  assert_eq!(kinds(&hub.close()), ["disconnect a removed"]);
  let effects = events_until(&mut hub, |e| e.iter().any(|e| matches!(e, Effect::Closed)));
  assert_eq!(kinds(&effects), ["finish End socket=true", "closed"]);
  assert!(!hub.has_writer());
}

#[test]
fn an_orphaned_hub_ends_its_socket_connections_then_releases_itself() {
  let mut hub = socket_hub(10);
  let (_, _, _server) = connect(&mut hub, "a", "ra");
  let (stream_key, _) = hub.register("b", "rb", None, at(0));
  assert!(hub.orphan().is_empty());
  let effects = events_until(&mut hub, |e| !e.is_empty());
  assert_eq!(kinds(&effects), ["finish End socket=true"]);
  // The stream connection's close event finishes the hub, silently.
  assert_eq!(
    kinds(&hub.closed(stream_key)),
    ["finish Closed socket=false", "release hub"]
  );
}

#[test]
fn the_fd_budget_and_transport_mode_decide_the_hand_off() {
  let mut hub = socket_hub(1);
  let (_, w1, _s1) = connect(&mut hub, "a", "ra");
  let (_, w2, _s2) = connect(&mut hub, "b", "rb");
  assert!(w1.is_some());
  assert_eq!(w2, None);
  assert_eq!(hub.stats().socket_capacity, Some(1));
  hub
    .configure(Settings {
      mode: Some(TransportMode::Stream),
      ..Settings::default()
    })
    .unwrap();
  assert!(!hub.socket_slot_free());
  assert_eq!(hub.stats().socket_capacity, Some(0));
}

#[test]
fn jittered_retry_delays_span_the_window_in_at_most_sixteen_steps() {
  use super::send::{retry_buckets, RETRY_BUCKETS};
  assert_eq!(retry_buckets(1000, 0), vec![1000]);
  assert_eq!(retry_buckets(1000, 3), vec![1000, 1001, 1002, 1003]);
  let wide = retry_buckets(1000, 4000);
  assert_eq!(wide.len() as u32, RETRY_BUCKETS);
  assert_eq!((wide[0], *wide.last().unwrap()), (1000, 5000));
  assert!(wide.windows(2).all(|w| w[0] < w[1]));
  // Saturates at u32::MAX instead of wrapping.
  assert_eq!(*retry_buckets(u32::MAX - 1, 10).last().unwrap(), u32::MAX);
}

/// Registers a connection the JS surface found on TLS (no fd offered).
fn register_tls(hub: &mut HubCore<&'static str>, id: &str, handle: &'static str) -> ConnKey {
  let offer = Err(StreamReason::Tls);
  hub
    .register_with(id, handle, offer, at(0), None, None, Admitted::Free)
    .0
}

/// The count for `reason` in the hub's stats.
fn fallbacks(hub: &HubCore<&'static str>, reason: StreamReason) -> u64 {
  let counts = hub.stats().stream_fallbacks;
  counts
    .iter()
    .find(|(r, _)| *r == reason)
    .map_or(0, |(_, n)| *n)
}

#[test]
fn each_stream_connection_keeps_and_counts_why_it_is_on_the_stream() {
  let mut hub = socket_hub(1);
  let (on_socket, wire, _a) = connect(&mut hub, "a", "ra");
  assert!(wire.is_some());
  assert_eq!(hub.stream_reason(on_socket), None);
  // The budget of one is taken: the next socket goes to the stream.
  let (full, wire, _b) = connect(&mut hub, "b", "rb");
  assert_eq!(wire, None);
  assert_eq!(hub.stream_reason(full), Some(StreamReason::Capacity));
  // A reason the JS surface found is kept as it is.
  let tls = register_tls(&mut hub, "c", "rc");
  assert_eq!(hub.stream_reason(tls), Some(StreamReason::Tls));
  assert_eq!(fallbacks(&hub, StreamReason::Capacity), 1);
  assert_eq!(fallbacks(&hub, StreamReason::Tls), 1);
  // Counted once per registration, not per connection alive now.
  hub.remove(tls, Removal::Forget, Reason::Removed);
  assert_eq!(fallbacks(&hub, StreamReason::Tls), 1);
  let stats = hub.stats();
  assert_eq!(stats.stream_fallbacks.len(), StreamReason::ALL.len());
  assert_eq!(
    stats.stream_fallbacks.iter().map(|(_, n)| n).sum::<u64>(),
    2
  );
}

#[test]
fn the_configured_transport_outranks_what_the_response_was() {
  let mut hub = socket_hub(10);
  hub
    .configure(Settings {
      mode: Some(TransportMode::Stream),
      ..Settings::default()
    })
    .unwrap();
  let (socket, _, _a) = connect(&mut hub, "a", "ra");
  let tls = register_tls(&mut hub, "b", "rb");
  assert_eq!(hub.stream_reason(socket), Some(StreamReason::Configured));
  assert_eq!(hub.stream_reason(tls), Some(StreamReason::Configured));
  assert_eq!(fallbacks(&hub, StreamReason::Configured), 2);
  assert_eq!(hub.socket_refusal(), Some(StreamReason::Configured));
}

#[test]
fn a_socket_offered_without_a_running_writer_is_counted_as_writer_down() {
  // The writer was never started: nothing can take the fd.
  let mut hub = stream_hub();
  let (server, _client) = pair();
  let fd = server.as_fd().try_clone_to_owned().unwrap();
  let (key, wire) = hub.register("a", "ra", Some(fd.into()), at(0));
  assert_eq!(wire, None);
  assert_eq!(hub.stream_reason(key), Some(StreamReason::WriterDown));
  // Without a socket at all, the test helper counts it as having none.
  let (bare, _) = hub.register("b", "rb", None, at(0));
  assert_eq!(hub.stream_reason(bare), Some(StreamReason::NoSocket));
}

#[test]
fn live_bus_entries_for_the_same_connections_are_one_write_each_run() {
  use crate::bus::entry::{BusFrame, Entry, EntryId, Route};
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (b, _) = hub.register("b", "rb", None, at(0));
  assert!(hub.set_membership(b, "room", true));
  // Routes are kept once a bus runs (Redis away here).
  start_unreachable_bus(&mut hub);
  let frame = |seq: u64, route: Route, data: &str| {
    let entry = Entry {
      route,
      event: None,
      retry: None,
      data: data.into(),
      origin: None,
    };
    BusFrame::new(Some(EntryId { ms: 1, seq }), &entry)
  };
  let frames = [
    frame(1, Route::All, "1"),
    frame(2, Route::All, "2"),
    frame(3, Route::Channel("room".into()), "3"),
    frame(4, Route::Channel("other".into()), "nobody"),
    frame(5, Route::All, "5"),
  ];
  let dispatches = hub.bus_frames(&frames, at(1));
  let runs: Vec<(Vec<ConnKey>, String)> = dispatches
    .iter()
    .map(|d| (target_keys(d), body(d)))
    .collect();
  assert_eq!(
    runs,
    [
      (
        vec![a, b],
        "id: 1-1\ndata: 1\n\nid: 1-2\ndata: 2\n\n".to_string()
      ),
      (vec![b], "id: 1-3\ndata: 3\n\n".to_string()),
      (vec![a, b], "id: 1-5\ndata: 5\n\n".to_string()),
    ],
    "in stream order, a run never reaching past an entry for others"
  );
  // Every entry of a run counts as a frame sent to each recipient.
  let written = Outcome::Written { buffering: false };
  hub.settle(&dispatches[0], &[(a, written), (b, written)]);
  assert_eq!(hub.stats().frames_sent, 4);
  // A run holds at most RUN_BYTES (one bigger entry alone still goes).
  let data = "x".repeat(10_000);
  let many: Vec<BusFrame> = (0..10).map(|i| frame(10 + i, Route::All, &data)).collect();
  let sizes: Vec<usize> = hub
    .bus_frames(&many, at(2))
    .iter()
    .map(|d| d.events)
    .collect();
  assert_eq!(sizes, [6, 4]);
  let huge = [frame(
    30,
    Route::All,
    &"y".repeat(super::bus::RUN_BYTES * 2),
  )];
  assert_eq!(hub.bus_frames(&huge, at(3)).len(), 1);
  hub.close();
  hub.stop_bus();
}
