//! The hub's decisions, tested without JS.

use super::*;
use crate::frame;
use crate::registry::ConnKey;
use crate::test_util::{collect_until, pair};
use crate::writer::WireId;
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
  assert_eq!(hub.count(), 0);
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
  assert_eq!(hub.older_than(at(9), limit), [key]);
  // Under another id, then under the same one: each counts from now.
  assert!(hub.reregister(key, "b", at(10)));
  assert!(hub.older_than(at(14), limit).is_empty());
  assert_eq!(hub.older_than(at(16), limit), [key]);
  assert!(hub.reregister(key, "b", at(20)));
  assert!(hub.older_than(at(24), limit).is_empty());
  assert_eq!(&*hub.entry(key).unwrap().id, "b");
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

#[test]
fn stream_outcomes_set_congestion_and_remove_the_slow_and_the_failed() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (b, _) = hub.register("b", "rb", None, at(0));
  let (c, _) = hub.register("c", "rc", None, at(0));
  let (d, _) = hub.register("d", "rd", None, at(0));
  let mut seen = Vec::new();
  let sockets = hub.deliver(
    None,
    || unreachable!(),
    at(1),
    |key, handle, congested| seen.push((key, *handle, congested)),
  );
  assert_eq!(sockets, 0);
  assert_eq!(seen.len(), 4);
  let (written, effects) = hub.settle(
    &[
      (a, Outcome::Buffered),
      (b, Outcome::Written { buffering: false }),
      (c, Outcome::Slow),
      (d, Outcome::Failed),
    ],
    10,
  );
  assert_eq!(written, 2);
  assert_eq!(
    kinds(&effects),
    [
      "finish Destroy socket=false",
      "slow c",
      "disconnect c slow",
      "finish End socket=false",
      "disconnect d error"
    ]
  );
  let congestion: Vec<bool> = hub
    .iter()
    .map(|e| matches!(e.handle.transport, Transport::Stream { congested: true }))
    .collect();
  assert_eq!(congestion, [true, false]);
  let stats = hub.stats();
  assert_eq!((stats.frames_sent, stats.bytes_sent), (2, 20));
  assert_eq!(stats.slow_disconnects, 1);
  hub.settle(&[(a, Outcome::Dropped)], 10);
  assert_eq!(hub.stats().frames_dropped, 1);
}

#[test]
fn targeted_delivery_visits_only_the_named_and_marks_them_sent() {
  let mut hub = stream_hub();
  let (a, _) = hub.register("a", "ra", None, at(0));
  let (_b, _) = hub.register("b", "rb", None, at(0));
  let mut seen = Vec::new();
  hub.deliver(
    Some(&[a]),
    || unreachable!(),
    at(20),
    |_, h, _| seen.push(*h),
  );
  assert_eq!(seen, ["ra"]);
  // Heartbeats: only b was idle for 15 s at t=30.
  hub.note_broadcast(at(0));
  assert_eq!(hub.idle(at(30), Duration::from_secs(15)).len(), 1);
  assert_eq!(hub.idle(at(40), Duration::from_secs(15)).len(), 2);
  // A recent broadcast to everyone holds heartbeats back.
  hub.note_broadcast(at(35));
  assert!(hub.idle(at(40), Duration::from_secs(15)).is_empty());
  // A huge idle time selects nobody and does not overflow.
  assert!(hub.idle(at(40), Duration::MAX).is_empty());
}

#[test]
fn replay_is_bounded_by_max_buffered_bytes() {
  let mut hub = stream_hub();
  hub.configure(Settings {
    history_size: Some(100),
    max_buffered_bytes: Some(130),
    ..Settings::default()
  });
  let mut ids = vec![String::new()];
  for _ in 0..50 {
    let id = hub.next_event_id();
    ids.push(id.clone());
    let mut frame = Vec::new();
    frame::push_event(
      &mut frame,
      &frame::EventFields {
        id: Some(&id),
        ..Default::default()
      },
      "x",
    );
    hub.record(&id, frame::http_chunk(&frame).into());
  }
  let (key, _) = hub.register("a", "r", None, at(0));
  // Each frame is "id: <8-char epoch>:NN\ndata: x\n\n" (25 bytes): 5 fit in 130.
  let fits = hub.replay(key, &ids[45]).unwrap();
  assert_eq!(
    String::from_utf8(fits).unwrap().matches("data: x").count(),
    5
  );
  let too_far = hub.replay(key, &ids[1]).unwrap();
  let reset = format!("event: reset\nid: {}\ndata: null\n\n", ids[50]);
  assert_eq!(too_far, reset.as_bytes());
  assert_eq!(hub.replay(key, &ids[50]), None);
  let stats = hub.stats();
  assert_eq!((stats.replays, stats.resets), (1, 1));
}

/// A hub with one writer thread running and room for `budget` socket
/// connections.
fn socket_hub(budget: usize) -> HubCore<&'static str> {
  sharded_hub(budget, 1)
}

fn sharded_hub(budget: usize, threads: usize) -> HubCore<&'static str> {
  let mut hub = HubCore::new(budget);
  hub.configure(Settings {
    writer_threads: Some(threads),
    ..Settings::default()
  });
  hub.start_writer(Arc::new(|| {})).unwrap();
  hub
}

/// Registers a real loopback connection, offered to the writer. Returns
/// its key, its wire (if the writer took it) and both ends of the socket.
fn connect(
  hub: &mut HubCore<&'static str>,
  id: &str,
  handle: &'static str,
) -> (ConnKey, Option<WireId>, (TcpStream, TcpStream)) {
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
  hub.deliver(
    None,
    || Arc::from(&b"hello"[..]),
    at(1),
    |_, _, _| unreachable!("no stream connections"),
  );
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
  hub.deliver(Some(&[key2]), || big, at(1), |_, _, _| {});
  hub.remove(key2, Removal::End, Reason::Removed);
  assert_eq!(kinds(&hub.forget(key2)), ["finish Destroyed socket=true"]);
  assert!(hub.forget(key2).is_empty());

  // Its `close` instead: released at once too, and ended through Node.
  let (key3, _, _server3) = connect(&mut hub, "c", "rc");
  let big: Arc<[u8]> = vec![b'x'; 4 << 20].into();
  hub.deliver(Some(&[key3]), || big, at(1), |_, _, _| {});
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
  hub.configure(Settings {
    mode: Some(TransportMode::Stream),
    ..Settings::default()
  });
  assert!(!hub.socket_slot_free());
  assert_eq!(hub.stats().socket_capacity, Some(0));
}
