//! The hub's decisions about socket connections (the writer threads, the
//! fd budget, why a connection is on the stream), tested without JS.

use super::*;

/// A hub with one writer thread running and room for `budget` socket
/// connections.
pub(super) fn socket_hub(budget: usize) -> HubCore<&'static str> {
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
pub(super) fn connect(
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
  assert_eq!(
    kinds(&hub.leave(Leave::Destroying(key2))),
    ["finish Destroyed socket=true"]
  );
  assert!(hub.leave(Leave::Destroying(key2)).is_empty());

  // Its `close` instead: released at once too, and ended through Node.
  let (key3, _, _server3) = connect(&mut hub, "c", "rc");
  let big: Arc<[u8]> = vec![b'x'; 4 << 20].into();
  hub.send_one(key3, Frame::from_chunk(big), at(1));
  hub.remove(key3, Removal::End, Reason::Removed);
  assert_eq!(
    kinds(&hub.leave(Leave::Closed(key3))),
    ["finish Closed socket=true"]
  );
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
fn a_dead_shard_finishes_its_ending_connections_and_each_place_is_freed_once() {
  let mut hub = sharded_hub(10, 2);
  let (_, _, _a) = connect(&mut hub, "a", "ra");
  let (_, _, _b) = connect(&mut hub, "b", "rb");
  // `c` goes where `a` is, and is still flushing when that thread dies.
  let (c, _, _c) = connect(&mut hub, "c", "rc");
  assert_eq!(hub.stats().socket_connections_by_thread, [2, 1]);
  let big: Arc<[u8]> = vec![b'x'; 4 << 20].into();
  hub.send_one(c, Frame::from_chunk(big), at(1));
  assert_eq!(
    kinds(&hub.remove(c, Removal::End, Reason::Removed)),
    ["disconnect c removed"]
  );
  assert!(hub.is_ending(c));
  // Removed from the registry, its place is held until the writer is done.
  assert_eq!(hub.stats().socket_connections_by_thread, [2, 1]);
  assert!(hub.crash_writer());
  let effects = events_until(&mut hub, |e| {
    e.iter().any(|e| matches!(e, Effect::WriterDied { .. }))
  });
  assert_eq!(
    kinds(&effects),
    [
      "finish Destroy socket=true",
      "finish Destroy socket=true",
      "disconnect a error",
      "writer died"
    ]
  );
  assert!(!hub.is_ending(c));
  assert_eq!(hub.stats().socket_connections_by_thread, [1]);
  // `b` leaving frees its place once: the next one still counts.
  let b = hub.connections().keys_for_id("b")[0];
  hub.remove(b, Removal::Destroy, Reason::Closed);
  assert_eq!(hub.stats().socket_connections_by_thread, [0]);
  let (_, wire, _d) = connect(&mut hub, "d", "rd");
  assert!(wire.is_some());
  assert_eq!(hub.stats().socket_connections_by_thread, [1]);
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
    kinds(&hub.leave(Leave::Closed(stream_key))),
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
  assert_eq!(hub.placement(on_socket), Placement::Socket);
  // The budget of one is taken: the next socket goes to the stream.
  let (full, wire, _b) = connect(&mut hub, "b", "rb");
  assert_eq!(wire, None);
  assert_eq!(
    hub.placement(full),
    Placement::Stream(StreamReason::Capacity)
  );
  // A reason the JS surface found is kept as it is.
  let tls = register_tls(&mut hub, "c", "rc");
  assert_eq!(hub.placement(tls), Placement::Stream(StreamReason::Tls));
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
  assert_eq!(
    hub.placement(socket),
    Placement::Stream(StreamReason::Configured)
  );
  assert_eq!(
    hub.placement(tls),
    Placement::Stream(StreamReason::Configured)
  );
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
  assert_eq!(
    hub.placement(key),
    Placement::Stream(StreamReason::WriterDown)
  );
  // Without a socket at all, the test helper counts it as having none.
  let (bare, _) = hub.register("b", "rb", None, at(0));
  assert_eq!(
    hub.placement(bare),
    Placement::Stream(StreamReason::NoSocket)
  );
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
