//! The socket writer, sharded: W writer threads ([`SocketWriter`]s), each
//! with its own runtime, readiness registrations and queues, so a broadcast
//! to N connections is written from W cores at once.
//!
//! A connection lives on one shard for its life (the least loaded when it
//! arrives), so its frames, the app's own writes and its end keep their
//! order. A broadcast hands the same shared frame to every shard that has
//! connections (one `Arc`, never a copy per shard); a targeted send goes
//! only to the shards that own its recipients, and adjacent frames are
//! still merged per shard. Each shard counts into its own [`Stats`] (no
//! cache line bounced between writer threads per frame); the hub sums them.

use crate::registry::ConnKey;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stats::Stats;
use crate::writer::{
  ConnGauge, DeadReason, SocketFd, SocketWriter, WriterConfig, WriterEvent, WriterPort,
};

/// Most writer threads one hub may have.
pub const MAX_WRITER_THREADS: usize = 64;

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

/// What the shards report, as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
  Ended(ConnKey),
  Dead(ConnKey, DeadReason),
  Drain(ConnKey),
  /// Every shard has stopped after [`Writers::shutdown`].
  Stopped,
  /// A shard's thread died; its connections are gone. `all` when no shard
  /// is left alive.
  Died {
    wires: Vec<ConnKey>,
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
  /// Which shard each connection lives on.
  owner: HashMap<ConnKey, usize>,
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
      owner: HashMap::new(),
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

  /// Hands a connection to the least loaded live shard.
  pub fn add(&mut self, wire: ConnKey, fd: impl Into<SocketFd>, gauge: Arc<ConnGauge>) -> bool {
    self.add_with(wire, fd.into(), gauge, false)
  }

  /// [`Writers::add`], its replay gate held from the start when `held`.
  pub fn add_with(
    &mut self,
    wire: ConnKey,
    fd: SocketFd,
    gauge: Arc<ConnGauge>,
    held: bool,
  ) -> bool {
    let Some((index, shard)) = self
      .shards
      .iter_mut()
      .enumerate()
      .filter(|(_, s)| s.alive)
      .min_by_key(|(_, s)| s.connections)
    else {
      return false;
    };
    shard.connections += 1;
    shard.writer.add_with(wire, fd, gauge, held);
    self.owner.insert(wire, index);
    true
  }

  fn shard_of(&self, wire: ConnKey) -> Option<&Shard> {
    self.owner.get(&wire).map(|&i| &self.shards[i])
  }

  /// Forgets which shard held `wire` (it left that shard's table).
  fn release(&mut self, wire: ConnKey) {
    if let Some(index) = self.owner.remove(&wire) {
      let shard = &mut self.shards[index];
      shard.connections = shard.connections.saturating_sub(1);
    }
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

  pub fn write(&self, wire: ConnKey, chunk: Arc<[u8]>) {
    if let Some(shard) = self.shard_of(wire) {
      shard.writer.write(wire, chunk);
    }
  }

  /// The same frame to every connection: one message to each shard that
  /// has any, all sharing the one buffer.
  pub fn broadcast(&self, chunk: Arc<[u8]>) {
    for shard in self.shards.iter().filter(|s| s.connections > 0) {
      shard.writer.broadcast(chunk.clone());
    }
  }

  /// The frame to `wires`, each shard getting only its own.
  pub fn send(&self, wires: Vec<ConnKey>, chunk: Arc<[u8]>) {
    match self.split(wires) {
      Split::One(index, wires) => self.shards[index].writer.send(wires, chunk),
      Split::Many(groups) => {
        for (index, wires) in groups {
          self.shards[index].writer.send(wires, chunk.clone());
        }
      }
    }
  }

  /// Several frames to `wire`, in order (a replay).
  pub fn send_frames(&self, wire: ConnKey, frames: Vec<Arc<[u8]>>) {
    if let Some(shard) = self.shard_of(wire) {
      shard.writer.send_frames(vec![wire], frames);
    }
  }

  /// Sets what bus entries route `wire` by.
  pub fn route(&self, wire: ConnKey, client: Arc<str>, channels: Vec<Arc<str>>) {
    if let Some(shard) = self.shard_of(wire) {
      shard.writer.route(wire, client, channels);
    }
  }

  /// The port of the shard that holds `wire`.
  pub fn port_of(&self, wire: ConnKey) -> Option<WriterPort> {
    self.shard_of(wire).and_then(|s| s.writer.port())
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

  pub fn end(&self, wire: ConnKey) {
    if let Some(shard) = self.shard_of(wire) {
      shard.writer.end(wire);
    }
  }

  /// Drops `wire` at once (its client is gone).
  pub fn remove(&mut self, wire: ConnKey) {
    if let Some(shard) = self.shard_of(wire) {
      shard.writer.remove(wire);
    }
    self.release(wire);
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
          WriterEvent::Ended(wire) => {
            self.release(wire);
            out.push(Event::Ended(wire));
          }
          WriterEvent::Dead(wire, why) => {
            self.release(wire);
            out.push(Event::Dead(wire, why));
          }
          WriterEvent::Drain(wire) => out.push(Event::Drain(wire)),
          WriterEvent::Stopped => self.shards[index].stopped = true,
          WriterEvent::Died => {
            let shard = &mut self.shards[index];
            shard.alive = false;
            shard.stopped = true;
            shard.connections = 0;
            let wires: Vec<ConnKey> = self
              .owner
              .iter()
              .filter(|(_, &i)| i == index)
              .map(|(&w, _)| w)
              .collect();
            for wire in &wires {
              self.owner.remove(wire);
            }
            let all = !self.shards.iter().any(|s| s.alive);
            out.push(Event::Died { wires, all });
          }
        }
      }
    }
    if self.stopping && self.stopped() && !out.contains(&Event::Stopped) {
      out.push(Event::Stopped);
    }
    out
  }

  fn split(&self, wires: Vec<ConnKey>) -> Split {
    if self.shards.len() == 1 {
      return Split::One(0, wires);
    }
    let mut groups: Vec<(usize, Vec<ConnKey>)> = Vec::new();
    for wire in wires {
      let Some(&index) = self.owner.get(&wire) else {
        continue;
      };
      match groups.iter_mut().find(|(i, _)| *i == index) {
        Some((_, group)) => group.push(wire),
        None => groups.push((index, vec![wire])),
      }
    }
    Split::Many(groups)
  }
}

enum Split {
  One(usize, Vec<ConnKey>),
  Many(Vec<(usize, Vec<ConnKey>)>),
}

fn add(sum: &AtomicU64, part: &AtomicU64) {
  sum.fetch_add(part.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::registry::{keys, ConnKey};
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
    for wire in 1..=4 {
      let (server, client) = pair();
      assert!(w.add(
        ConnKey::test(wire),
        server.as_fd().try_clone_to_owned().unwrap(),
        Arc::default()
      ));
      servers.push(server);
      clients.push(client);
    }
    assert_eq!(w.connections(), [2, 2]);
    w.broadcast(Arc::from(&b"a;"[..]));
    // A send to connections on both shards, then one on a single shard.
    w.send(keys(&[1, 2, 3]), Arc::from(&b"b;"[..]));
    w.send(vec![ConnKey::test(4)], Arc::from(&b"c;"[..]));
    w.write(ConnKey::test(2), Arc::from(&b"app;"[..]));
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
      assert!(w.add(ConnKey::test(n), fd, Arc::default()));
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
  fn ends_release_their_shard_and_a_dead_shard_reports_its_connections() {
    let mut w = writers(2);
    let (s1, _c1) = pair();
    let (s2, _c2) = pair();
    w.add(
      ConnKey::test(1),
      s1.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    w.add(
      ConnKey::test(2),
      s2.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    w.end(ConnKey::test(1));
    let events = events_until(&mut w, |e| e.contains(&Event::Ended(ConnKey::test(1))));
    assert_eq!(events, [Event::Ended(ConnKey::test(1))]);
    assert_eq!(w.connections().iter().sum::<usize>(), 1);
    // The first live shard dies: only its connection is reported.
    assert!(w.crash());
    let events = events_until(&mut w, |e| {
      e.iter().any(|e| matches!(e, Event::Died { .. }))
    });
    let died: Vec<_> = events
      .iter()
      .filter_map(|e| match e {
        Event::Died { wires, all } => Some((wires.clone(), *all)),
        _ => None,
      })
      .collect();
    assert_eq!(died.len(), 1);
    assert!(!died[0].1);
    // Wire 2 was on shard 1 or shard 0; either way the living shard takes
    // new connections.
    assert!(w.alive());
    let (s3, _c3) = pair();
    assert!(w.add(
      ConnKey::test(3),
      s3.as_fd().try_clone_to_owned().unwrap(),
      Arc::default()
    ));
    w.shutdown();
    events_until(&mut w, |e| e.contains(&Event::Stopped));
    assert!(w.stopped());
  }
}
