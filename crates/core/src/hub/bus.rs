//! The hub's side of the Redis bus: its life ([`BusSlot`]), appends and the
//! local fallback, which connections a bus entry or a replay reaches, and
//! each connection's `Subscription` route kept in step with the registry.

use std::sync::Arc;

use std::time::Instant;

use super::dispatch::{payload, Count, Dispatch, Frame};
use super::options::{BusOptions, EventOptions};
use super::{Conn, CoreError, HubCore, Transport};
use crate::bus::entry::{BusFrame, Entry, EntryId, Route};
use crate::bus::link::Notice;
use crate::bus::{Bus, BusConfig, BusEvent, BusStatsSnapshot, Mark, ReplayRequest, ReplayTarget};
use crate::registry::ConnKey;

/// The most bytes one run of bus entries to stream connections holds
/// ([`HubCore::bus_frames`]).
pub const RUN_BYTES: usize = 64 << 10;

/// The bus's link as the JS thread was last told of it (the steps it
/// executed, in order): what `ready()` waits for and the hub reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusLink {
  /// No bus configured.
  #[default]
  Off,
  /// Started; Redis not reached yet.
  Connecting,
  Connected,
  /// Lost; the bus reconnects by itself.
  Disconnected,
  /// Its thread has stopped.
  Closed,
}

impl BusLink {
  /// As the hub's `bus` event and its debug log spell it.
  pub fn as_str(self) -> &'static str {
    match self {
      BusLink::Off => "off",
      BusLink::Connecting => "connecting",
      BusLink::Connected => "connected",
      BusLink::Disconnected => "disconnected",
      BusLink::Closed => "closed",
    }
  }
}

/// The link as last seen, and the `ready()` requests waiting for it to
/// connect.
#[derive(Debug, Default)]
pub(super) struct LinkSeen {
  pub(super) link: BusLink,
  ready: Vec<u32>,
}

impl LinkSeen {
  /// The bus is gone with its JS hub: closed, and nobody waits.
  pub(super) fn closed(&mut self) {
    debug_assert!(self.ready.is_empty(), "a ready() keeps its hub alive");
    self.ready.clear();
    if self.link != BusLink::Off {
      self.link = BusLink::Closed;
    }
  }
}

/// The hub's Redis bus, through its life. `Stopped { told }` keeps its
/// last figures; `told` when `close()` stopped it (appends are then
/// refused), not when its thread ended by itself.
#[derive(Default)]
pub(super) enum BusSlot {
  /// No bus configured.
  #[default]
  None,
  /// Running.
  Running(Bus),
  /// `close()` told it to stop: it writes what was appended before, then
  /// reports `Stopped`.
  Stopping(Bus),
  /// Its thread has ended.
  Stopped { last: BusStatsSnapshot, told: bool },
}

impl BusSlot {
  /// The bus while its thread runs (told to stop or not).
  pub(super) fn running(&self) -> Option<&Bus> {
    match self {
      BusSlot::Running(bus) | BusSlot::Stopping(bus) => Some(bus),
      BusSlot::None | BusSlot::Stopped { .. } => None,
    }
  }

  fn running_mut(&mut self) -> Option<&mut Bus> {
    match self {
      BusSlot::Running(bus) | BusSlot::Stopping(bus) => Some(bus),
      BusSlot::None | BusSlot::Stopped { .. } => None,
    }
  }

  /// Whether `close()` told it to stop.
  fn told_to_stop(&self) -> bool {
    matches!(
      self,
      BusSlot::Stopping(_) | BusSlot::Stopped { told: true, .. }
    )
  }
}

/// A request to the bus, numbered when its answer may come later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAsk {
  /// Every live instance's client count (`globalClientCount()`); fails
  /// without a running bus.
  Count(u32),
  /// Answered once everything this instance appended was read back and
  /// delivered (at once without a running bus).
  Flush(u32),
  /// `ready()`: answered at once without a bus or while it is connected,
  /// else when it connects (again); refused (`ERR_SSE_CLOSED`) once it has
  /// stopped, or when it stops before it connects.
  Ready(u32),
  /// The replay of a connection registered held for one (from its
  /// `Last-Event-ID`, or the mark its headers were flushed at), with its
  /// client id and channels as they are now: the binding asks on the tick
  /// after registering, so channels the route joins at once count.
  /// Answered at once: 1 when it was asked for, 0 when nothing waited.
  Replay(ConnKey),
}

/// One event of the bus thread, decided ([`HubCore::bus_step`]): what the
/// binding executes.
#[derive(Debug)]
pub enum BusStep {
  /// Redis connected, or was lost (with why): the hub's `bus` event; on
  /// connecting, the `ready()` requests to resolve.
  Link { notice: Notice, ready: Vec<u32> },
  /// Live entries, or a replay, for stream-transport connections: run each
  /// dispatch in order.
  Deliver(Vec<Dispatch>),
  /// The answer to a bus request (`globalClientCount()`, a flush).
  Answer {
    request: u32,
    result: Result<f64, CoreError>,
  },
  /// The thread has stopped and was let go: the `ready()` requests still
  /// waiting are refused (`ERR_SSE_CLOSED`), and nothing more is answered.
  Stopped { ready: Vec<u32> },
}

impl<H> HubCore<H> {
  /// Starts the bus thread; `notify` is called from it when events wait in
  /// [`HubCore::bus_events`].
  pub fn start_bus(
    &mut self,
    config: BusConfig,
    notify: Arc<dyn Fn() + Send + Sync>,
  ) -> std::io::Result<()> {
    let bus = Bus::start(config, notify)?;
    if let Some(writer) = &self.writer {
      bus.set_ports(writer.ports());
    }
    self.bus = BusSlot::Running(bus);
    self.link.link = BusLink::Connecting;
    self.bus_counts();
    // Connections registered before the bus: their subscriptions (a
    // socket connection's on its writer thread) learn what entries route
    // them by.
    for key in self.registry.keys() {
      self.route_changed(key);
    }
    Ok(())
  }

  /// Asks something of the bus (see [`BusAsk`]): the answer now, or
  /// `None` when it comes later, as a [`BusStep`] naming the request.
  pub fn ask_bus(&mut self, ask: BusAsk) -> Option<Result<f64, CoreError>> {
    let closed = || CoreError::Bus(crate::bus::BusError::Closed.to_string());
    match ask {
      BusAsk::Replay(key) => Some(Ok(f64::from(u8::from(self.request_replay(key))))),
      BusAsk::Ready(request) => match self.link.link {
        BusLink::Off | BusLink::Connected => Some(Ok(0.0)),
        BusLink::Closed => Some(Err(CoreError::Closed)),
        BusLink::Connecting | BusLink::Disconnected => {
          self.link.ready.push(request);
          None
        }
      },
      BusAsk::Count(request) => match self.bus.running() {
        Some(bus) => {
          bus.count(request);
          None
        }
        None => Some(Err(closed())),
      },
      // Nothing to wait for without a running bus.
      BusAsk::Flush(request) => match self.bus.running() {
        Some(bus) => {
          bus.flush(request);
          None
        }
        None => Some(Ok(0.0)),
      },
    }
  }

  /// What the bus thread reported since last time, in order: each is
  /// then decided by [`HubCore::bus_step`] when its turn comes, after the
  /// JS of the ones before it ran.
  pub fn bus_events(&mut self) -> Vec<BusEvent> {
    self.bus.running().map(Bus::take_events).unwrap_or_default()
  }

  /// Decides one event of the bus thread (see [`BusStep`]). Live entries
  /// are planned here, all runs of one event at once: a write's JS may
  /// change who is connected, and an entry is never judged twice; a
  /// connection a write removed is skipped by the later runs.
  pub fn bus_step(&mut self, event: BusEvent, now: Instant) -> BusStep {
    match event {
      BusEvent::Link(notice) => {
        let ready = match notice {
          Notice::Connected => {
            self.link.link = BusLink::Connected;
            std::mem::take(&mut self.link.ready)
          }
          Notice::Disconnected(_) => {
            self.link.link = BusLink::Disconnected;
            Vec::new()
          }
        };
        BusStep::Link { notice, ready }
      }
      BusEvent::Frames(frames) => BusStep::Deliver(self.bus_frames(&frames, now)),
      BusEvent::Replayed {
        key,
        frames,
        cursor,
      } => BusStep::Deliver(
        self
          .replayed(key, &frames, cursor, now)
          .into_iter()
          .collect(),
      ),
      BusEvent::Reply { request, result } => BusStep::Answer {
        request,
        result: result.map_err(|e| CoreError::Bus(e.to_string())),
      },
      BusEvent::Stopped => {
        self.bus_stopped();
        self.link.link = BusLink::Closed;
        BusStep::Stopped {
          ready: std::mem::take(&mut self.link.ready),
        }
      }
    }
  }

  /// Tells the bus to stop once what was appended before is written (the
  /// binding calls it after `close()`'s effects, so a `disconnect`
  /// listener's broadcast still reaches the other instances).
  pub(crate) fn stop_bus(&mut self) {
    if let BusSlot::Running(bus) = std::mem::take(&mut self.bus) {
      bus.stop();
      self.bus = BusSlot::Stopping(bus);
    }
  }

  /// Whether this hub was configured with a bus, running or stopped: its
  /// broadcasts are meant for every instance, so once the bus is gone they
  /// are refused rather than quietly kept local.
  pub(crate) fn has_bus(&self) -> bool {
    self.bus.running().is_some() || self.bus.told_to_stop()
  }

  /// A stream entry for a broadcast, publish or `sendToClient`: its
  /// fields checked as a bus event's (no `id`).
  pub(super) fn bus_entry(
    &self,
    route: Route,
    data: &str,
    options: &EventOptions<'_>,
  ) -> Result<Entry, CoreError> {
    let fields = options.bus_fields()?;
    Ok(Entry {
      route,
      event: fields.event.map(str::to_string),
      retry: fields.retry,
      data: data.to_string(),
      origin: None,
    })
  }

  /// Hands `entry` to the bus, its value `queued` (every instance delivers
  /// it once read back). While Redis is away it is delivered here at once,
  /// without an id, through the same replay gates as the bus's entries, and
  /// counted in `localFallbacks`; its value is then how many connections it
  /// reached. Refused once `close()` told the bus to stop.
  pub(super) fn append(
    &mut self,
    entry: Entry,
    queued: u32,
    now: Instant,
  ) -> Result<Dispatch, CoreError> {
    if self.bus.told_to_stop() {
      return Err(CoreError::BusClosed);
    }
    if let Some(bus) = self.bus.running_mut() {
      if bus.accepts_appends() {
        bus.append(entry);
        return Ok(self.dispatch_nothing(queued));
      }
      bus.note_local_fallback();
    }
    let frame = BusFrame::new(None, &entry);
    let keys = self.deliver_locally(frame.clone());
    let sockets = self.socket_targets(&frame.route) as usize;
    let mut dispatch = self.fan_out(
      Some(&keys),
      Frame::from_chunk(frame.chunk),
      Count::Written,
      now,
    );
    dispatch.sockets = sockets;
    Ok(dispatch)
  }

  /// An event delivered here only, without Redis (it is away): through the
  /// same gates as the bus's entries, so a connection waiting for its
  /// replay gets nothing before it. The writer threads take the socket
  /// connections; the stream-transport recipients are returned.
  fn deliver_locally(&mut self, frame: BusFrame) -> Vec<ConnKey> {
    if let Some(writer) = &self.writer {
      let frames: Arc<[BusFrame]> = Arc::from(vec![frame.clone()]);
      for port in writer.ports() {
        port.bus(frames.clone());
      }
    }
    self.bus_recipients(&frame)
  }

  /// Live bus entries read back: the writer threads serve the socket
  /// connections; the stream ones each entry's route and their gates admit
  /// come back to be written, consecutive entries for the same stream connections become one
  /// dispatch whose frame is their frames end to end (one `write` per
  /// connection per run, not per entry), a run at most [`RUN_BYTES`] (or
  /// an eighth of `maxBufferedBytes`, so the slow-client rule still judges
  /// small steps) unless one entry is more. Order is kept: a run never
  /// reaches past an entry for other connections.
  pub(crate) fn bus_frames(&mut self, frames: &[BusFrame], now: Instant) -> Vec<Dispatch> {
    let cap = RUN_BYTES
      .min(self.writer_config.max_buffered_bytes / 8)
      .max(1);
    let mut out = Vec::new();
    let mut run: Option<(Vec<ConnKey>, Vec<u8>, usize)> = None;
    for frame in frames {
      let keys = self.bus_recipients(frame);
      let body = payload(&frame.chunk);
      if let Some((run_keys, bytes, events)) = &mut run {
        if *run_keys == keys && bytes.len() + body.len() <= cap {
          bytes.extend_from_slice(body);
          *events += 1;
          continue;
        }
      }
      if let Some(done) = run.take() {
        out.extend(self.run_dispatch(done, now));
      }
      if !keys.is_empty() {
        run = Some((keys, body.to_vec(), 1));
      }
    }
    if let Some(done) = run.take() {
      out.extend(self.run_dispatch(done, now));
    }
    out
  }

  fn run_dispatch(
    &mut self,
    (keys, bytes, events): (Vec<ConnKey>, Vec<u8>, usize),
    now: Instant,
  ) -> Option<Dispatch> {
    if keys.is_empty() {
      return None;
    }
    let mut dispatch = self.fan_out(Some(&keys), Frame::new(bytes), Count::Written, now);
    dispatch.events = events;
    Some(dispatch)
  }

  /// How many socket connections an event on `route` targets here.
  pub(super) fn socket_targets(&self, route: &Route) -> u32 {
    let socket = |keys: &[ConnKey]| {
      keys
        .iter()
        .filter(|k| {
          self
            .registry
            .get(**k)
            .is_some_and(|e| matches!(e.handle.transport, Transport::Socket { .. }))
        })
        .count()
    };
    (match route {
      Route::All => self.sockets,
      Route::Channel(channel) => socket(self.registry.members(channel)),
      Route::Client(id) => socket(self.registry.keys_for_id(id)),
    }) as u32
  }

  /// How many connections an event on `route` targets here.
  pub(super) fn local_targets(&self, route: &Route) -> u32 {
    (match route {
      Route::All => self.registry.len(),
      Route::Channel(channel) => self.registry.members(channel).len(),
      Route::Client(id) => self.registry.keys_for_id(id).len(),
    }) as u32
  }

  /// The bus thread has stopped: it is let go.
  pub(crate) fn bus_stopped(&mut self) {
    self.bus = match std::mem::take(&mut self.bus) {
      BusSlot::Running(bus) => BusSlot::Stopped {
        last: bus.stats(),
        told: false,
      },
      BusSlot::Stopping(bus) => BusSlot::Stopped {
        last: bus.stats(),
        told: true,
      },
      other => other,
    };
  }

  /// The bus's figures (its last ones once stopped); `None` without a bus.
  pub(super) fn bus_stats(&self) -> Option<BusStatsSnapshot> {
    match &self.bus {
      BusSlot::None => None,
      BusSlot::Running(bus) | BusSlot::Stopping(bus) => Some(bus.stats()),
      BusSlot::Stopped { last, .. } => Some(last.clone()),
    }
  }

  /// Tells the bus how many connections this instance has (presence) and
  /// whether any are on the stream transport (live entries then also come
  /// to the JS thread).
  pub(super) fn bus_counts(&self) {
    if let Some(bus) = self.bus.running() {
      let total = self.registry.len();
      bus.set_counts(total, total.saturating_sub(self.sockets));
    }
  }

  /// Gives the writer threads' ports to the bus (after the writer starts).
  pub(super) fn bus_ports(&self) {
    if let (Some(bus), Some(writer)) = (self.bus.running(), &self.writer) {
      bus.set_ports(writer.ports());
    }
  }

  /// A connection's client id and channels, for its [`Subscription`]'s
  /// routing of bus entries (a socket connection's is on its writer
  /// thread). Called whenever either changes, and for every connection
  /// when the bus starts: without a bus nothing routes by them.
  ///
  /// [`Subscription`]: crate::bus::subscription::Subscription
  pub(super) fn route_changed(&mut self, key: ConnKey) {
    if self.bus.running().is_none() {
      return;
    }
    let Some(entry) = self.registry.get_mut(key) else {
      return;
    };
    let (client, channels) = (entry.id.clone(), entry.channels.clone());
    match (entry.handle.transport.shard(), &self.writer) {
      (None, _) => entry.handle.subscription.set_route(client, channels),
      (Some(shard), Some(writer)) => writer.route(shard, key, client, channels),
      (Some(_), None) => {}
    }
  }

  /// Where live delivery is now (for a response whose headers go out);
  /// `None` without a bus.
  pub fn bus_mark(&self) -> Option<Mark> {
    self.bus.running().map(Bus::mark)
  }

  /// Asks the bus for the replay of `key`, registered held, with its client
  /// id and channels as they are now. False without a bus, or when `key`
  /// is not waiting for one.
  fn request_replay(&mut self, key: ConnKey) -> bool {
    let Some(bus) = self.bus.running() else {
      return false;
    };
    let Some(entry) = self.registry.get_mut(key) else {
      return false;
    };
    let Some(from) = entry.handle.replay_from.take() else {
      return false;
    };
    let target = match entry.handle.transport {
      Transport::Socket { shard, .. } => {
        match self.writer.as_ref().and_then(|w| w.port_of(shard)) {
          Some(port) => ReplayTarget::Socket { port, wire: key },
          None => return false,
        }
      }
      Transport::Stream { .. } => ReplayTarget::Stream { key },
    };
    bus.replay(ReplayRequest {
      from,
      client: entry.id.clone(),
      channels: entry.channels.clone(),
      target,
    });
    true
  }

  /// The stream-transport connections a live bus entry goes to: among its
  /// route's (the registry's index), those whose subscription takes it.
  /// (The writer threads serve the socket connections themselves.)
  pub(super) fn bus_recipients(&mut self, frame: &BusFrame) -> Vec<ConnKey> {
    let candidates: Vec<ConnKey> = match &frame.route {
      Route::All => self.registry.keys(),
      Route::Channel(channel) => self.registry.members(channel).to_vec(),
      Route::Client(id) => self.registry.keys_for_id(id).to_vec(),
    };
    let max_bytes = self.writer_config.max_buffered_bytes;
    candidates
      .into_iter()
      .filter(|key| {
        self.registry.get_mut(*key).is_some_and(|entry| {
          let conn: &mut Conn<H> = &mut entry.handle;
          matches!(conn.transport, Transport::Stream { .. })
            && conn.subscription.takes(frame, max_bytes)
        })
      })
      .collect()
  }

  /// A stream connection's replay arrived: its gate opens, and its frames
  /// then what came locally while it was held are written to it, as one
  /// write. `None` when it is gone or there is nothing to write.
  pub(crate) fn replayed(
    &mut self,
    key: ConnKey,
    frames: &[Arc<[u8]>],
    cursor: Option<EntryId>,
    now: Instant,
  ) -> Option<Dispatch> {
    let entry = self.registry.get_mut(key)?;
    let held = entry.handle.subscription.release(cursor);
    if frames.is_empty() && held.is_empty() {
      return None;
    }
    let mut body = Vec::new();
    for chunk in frames.iter().chain(held.iter()) {
      body.extend_from_slice(payload(chunk));
    }
    Some(self.send_one(key, Frame::new(body), now))
  }

  /// `configure({ redis })`'s options, checked against this hub (a bus is
  /// configured once), without starting anything.
  pub fn check_bus(&self, options: &BusOptions<'_>) -> Result<BusConfig, CoreError> {
    if self.has_bus() {
      return Err(CoreError::BusRunning);
    }
    options.config(self.writer_config.max_buffered_bytes)
  }
}
