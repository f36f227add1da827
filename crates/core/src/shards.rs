//! The socket writer, sharded: W writer threads ([`SocketWriter`]s), each
//! with its own runtime, readiness registrations and queues, so a broadcast
//! to N connections is written from W cores at once.
//!
//! A connection lives on one shard for its life (the least loaded when it
//! arrives), so its frames, the app's own writes and its end keep their
//! order. Which one is a [`ShardId`] the hub keeps with the connection
//! (the one record of where it lives: no map of owners here); every call
//! about one connection names its shard. A broadcast hands the same shared
//! frame to every shard that has connections (one `Arc`, never a copy per
//! shard); a targeted send goes
//! only to the shards that own its recipients, and adjacent frames are
//! still merged per shard. Each shard counts into its own [`Stats`] (no
//! cache line bounced between writer threads per frame); the hub sums them.

use crate::registry::ConnKey;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stats::Stats;
use crate::writer::{
  ConnGauge, DeadReason, SocketFd, SocketWriter, WriterConfig, WriterEvent, WriterPort,
};

/// Most writer threads one hub may have.
pub const MAX_WRITER_THREADS: usize = 64;

// Every shard's index fits a `ShardId`.
const _: () = assert!(MAX_WRITER_THREADS <= u8::MAX as usize + 1);

/// Writer threads a hub uses unless told otherwise: the available cores
/// but one, which stays with the JS thread, and at most 8. Measured on 2
/// cores (bench/results/sharded-writer.md): a second writer thread gained
/// nothing there, since no core was free for it, and doubled the event
/// loop's delay; so a 2-core machine keeps one. Past 8, each broadcast's
/// per-shard hand-offs and each thread's runtime cost more than the shorter
/// write loops gain for the client counts one process usually holds; a
/// bigger machine with more clients can ask for more (`writerThreads`, up
/// to 64).
pub fn default_writer_threads() -> usize {
  std::thread::available_parallelism()
    .map_or(1, |n| n.get())
    .saturating_sub(1)
    .clamp(1, 8)
}

/// The writer thread that holds a connection, for the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId(u8);

impl ShardId {
  /// The id of the shard at `index`: every index fits, since `Writers`
  /// starts at most [`MAX_WRITER_THREADS`] shards.
  fn of(index: usize) -> ShardId {
    ShardId(u8::try_from(index).expect("at most MAX_WRITER_THREADS shards"))
  }

  fn index(self) -> usize {
    usize::from(self.0)
  }
}

/// The recipients of a targeted send, grouped by shard as the hub collects
/// them, so the send hands each shard its own list without a lookup.
pub struct ShardGroups(Vec<Vec<ConnKey>>);

impl ShardGroups {
  /// Nothing yet (allocates nothing until the first push).
  pub fn new() -> Self {
    Self(Vec::new())
  }

  pub fn push(&mut self, shard: ShardId, wire: ConnKey) {
    let index = shard.index();
    if self.0.len() <= index {
      self.0.resize_with(index + 1, Vec::new);
    }
    self.0[index].push(wire);
  }

  /// How many connections were pushed.
  pub fn len(&self) -> usize {
    self.0.iter().map(Vec::len).sum()
  }

  pub fn is_empty(&self) -> bool {
    self.0.iter().all(Vec::is_empty)
  }
}

impl Default for ShardGroups {
  fn default() -> Self {
    Self::new()
  }
}

/// What the shards report, as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
  Ended(ConnKey),
  Dead(ConnKey, DeadReason),
  Drain(ConnKey),
  /// Every shard has stopped after [`Writers::shutdown`].
  Stopped,
  /// A shard's thread died; its connections (those the hub placed on
  /// `shard`) are gone. `all` when no shard is left alive.
  Died {
    shard: ShardId,
    all: bool,
  },
}

struct Shard {
  writer: SocketWriter,
  stats: Arc<Stats>,
  /// Connections it holds now.
  connections: usize,
  alive: bool,
  stopped: bool,
}

pub struct Writers {
  shards: Vec<Shard>,
  stopping: bool,
}

impl Writers {
  /// Starts `threads` writer threads. `notify` is called (from any of them)
  /// when events wait in [`Writers::take_events`].
  pub fn start(
    threads: usize,
    config: WriterConfig,
    notify: Arc<dyn Fn() + Send + Sync>,
  ) -> io::Result<Self> {
    let mut shards = Vec::with_capacity(threads);
    for _ in 0..threads.clamp(1, MAX_WRITER_THREADS) {
      let stats = Arc::new(Stats::default());
      let notify = notify.clone();
      let writer = SocketWriter::start(config, stats.clone(), Box::new(move || notify()))?;
      shards.push(Shard {
        writer,
        stats,
        connections: 0,
        alive: true,
        stopped: false,
      });
    }
    Ok(Self {
      shards,
      stopping: false,
    })
  }

  pub fn threads(&self) -> usize {
    self.shards.len()
  }

  /// Whether any shard can still take connections.
  pub fn alive(&self) -> bool {
    !self.stopping && self.shards.iter().any(|s| s.alive)
  }

  /// Threads still running (a panicked one is not).
  pub fn running(&self) -> usize {
    self.shards.iter().filter(|s| s.alive).count()
  }

  /// Connections per running shard, in shard order.
  pub fn connections(&self) -> Vec<usize> {
    self
      .shards
      .iter()
      .filter(|s| s.alive)
      .map(|s| s.connections)
      .collect()
  }

  /// The least loaded live shard, where the next connection goes; `None`
  /// when no shard can take one.
  pub fn pick(&self) -> Option<ShardId> {
    if self.stopping {
      return None;
    }
    let (index, _) = self
      .shards
      .iter()
      .enumerate()
      .filter(|(_, s)| s.alive)
      .min_by_key(|(_, s)| s.connections)?;
    Some(ShardId::of(index))
  }

  /// Hands a connection to the least loaded live shard, and says which.
  pub fn add(
    &mut self,
    wire: ConnKey,
    fd: impl Into<SocketFd>,
    gauge: Arc<ConnGauge>,
  ) -> Option<ShardId> {
    let shard = self.pick()?;
    self.add_to(shard, wire, fd.into(), gauge, false);
    Some(shard)
  }

  /// Hands a connection to `shard` (from [`Writers::pick`]), its replay
  /// gate held from the start when `held`.
  pub fn add_to(
    &mut self,
    shard: ShardId,
    wire: ConnKey,
    fd: SocketFd,
    gauge: Arc<ConnGauge>,
    held: bool,
  ) {
    let shard = &mut self.shards[shard.index()];
    shard.connections += 1;
    shard.writer.add_with(wire, fd, gauge, held);
  }

  fn shard(&self, shard: ShardId) -> &SocketWriter {
    &self.shards[shard.index()].writer
  }

  /// A connection left `shard` for good (removed, or ended and flushed):
  /// the hub calls it once per connection, when its own record goes.
  pub fn release(&mut self, shard: ShardId) {
    let shard = &mut self.shards[shard.index()];
    shard.connections = shard.connections.saturating_sub(1);
  }

  /// Hands every shard's held adds to its thread (the end of a JS turn
  /// with registrations in it).
  pub fn flush(&self) {
    for shard in &self.shards {
      shard.writer.flush();
    }
  }

  /// Whether any shard holds adds for [`Writers::flush`] (for the tests).
  #[cfg(test)]
  pub fn has_held(&self) -> bool {
    self.shards.iter().any(|s| s.writer.has_held())
  }

  pub fn write(&self, shard: ShardId, wire: ConnKey, chunk: Arc<[u8]>) {
    self.shard(shard).write(wire, chunk);
  }

  /// The same frame to every connection: one message to each shard that
  /// has any, all sharing the one buffer.
  pub fn broadcast(&self, chunk: Arc<[u8]>) {
    for shard in self.shards.iter().filter(|s| s.connections > 0) {
      shard.writer.broadcast(chunk.clone());
    }
  }

  /// The frame to the connections of `groups`, each shard getting only
  /// its own.
  pub fn send(&self, groups: ShardGroups, chunk: Arc<[u8]>) {
    for (index, wires) in groups.0.into_iter().enumerate() {
      if !wires.is_empty() {
        self.shards[index].writer.send(wires, chunk.clone());
      }
    }
  }

  /// Several frames to `wire`, in order (a replay).
  pub fn send_frames(&self, shard: ShardId, wire: ConnKey, frames: Vec<Arc<[u8]>>) {
    self.shard(shard).send_frames(vec![wire], frames);
  }

  /// Sets what bus entries route `wire` by.
  pub fn route(&self, shard: ShardId, wire: ConnKey, client: Arc<str>, channels: Vec<Arc<str>>) {
    self.shard(shard).route(wire, client, channels);
  }

  /// The port of `shard`, for a replay the bus writes to one of its
  /// connections.
  pub fn port_of(&self, shard: ShardId) -> Option<WriterPort> {
    self.shard(shard).port()
  }

  /// One port per live shard, for the bus's live entries.
  pub fn ports(&self) -> Vec<WriterPort> {
    self
      .shards
      .iter()
      .filter(|s| s.alive)
      .filter_map(|s| s.writer.port())
      .collect()
  }

  /// Ends `wire` once its queue is flushed ([`Event::Ended`] follows).
  pub fn end(&self, shard: ShardId, wire: ConnKey) {
    self.shard(shard).end(wire);
  }

  /// Drops `wire` at once (its client is gone).
  pub fn remove(&self, shard: ShardId, wire: ConnKey) {
    self.shard(shard).remove(wire);
  }

  pub fn configure(&self, config: WriterConfig) {
    for shard in &self.shards {
      shard.writer.configure(config);
    }
  }

  /// Lets every shard finish and exit; [`Event::Stopped`] follows once all
  /// have. Idempotent.
  pub fn shutdown(&mut self) {
    if !self.stopping {
      self.stopping = true;
      for shard in &self.shards {
        shard.writer.close();
      }
    }
  }

  /// True once every shard reported that it stopped (or died).
  pub fn stopped(&self) -> bool {
    self.shards.iter().all(|s| s.stopped)
  }

  /// Fault injection for tests: the first live shard's thread panics.
  pub fn crash(&self) -> bool {
    match self.shards.iter().find(|s| s.alive) {
      Some(shard) => {
        shard.writer.crash();
        true
      }
      None => false,
    }
  }

  /// The sum of the shards' counters.
  pub fn stats(&self) -> Stats {
    let sum = Stats::default();
    for shard in &self.shards {
      add(&sum.frames_sent, &shard.stats.frames_sent);
      add(&sum.bytes_sent, &shard.stats.bytes_sent);
      add(&sum.wire_bytes, &shard.stats.wire_bytes);
      add(&sum.frames_dropped, &shard.stats.frames_dropped);
      sum.queued_bytes.fetch_add(
        shard.stats.queued_bytes.load(Ordering::Relaxed),
        Ordering::Relaxed,
      );
    }
    sum
  }

  /// Events of every shard since last time; shard deaths and the final stop
  /// summarized.
  pub fn take_events(&mut self) -> Vec<Event> {
    let mut out = Vec::new();
    for index in 0..self.shards.len() {
      for event in self.shards[index].writer.take_events() {
        match event {
          WriterEvent::Ended(wire) => out.push(Event::Ended(wire)),
          WriterEvent::Dead(wire, why) => out.push(Event::Dead(wire, why)),
          WriterEvent::Drain(wire) => out.push(Event::Drain(wire)),
          WriterEvent::Stopped => self.shards[index].stopped = true,
          WriterEvent::Died => {
            let shard = &mut self.shards[index];
            shard.alive = false;
            shard.stopped = true;
            shard.connections = 0;
            let all = !self.shards.iter().any(|s| s.alive);
            let shard = ShardId::of(index);
            out.push(Event::Died { shard, all });
          }
        }
      }
    }
    if self.stopping && self.stopped() && !out.contains(&Event::Stopped) {
      out.push(Event::Stopped);
    }
    out
  }
}

fn add(sum: &AtomicU64, part: &AtomicU64) {
  sum.fetch_add(part.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::registry::ConnKey;
  use crate::test_util::{collect_until, pair, wait_for};
  use std::io::Read;
  use std::os::fd::AsFd;
  use std::time::Duration;

  fn writers(threads: usize) -> Writers {
    Writers::start(threads, WriterConfig::default(), Arc::new(|| {})).unwrap()
  }

  fn events_until(w: &mut Writers, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    collect_until(|| w.take_events(), done)
  }

  #[test]
  fn connections_spread_evenly_and_every_frame_reaches_each_in_order() {
    let mut w = writers(2);
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    let mut placed = Vec::new();
    for wire in 1..=4 {
      let (server, client) = pair();
      let shard = w.add(
        ConnKey::test(wire),
        server.as_fd().try_clone_to_owned().unwrap(),
        Arc::default(),
      );
      placed.push(shard.unwrap());
      servers.push(server);
      clients.push(client);
    }
    assert_eq!(w.connections(), [2, 2]);
    let groups = |wires: &[u32]| {
      let mut groups = ShardGroups::new();
      for &wire in wires {
        groups.push(placed[wire as usize - 1], ConnKey::test(wire));
      }
      groups
    };
    w.broadcast(Arc::from(&b"a;"[..]));
    // A send to connections on both shards, then one on a single shard.
    w.send(groups(&[1, 2, 3]), Arc::from(&b"b;"[..]));
    w.send(groups(&[4]), Arc::from(&b"c;"[..]));
    w.write(placed[1], ConnKey::test(2), Arc::from(&b"app;"[..]));
    w.broadcast(Arc::from(&b"d;"[..]));
    let expect: [&[u8]; 4] = [b"a;b;d;", b"a;b;app;d;", b"a;b;d;", b"a;c;d;"];
    for (client, want) in clients.iter_mut().zip(expect) {
      client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
      let mut got = vec![0; want.len()];
      client.read_exact(&mut got).unwrap();
      assert_eq!(got, want);
    }
    // The clients can have the bytes before the writer has counted them.
    let expected = 4 * 2 + 3 + 1 + 1;
    wait_for("every frame counted", || {
      Stats::read(&w.stats().frames_sent) >= expected
    });
    assert_eq!(Stats::read(&w.stats().frames_sent), expected);
  }

  #[test]
  fn adds_wait_for_the_next_command_or_a_flush_until_another_thread_has_a_port() {
    let mut w = writers(1);
    let add = |w: &mut Writers, n: u32| {
      let (server, client) = pair();
      let fd = server.as_fd().try_clone_to_owned().unwrap();
      assert!(w.add(ConnKey::test(n), fd, Arc::default()).is_some());
      (server, client)
    };
    // A burst of adds is held (one wake-up later), then a broadcast takes
    // them first: both connections get it.
    let mut burst = vec![add(&mut w, 1), add(&mut w, 2)];
    assert!(w.has_held());
    w.broadcast(Arc::from(&b"x;"[..]));
    assert!(!w.has_held());
    for (_, client) in &mut burst {
      client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
      let mut got = [0; 2];
      client.read_exact(&mut got).unwrap();
      assert_eq!(&got, b"x;");
    }
    // The end of the JS turn hands them over without any other command.
    let _third = add(&mut w, 3);
    assert!(w.has_held());
    w.flush();
    assert!(!w.has_held());
    // Once the bus's thread has a port, nothing is held: its commands must
    // not overtake an add.
    let _ports = w.ports();
    let _fourth = add(&mut w, 4);
    assert!(!w.has_held());
  }

  #[test]
  fn a_release_frees_its_shard_and_a_dead_shard_is_named() {
    let mut w = writers(2);
    let add = |w: &mut Writers, n: u32, server: &std::net::TcpStream| {
      w.add(
        ConnKey::test(n),
        server.as_fd().try_clone_to_owned().unwrap(),
        Arc::default(),
      )
    };
    let (s1, _c1) = pair();
    let (s2, _c2) = pair();
    let one = add(&mut w, 1, &s1).unwrap();
    let two = add(&mut w, 2, &s2).unwrap();
    assert_ne!(one, two, "the least loaded shard takes the next one");
    w.end(one, ConnKey::test(1));
    let events = events_until(&mut w, |e| e.contains(&Event::Ended(ConnKey::test(1))));
    assert_eq!(events, [Event::Ended(ConnKey::test(1))]);
    // Only the hub's release frees the place (its record is the one owner).
    assert_eq!(w.connections().iter().sum::<usize>(), 2);
    w.release(one);
    assert_eq!(w.connections().iter().sum::<usize>(), 1);
    assert_eq!(w.pick(), Some(one));
    // The first live shard dies: it is named, and the other takes new
    // connections.
    assert!(w.crash());
    let events = events_until(&mut w, |e| {
      e.iter().any(|e| matches!(e, Event::Died { .. }))
    });
    let died: Vec<_> = events
      .iter()
      .filter_map(|e| match e {
        Event::Died { shard, all } => Some((*shard, *all)),
        _ => None,
      })
      .collect();
    assert_eq!(died, [(ShardId(0), false)]);
    assert!(w.alive());
    assert_eq!(w.pick(), Some(ShardId(1)));
    let (s3, _c3) = pair();
    assert_eq!(add(&mut w, 3, &s3), Some(ShardId(1)));
    w.shutdown();
    events_until(&mut w, |e| e.contains(&Event::Stopped));
    assert!(w.stopped());
  }
}
