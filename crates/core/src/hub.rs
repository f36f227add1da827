//! The hub's decisions, as plain Rust: who is registered and how, who gets
//! a frame, when a client is slow, what a reconnecting client replays, who
//! needs a heartbeat, and how a connection leaves. It takes calls and
//! returns [`Effect`]s; it never touches JS. The binding holds one
//! `HubCore` per JS hub, executes the effects on the JS thread, and runs no
//! JS while it holds the core borrowed.
//!
//! `H` is what the binding keeps per connection (its references to the
//! response and the app's meta); the core only stores and returns it.
//!
//! A connection is in exactly one of three states: registered (in the
//! registry), ending (removed, its socket writer still flushing; bounded by
//! `end_timeout`), or gone. Every way out goes through [`HubCore::remove`]
//! or the end of an ending connection, each yielding one
//! [`Effect::Finish`] and at most one `disconnect`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "hub_bus.rs"]
mod bus_side;

use crate::backpressure::{self, Admit, SlowPolicy};
use crate::bus::gate::{Gate, HeldLocal};
use crate::bus::{Admission, Bus, Mark, ReplayFrom};
use crate::frame;
use crate::history::{History, Replay};
use crate::registry::{ConnKey, Entry, Registry};
use crate::shards::{default_writer_threads, Event, Writers};
use crate::stats::{Stats, StatsSnapshot};
use crate::writer::{fd_budget, ConnGauge, DeadReason, SocketFd, WireId, WriterConfig};

/// Milliseconds from JS as a `Duration`, saturating: any huge value (up to
/// `Number.MAX_VALUE`) means "longer than anything", never a panic (as
/// `Duration::from_secs_f64` would).
pub fn millis(ms: f64) -> Duration {
  Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).unwrap_or(Duration::MAX)
}

/// Which transport new connections may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
  /// The socket writer where the connection allows it, else the stream.
  Auto,
  /// Always the response's own `write`.
  Stream,
}

/// How one connection is written.
#[derive(Debug)]
pub enum Transport {
  /// Through the response's own `write`, on the JS thread. `congested` is
  /// set while Node buffers for it: only then does the binding read how
  /// much (`writableLength`) to apply the slow-client rule.
  Stream { congested: bool },
  /// By the socket writer thread; the binding reads its backlog from the
  /// gauge it shares with the writer.
  Socket { wire: WireId, gauge: Arc<ConnGauge> },
}

impl Transport {
  pub fn wire(&self) -> Option<WireId> {
    match self {
      Transport::Stream { .. } => None,
      Transport::Socket { wire, .. } => Some(*wire),
    }
  }
}

/// What the core keeps per connection.
#[derive(Debug)]
pub struct Conn<H> {
  pub handle: H,
  pub transport: Transport,
  /// The replay gate of a stream connection (a socket connection's lives
  /// in its writer thread).
  pub gate: Gate,
  /// Where its replay starts, while it waits for [`HubCore::request_replay`]
  /// (a held connection).
  pub replay_from: Option<ReplayFrom>,
  /// Id-less events that came while its gate was held (see
  /// [`HubCore::bus_recipients`]), for after the replay.
  pub held_local: HeldLocal,
}

/// How a connection leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
  /// Only forget it: the app took it out of the registry by hand
  /// (`_clients.delete`), or its registration was rolled back.
  Forget,
  /// The app, or Node on the peer's hangup, is destroying it: forget it at
  /// once (the writer drops its queue); its `close` listener stays, to end
  /// it when the close comes, as the original helper's listener does.
  Destroyed,
  /// Its `close` fired: the writer drops it at once (there is no one left
  /// to flush to), and the response is ended unless it already is, as the
  /// original helper's `close` listener does (`removeClient`, then
  /// `res.end()`), so `writableEnded` reads the same afterwards.
  Closed,
  /// End the response gracefully, after whatever is queued for it.
  End,
  /// Tear the connection down (a dead socket, a slow client). Its `close`
  /// listener stays, as with [`Removal::Destroyed`].
  Destroy,
}

/// Why a connection left, as the `disconnect` event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
  /// The client closed the connection.
  Closed,
  /// The app removed it (or it was ended by the app, or was stale).
  Removed,
  /// A write failed.
  Error,
  /// It fell further behind than `maxBufferedBytes` allows.
  Slow,
  /// A registration that failed half-way: no event, the app never saw it.
  Rollback,
}

impl Reason {
  pub fn as_str(self) -> &'static str {
    match self {
      Reason::Closed => "close",
      Reason::Removed => "removed",
      Reason::Error => "error",
      Reason::Slow => "slow",
      Reason::Rollback => "rollback",
    }
  }
}

/// What the binding must do, in order, after a call into the core.
#[derive(Debug)]
pub enum Effect<H> {
  /// Detach the `close` listener, put Node's methods back (when `socket`),
  /// finish the response as `how` says, then release `handle`.
  Finish {
    handle: H,
    how: Removal,
    socket: bool,
  },
  /// Emit `slow` for this client id.
  Slow { id: Arc<str> },
  /// Emit `disconnect`.
  Disconnect { id: Arc<str>, reason: Reason },
  /// Emit `drain` on this connection's response.
  Drain { key: ConnKey },
  /// A writer thread died; report it (its connections are being torn down
  /// by the `Finish` effects around this one). `all` when no writer thread
  /// is left, so new connections use the stream transport.
  WriterDied { all: bool },
  /// `close()` has finished: nothing is registered or ending, the writer
  /// has stopped.
  Closed,
  /// The JS hub was garbage-collected and nothing is left: release the
  /// hub's own references.
  ReleaseHub,
}

/// The result of one stream write, as the binding saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
  /// Written; `buffering` when Node still holds bytes for it.
  Written { buffering: bool },
  /// Written, but `write` returned false: Node is buffering.
  Buffered,
  /// Skipped: past the bound under the `drop` policy.
  Dropped,
  /// Not written: past the bound under the `disconnect` policy.
  Slow,
  /// The response had already ended, or its `write` threw.
  Failed,
}

/// What the app's own `res.write` on a socket connection should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppWrite {
  /// Queued; the backlog is below the high-water mark (`true`).
  Accepted,
  /// Queued; the backlog reached the mark (`false`, then `drain`).
  Full,
  /// The connection is no longer registered: nothing was written.
  Gone,
}

/// Settings the binding parsed from `configure()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Settings {
  pub mode: Option<TransportMode>,
  pub max_buffered_bytes: Option<usize>,
  pub slow_policy: Option<SlowPolicy>,
  pub history_size: Option<usize>,
  pub end_timeout: Option<Duration>,
  /// Writer threads; applies when the writer starts (the first hand-off,
  /// or the first after the writer stopped).
  pub writer_threads: Option<usize>,
}

/// A connection removed gracefully while its writer still flushes.
#[derive(Debug)]
struct Ending<H> {
  key: ConnKey,
  handle: H,
}

pub struct HubCore<H> {
  registry: Registry<Conn<H>>,
  history: History,
  mode: TransportMode,
  writer_config: WriterConfig,
  writer_threads: usize,
  /// The sharded socket writer, once started; kept while it stops, until
  /// every shard has reported `Stopped`.
  writer: Option<Writers>,
  writer_died: bool,
  /// Most connections the writer may hold (see [`crate::writer::fd_budget`]).
  fd_budget: usize,
  next_wire: WireId,
  wires: HashMap<WireId, ConnKey>,
  ending: HashMap<WireId, Ending<H>>,
  /// The wire of each ending connection, by the key its response carries.
  ending_keys: HashMap<ConnKey, WireId>,
  /// When the last broadcast to everyone went out: heartbeats only go to
  /// connections idle since both this and their own last send.
  last_broadcast: Instant,
  closing: bool,
  closed_reported: bool,
  orphaned: bool,
  released: bool,
  stats: Arc<Stats>,
  /// The Redis bus, when configured.
  bus: Option<Bus>,
  /// Its last figures, once it has stopped.
  bus_final: Option<crate::bus::BusStatsSnapshot>,
  /// `close()` told the bus to stop: nothing more can be appended.
  bus_stopping: bool,
}

impl<H> Default for HubCore<H> {
  fn default() -> Self {
    Self::new(fd_budget())
  }
}

impl<H> HubCore<H> {
  /// A hub whose socket writer may hold at most `fd_budget` connections.
  pub fn new(fd_budget: usize) -> Self {
    Self {
      registry: Registry::new(),
      history: History::new(0),
      mode: TransportMode::Auto,
      writer_config: WriterConfig::default(),
      writer_threads: default_writer_threads(),
      writer: None,
      writer_died: false,
      fd_budget,
      next_wire: 1,
      wires: HashMap::new(),
      ending: HashMap::new(),
      ending_keys: HashMap::new(),
      last_broadcast: Instant::now(),
      closing: false,
      closed_reported: false,
      orphaned: false,
      released: false,
      stats: Arc::default(),
      bus: None,
      bus_final: None,
      bus_stopping: false,
    }
  }

  pub fn configure(&mut self, settings: Settings) {
    if let Some(mode) = settings.mode {
      self.mode = mode;
    }
    if let Some(bound) = settings.max_buffered_bytes {
      self.writer_config.max_buffered_bytes = bound;
    }
    if let Some(policy) = settings.slow_policy {
      self.writer_config.slow_policy = policy;
    }
    if let Some(size) = settings.history_size {
      self.history.set_capacity(size);
    }
    if let Some(timeout) = settings.end_timeout {
      self.writer_config.end_timeout = timeout;
    }
    if let Some(threads) = settings.writer_threads {
      self.writer_threads = threads;
    }
    if let Some(writer) = &self.writer {
      writer.configure(self.writer_config);
    }
  }

  /// The slow-client rule for a frame of `len` bytes on top of `queued`.
  pub fn admit(&self, queued: usize, len: usize) -> Admit {
    backpressure::admit(
      queued,
      len,
      self.writer_config.max_buffered_bytes,
      self.writer_config.slow_policy,
    )
  }

  /// The slow-client bound (also the most bytes one replay sends).
  pub fn max_buffered_bytes(&self) -> usize {
    self.writer_config.max_buffered_bytes
  }

  pub fn is_closing(&self) -> bool {
    self.closing
  }

  // ---- registration ------------------------------------------------------

  /// Whether a new connection may be handed to the socket writer.
  pub fn socket_slot_free(&self) -> bool {
    self.mode == TransportMode::Auto
      && !self.writer_died
      && !self.closing
      && self.wires.len() + self.ending.len() < self.fd_budget
  }

  /// Whether the writer runs and takes connections.
  pub fn has_writer(&self) -> bool {
    self.writer.as_ref().is_some_and(Writers::alive)
  }

  /// Whether the writer threads were started (their number is then fixed
  /// until they stop).
  pub fn writer_started(&self) -> bool {
    self.writer.is_some()
  }

  /// Writer threads the next start uses, or the running writer has.
  pub fn writer_threads(&self) -> usize {
    self
      .writer
      .as_ref()
      .map_or(self.writer_threads, Writers::threads)
  }

  /// Starts the socket writer's threads; `notify` is called from them when
  /// events wait in [`HubCore::writer_events`].
  pub fn start_writer(&mut self, notify: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<()> {
    if self.writer.is_none() {
      self.writer = Some(Writers::start(
        self.writer_threads,
        self.writer_config,
        notify,
      )?);
      self.bus_ports();
    }
    Ok(())
  }

  /// Registers a connection under `id`. With `socket` (a duplicate of its
  /// fd, and its framing) and a running writer with room, the writer takes it; otherwise it
  /// uses the stream transport and the duplicate is closed.
  pub fn register(
    &mut self,
    id: &str,
    handle: H,
    socket: Option<SocketFd>,
    now: Instant,
  ) -> (ConnKey, Option<WireId>) {
    self.register_with(id, handle, socket, now, None, None)
  }

  /// [`HubCore::register`], on a hub with a bus from where the client
  /// stands: after its `Last-Event-ID`, or after `mark` (where live delivery
  /// was when its headers were flushed). If entries were delivered since,
  /// its replay gate is held from the first moment, on either transport, and
  /// [`HubCore::request_replay`] then replays them before any live entry.
  /// The decision and the registration happen under live delivery's lock
  /// ([`crate::bus::DeliveryLock::admit`]): no entry falls between them.
  pub fn register_with(
    &mut self,
    id: &str,
    handle: H,
    socket: Option<SocketFd>,
    now: Instant,
    last_event_id: Option<&str>,
    mark: Option<Mark>,
  ) -> (ConnKey, Option<WireId>) {
    match self.bus.as_ref().map(Bus::delivery) {
      Some(lock) => lock.admit(last_event_id, mark, |admission| {
        let replay_from = match admission {
          Admission::Live => None,
          Admission::Held(from) => Some(from.clone()),
        };
        self.insert(id, handle, socket, now, replay_from)
      }),
      None => self.insert(id, handle, socket, now, None),
    }
  }

  fn insert(
    &mut self,
    id: &str,
    handle: H,
    socket: Option<SocketFd>,
    now: Instant,
    replay_from: Option<ReplayFrom>,
  ) -> (ConnKey, Option<WireId>) {
    let hold = replay_from.is_some();
    let socket = socket.filter(|_| self.has_writer() && self.socket_slot_free());
    let (transport, handoff) = match socket {
      Some(fd) => {
        let wire = self.next_wire;
        self.next_wire += 1;
        let gauge = Arc::new(ConnGauge::default());
        (
          Transport::Socket {
            wire,
            gauge: gauge.clone(),
          },
          Some((wire, fd, gauge)),
        )
      }
      None => (Transport::Stream { congested: false }, None),
    };
    let conn = Conn {
      handle,
      transport,
      gate: if hold { Gate::held() } else { Gate::default() },
      held_local: HeldLocal::default(),
      replay_from,
    };
    let key = self.registry.insert(id, conn, now);
    let wire = handoff.map(|(wire, fd, gauge)| {
      self.wires.insert(wire, key);
      if let Some(writer) = &mut self.writer {
        writer.add_with(wire, fd, gauge, hold);
      }
      wire
    });
    self.route_changed(key);
    self.bus_counts();
    (key, wire)
  }

  pub fn contains(&self, key: ConnKey) -> bool {
    self.registry.contains(key)
  }

  /// Whether `key` was removed gracefully and its writer still flushes: its
  /// response is over for the app (no re-registration, no more sends).
  pub fn is_ending(&self, key: ConnKey) -> bool {
    self.ending_keys.contains_key(&key)
  }

  pub fn entry(&self, key: ConnKey) -> Option<&Entry<Conn<H>>> {
    self.registry.get(key)
  }

  pub fn handle_mut(&mut self, key: ConnKey) -> Option<&mut H> {
    self.registry.get_mut(key).map(|e| &mut e.handle.handle)
  }

  /// Registers a registered connection again, under `id` (its own or
  /// another): its age starts over at `now`, as the original helper's fresh
  /// `{ res, meta, createdAt }` entry does, so `cleanupStaleClients` counts
  /// from the last registration.
  pub fn reregister(&mut self, key: ConnKey, id: &str, now: Instant) -> bool {
    let renamed = self.registry.rename(key, id);
    if let Some(entry) = self.registry.get_mut(key) {
      entry.connected_at = now;
    }
    self.route_changed(key);
    renamed
  }

  pub fn count(&self) -> usize {
    self.registry.len()
  }

  pub fn keys(&self) -> Vec<ConnKey> {
    self.registry.keys()
  }

  pub fn keys_for_id(&self, id: &str) -> &[ConnKey] {
    self.registry.keys_for_id(id)
  }

  pub fn members(&self, channel: &str) -> &[ConnKey] {
    self.registry.members(channel)
  }

  pub fn iter(&self) -> impl Iterator<Item = &Entry<Conn<H>>> {
    self.registry.iter()
  }

  /// Adds a connection to a channel, or takes it out; true if it changed.
  pub fn set_membership(&mut self, key: ConnKey, channel: &str, member: bool) -> bool {
    let changed = match member {
      true => self.registry.join(key, channel),
      false => self.registry.leave(key, channel),
    };
    if changed {
      self.route_changed(key);
    }
    changed
  }

  pub fn channels_of(&self, key: ConnKey) -> Vec<String> {
    self
      .registry
      .get(key)
      .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
      .unwrap_or_default()
  }

  // ---- removal -----------------------------------------------------------

  /// The one way out of the registry. A socket connection ended gracefully
  /// while the writer runs becomes *ending*: the writer flushes its queue,
  /// then [`HubCore::writer_events`] finishes it. Everything else is
  /// finished now. Events come after the entry is gone, `slow` before
  /// `disconnect`. Empty when `key` is not registered.
  pub fn remove(&mut self, key: ConnKey, removal: Removal, reason: Reason) -> Vec<Effect<H>> {
    let mut effects = Vec::new();
    let Some(entry) = self.registry.remove(key) else {
      return effects;
    };
    let Conn {
      handle, transport, ..
    } = entry.handle;
    let wire = transport.wire();
    let deferred = match (wire, &mut self.writer) {
      (Some(wire), Some(writer)) => {
        self.wires.remove(&wire);
        if removal == Removal::End {
          writer.end(wire);
          true
        } else {
          writer.remove(wire);
          false
        }
      }
      (Some(wire), None) => {
        self.wires.remove(&wire);
        false
      }
      (None, _) => false,
    };
    match (deferred, wire) {
      (true, Some(wire)) => {
        self.ending_keys.insert(key, wire);
        self.ending.insert(wire, Ending { key, handle });
      }
      _ => effects.push(Effect::Finish {
        handle,
        how: removal,
        socket: wire.is_some(),
      }),
    }
    if reason == Reason::Slow {
      self.stats.slow_disconnect();
    }
    self.bus_counts();
    if reason != Reason::Rollback && !self.orphaned {
      if reason == Reason::Slow {
        effects.push(Effect::Slow {
          id: entry.id.clone(),
        });
      }
      effects.push(Effect::Disconnect {
        id: entry.id,
        reason,
      });
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// The response is about to be destroyed: a registered connection is
  /// forgotten, an ending one released at once, without waiting for its
  /// queue ([`Removal::Destroyed`]). `key` is what the response carries,
  /// registered or not.
  pub fn forget(&mut self, key: ConnKey) -> Vec<Effect<H>> {
    self.going_away(key, Removal::Destroyed)
  }

  /// The response's `close` fired: as [`HubCore::forget`], and the response
  /// is ended ([`Removal::Closed`]).
  pub fn closed(&mut self, key: ConnKey) -> Vec<Effect<H>> {
    self.going_away(key, Removal::Closed)
  }

  fn going_away(&mut self, key: ConnKey, how: Removal) -> Vec<Effect<H>> {
    if self.registry.contains(key) {
      return self.remove(key, how, Reason::Closed);
    }
    let Some(wire) = self.ending_keys.get(&key).copied() else {
      return Vec::new();
    };
    if let Some(writer) = &mut self.writer {
      writer.remove(wire);
    }
    self.finish_ending(wire, how)
  }

  /// Ends every connection and refuses new ones; the writer stops once the
  /// last ending connection is done, then [`Effect::Closed`] follows.
  pub fn close(&mut self) -> Vec<Effect<H>> {
    self.closing = true;
    let mut effects = Vec::new();
    for key in self.registry.keys() {
      effects.extend(self.remove(key, Removal::End, Reason::Removed));
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// The JS hub was garbage-collected (no JS may run now): socket
  /// connections are ended through the writer, which flushes them first;
  /// stream connections stay until their `close` event. Events are no
  /// longer reported. The effects hold only `ReleaseHub`, if nothing is left.
  pub fn orphan(&mut self) -> Vec<Effect<H>> {
    self.orphaned = true;
    // Nobody is left to hear from it.
    self.bus = None;
    let socket_keys: Vec<ConnKey> = self.wires.values().copied().collect();
    let mut effects = Vec::new();
    for key in socket_keys {
      effects.extend(self.remove(key, Removal::End, Reason::Removed));
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  fn finish_ending(&mut self, wire: WireId, how: Removal) -> Vec<Effect<H>> {
    let mut effects = Vec::new();
    if let Some(ending) = self.ending.remove(&wire) {
      self.ending_keys.remove(&ending.key);
      effects.push(Effect::Finish {
        handle: ending.handle,
        how,
        socket: true,
      });
    }
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// After any removal: a closing hub with nothing left stops its writer
  /// (and reports `Closed` once it has); an orphaned one lets go of all.
  fn settle_lifecycle(&mut self, effects: &mut Vec<Effect<H>>) {
    if !self.registry.is_empty() || !self.ending.is_empty() {
      return;
    }
    if self.closing || self.orphaned {
      if let Some(writer) = &mut self.writer {
        writer.shutdown();
      }
    }
    if self.writer.as_ref().is_some_and(Writers::stopped) {
      self.retire_writer();
    }
    if self.closing && self.writer.is_none() && !self.closed_reported {
      self.closed_reported = true;
      effects.push(Effect::Closed);
    }
    if self.orphaned && !self.released {
      self.released = true;
      effects.push(Effect::ReleaseHub);
    }
  }

  /// Drops a writer whose threads have all stopped, keeping its counts.
  fn retire_writer(&mut self) {
    if let Some(writer) = self.writer.take() {
      let done = writer.stats();
      self.stats.frames(
        Stats::read(&done.frames_sent),
        Stats::read(&done.bytes_sent),
      );
      self.stats.dropped(Stats::read(&done.frames_dropped));
    }
  }

  /// What the writer threads reported since last time, as effects.
  pub fn writer_events(&mut self) -> Vec<Effect<H>> {
    let events = match &mut self.writer {
      Some(writer) => writer.take_events(),
      None => return Vec::new(),
    };
    let mut effects = Vec::new();
    for event in events {
      match event {
        Event::Ended(wire) => effects.extend(self.finish_ending(wire, Removal::End)),
        Event::Dead(wire, why) => {
          if self.ending.contains_key(&wire) {
            effects.extend(self.finish_ending(wire, Removal::Destroy));
          } else if let Some(key) = self.wires.get(&wire).copied() {
            let reason = match why {
              DeadReason::Slow => Reason::Slow,
              DeadReason::WriteError | DeadReason::EndTimeout => Reason::Error,
            };
            effects.extend(self.remove(key, Removal::Destroy, reason));
          }
        }
        Event::Drain(wire) => {
          if let Some(key) = self.wires.get(&wire) {
            effects.push(Effect::Drain { key: *key });
          }
        }
        Event::Stopped => self.settle_lifecycle(&mut effects),
        Event::Died { wires, all } => effects.extend(self.writer_died(&wires, all)),
      }
    }
    effects
  }

  /// A writer thread panicked: the fds of its connections are closed and
  /// their queues gone. Each of them, registered or ending, is torn down;
  /// when no thread is left, later connections use the stream transport.
  fn writer_died(&mut self, wires: &[WireId], all: bool) -> Vec<Effect<H>> {
    if all {
      self.writer_died = true;
    }
    let mut effects = Vec::new();
    for wire in wires {
      if self.ending.contains_key(wire) {
        effects.extend(self.finish_ending(*wire, Removal::Destroy));
      } else if let Some(key) = self.wires.get(wire).copied() {
        effects.extend(self.remove(key, Removal::Destroy, Reason::Error));
      }
    }
    effects.push(Effect::WriterDied { all });
    self.settle_lifecycle(&mut effects);
    effects
  }

  /// Fault injection for tests: a writer thread panics.
  pub fn crash_writer(&self) -> bool {
    self.writer.as_ref().is_some_and(Writers::crash)
  }

  // ---- sending -----------------------------------------------------------

  /// Plans one frame's delivery to every connection (`keys` `None`) or to
  /// `keys`: the socket connections get it from the writer right away (one
  /// message, the frame shared), the stream ones are visited with their
  /// handle and congestion so the binding can write them, then report each
  /// [`Outcome`] to [`HubCore::settle`]. Returns how many socket
  /// connections it went to.
  pub fn deliver(
    &mut self,
    keys: Option<&[ConnKey]>,
    chunk: impl FnOnce() -> Arc<[u8]>,
    now: Instant,
    mut visit: impl FnMut(ConnKey, &H, bool),
  ) -> usize {
    let mut wires = Vec::new();
    match keys {
      Some(keys) => {
        for key in keys {
          let Some(entry) = self.registry.get_mut(*key) else {
            continue;
          };
          entry.last_sent = now;
          match &entry.handle.transport {
            Transport::Stream { congested } => visit(entry.key, &entry.handle.handle, *congested),
            Transport::Socket { wire, .. } => wires.push(*wire),
          }
        }
      }
      None => {
        // A broadcast reaches every socket connection with one message and
        // no list; only stream connections are walked, if there are any.
        if self.wires.len() < self.registry.len() {
          for entry in self.registry.iter() {
            if let Transport::Stream { congested } = &entry.handle.transport {
              visit(entry.key, &entry.handle.handle, *congested);
            }
          }
        }
      }
    }
    let socket_count = match keys {
      Some(_) => wires.len(),
      None => self.wires.len(),
    };
    if socket_count > 0 {
      if let Some(writer) = &self.writer {
        match keys {
          Some(_) => writer.send(wires, chunk()),
          None => writer.broadcast(chunk()),
        }
      }
    }
    socket_count
  }

  /// Applies the stream writes' outcomes for a frame of `len` bytes:
  /// counts, congestion, and removal of the slow (`Destroy`, `slow`) and of
  /// those whose write failed (`End`, `error`). Returns how many were
  /// written, and the effects.
  pub fn settle(&mut self, outcomes: &[(ConnKey, Outcome)], len: usize) -> (usize, Vec<Effect<H>>) {
    let mut written = 0;
    let mut dropped = 0;
    let mut effects = Vec::new();
    for (key, outcome) in outcomes {
      let congested = match outcome {
        Outcome::Written { buffering } => {
          written += 1;
          *buffering
        }
        Outcome::Buffered => {
          written += 1;
          true
        }
        Outcome::Dropped => {
          dropped += 1;
          continue;
        }
        Outcome::Slow => {
          effects.extend(self.remove(*key, Removal::Destroy, Reason::Slow));
          continue;
        }
        Outcome::Failed => {
          effects.extend(self.remove(*key, Removal::End, Reason::Error));
          continue;
        }
      };
      if let Some(Transport::Stream { congested: flag }) =
        self.registry.get_mut(*key).map(|e| &mut e.handle.transport)
      {
        *flag = congested;
      }
    }
    self.stats.frames(written as u64, (written * len) as u64);
    self.stats.dropped(dropped);
    (written, effects)
  }

  /// The app's own `res.write` on a socket connection: `chunk` (one HTTP
  /// chunk, empty for none) goes after everything queued for it, and the
  /// answer follows Node's contract against `high_water_mark`.
  pub fn app_write(
    &self,
    key: ConnKey,
    chunk: Option<Arc<[u8]>>,
    high_water_mark: usize,
  ) -> AppWrite {
    let Some(Transport::Socket { wire, gauge }) =
      self.registry.get(key).map(|e| &e.handle.transport)
    else {
      return AppWrite::Gone;
    };
    let Some(writer) = &self.writer else {
      return AppWrite::Gone;
    };
    if let Some(chunk) = chunk {
      gauge.submitted.fetch_add(chunk.len(), Ordering::SeqCst);
      writer.write(*wire, chunk);
    }
    if gauge.backlog() < high_water_mark {
      return AppWrite::Accepted;
    }
    // SeqCst with the writer's side (see `ConnGauge`): either it sees the
    // flag, or this thread sees the backlog it emptied.
    gauge.want_drain.store(true, Ordering::SeqCst);
    if gauge.backlog() == 0 && gauge.want_drain.swap(false, Ordering::SeqCst) {
      return AppWrite::Accepted;
    }
    AppWrite::Full
  }

  // ---- history, replay, heartbeats ---------------------------------------

  /// Whether broadcasts to everyone are kept for replay.
  pub fn recording(&self) -> bool {
    self.history.capacity() > 0
  }

  /// The id a page can embed to subscribe from now on (`lastEventId`):
  /// with a bus, the last stream entry delivered live here (`None` before
  /// the bus first reached Redis); otherwise the history's position (`None`
  /// with history off, where nothing can be replayed).
  pub fn position(&self) -> Option<String> {
    if let Some(mark) = self.bus_mark() {
      return match mark {
        crate::bus::Mark::At(id) => Some(id.to_string()),
        crate::bus::Mark::Unknown => None,
      };
    }
    self.recording().then(|| self.history.position())
  }

  /// The id for the next recorded broadcast when the app gives none.
  pub fn next_event_id(&mut self) -> String {
    self.history.next_id()
  }

  /// Keeps a broadcast (as the HTTP chunk the writer sends) for replay.
  pub fn record(&mut self, id: &str, chunk: Arc<[u8]>) {
    self.history.record(id, chunk);
  }

  /// A broadcast to everyone went out: heartbeats wait for the next idle
  /// stretch.
  pub fn note_broadcast(&mut self, now: Instant) {
    self.last_broadcast = now;
  }

  /// What `key` missed since `last_event_id`, before any live event. A
  /// replay obeys the slow-client bound: past `maxBufferedBytes` (or with
  /// an id no longer in history) the client gets an `event: reset`
  /// instead. A socket connection gets the history's own chunks from the
  /// writer (shared, not copied) and `None` comes back; a stream
  /// connection's bytes (at most the bound) come back for the binding to
  /// write.
  pub fn replay(&mut self, key: ConnKey, last_event_id: &str) -> Option<Vec<u8>> {
    if self.history.capacity() == 0 {
      return None;
    }
    let wire = self.registry.get(key)?.handle.transport.wire();
    match self
      .history
      .since(last_event_id, self.writer_config.max_buffered_bytes)
    {
      Replay::Missed(events) if events.is_empty() => None,
      Replay::Missed(events) => {
        self.stats.replay();
        match (wire, &self.writer) {
          (Some(wire), Some(writer)) => {
            writer.send_frames(wire, events.iter().map(|e| e.chunk().clone()).collect());
            None
          }
          _ => Some(events.iter().flat_map(|e| e.frame()).copied().collect()),
        }
      }
      Replay::Reset => {
        self.stats.reset();
        Some(frame::reset_frame(self.history.newest_id()))
      }
    }
  }

  /// Connections nothing was sent to for `idle` (none while a broadcast to
  /// everyone went out within `idle`).
  pub fn idle(&self, now: Instant, idle: Duration) -> Vec<ConnKey> {
    if now.saturating_duration_since(self.last_broadcast) < idle {
      return Vec::new();
    }
    self
      .registry
      .iter()
      .filter(|e| now.saturating_duration_since(e.last_sent) >= idle)
      .map(|e| e.key)
      .collect()
  }

  /// Connections that have been registered for longer than `max_age`.
  pub fn older_than(&self, now: Instant, max_age: Duration) -> Vec<ConnKey> {
    self.registry.older_than(now, max_age)
  }

  // ---- statistics --------------------------------------------------------

  pub fn stats(&self) -> StatsSnapshot {
    let socket = self.wires.len();
    let read = |c: &std::sync::atomic::AtomicU64| Stats::read(c);
    // The hub's own counts (stream connections, replays, writers retired)
    // plus each running writer thread's.
    let writers = self.writer.as_ref().map(Writers::stats).unwrap_or_default();
    let both =
      |f: fn(&Stats) -> &std::sync::atomic::AtomicU64| read(f(&self.stats)) + read(f(&writers));
    StatsSnapshot {
      clients: self.registry.len(),
      stream_connections: self.registry.len() - socket,
      socket_connections: socket,
      frames_sent: both(|s| &s.frames_sent),
      bytes_sent: both(|s| &s.bytes_sent),
      frames_dropped: both(|s| &s.frames_dropped),
      channels: self.registry.channel_count(),
      replays: read(&self.stats.replays),
      resets: read(&self.stats.resets),
      slow_disconnects: read(&self.stats.slow_disconnects),
      queued_bytes: writers.queued_bytes.load(Ordering::Relaxed),
      writer_threads: self
        .writer
        .as_ref()
        .map_or(self.writer_threads, Writers::running),
      socket_connections_by_thread: self
        .writer
        .as_ref()
        .map(Writers::connections)
        .unwrap_or_default(),
      socket_capacity: match (self.mode, self.fd_budget) {
        (TransportMode::Stream, _) => Some(0),
        (_, usize::MAX) => None,
        (_, budget) => Some(budget),
      },
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::test_util::{collect_until, pair};
  use std::io::Read;
  use std::net::TcpStream;
  use std::os::fd::AsFd;

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
}
