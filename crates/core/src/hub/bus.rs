//! The hub's side of the Redis bus: which connections a bus entry or a
//! replay reaches, and keeping the writer threads' view of each socket
//! connection (client id, channels, replay gate) in step with the registry.

use std::sync::Arc;

use super::{Conn, HubCore, Transport};
use crate::bus::entry::{BusFrame, EntryId, Route};
use crate::bus::{Bus, BusConfig, BusEvent, BusStatsSnapshot, Mark, ReplayRequest, ReplayTarget};
use crate::registry::ConnKey;

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
    self.bus = Some(bus);
    self.bus_counts();
    // Socket connections registered before the bus: their writer threads
    // learn what entries route them by.
    for key in self.wires.values().copied().collect::<Vec<_>>() {
      self.route_changed(key);
    }
    Ok(())
  }

  pub fn bus(&self) -> Option<&Bus> {
    self.bus.as_ref()
  }

  pub fn bus_mut(&mut self) -> Option<&mut Bus> {
    self.bus.as_mut()
  }

  pub fn bus_events(&mut self) -> Vec<BusEvent> {
    self.bus.as_ref().map(Bus::take_events).unwrap_or_default()
  }

  /// Tells the bus to stop once what was appended before is written (the
  /// binding calls it after `close()`'s effects, so a `disconnect`
  /// listener's broadcast still reaches the other instances).
  pub fn stop_bus(&mut self) {
    if let Some(bus) = &self.bus {
      self.bus_stopping = true;
      bus.stop();
    }
  }

  /// Whether the bus was told to stop (appends are refused from then on).
  pub fn bus_stopping(&self) -> bool {
    self.bus_stopping
  }

  /// Whether this hub was configured with a bus, running or stopped: its
  /// broadcasts are meant for every instance, so once the bus is gone they
  /// are refused rather than quietly kept local.
  pub fn has_bus(&self) -> bool {
    self.bus.is_some() || self.bus_stopping
  }

  /// An event delivered here only, without Redis (it is away): through the
  /// same gates as the bus's entries, so a connection waiting for its
  /// replay gets nothing before it. The writer threads take the socket
  /// connections; the stream-transport recipients are returned.
  pub fn deliver_locally(&mut self, frame: BusFrame) -> Vec<ConnKey> {
    if let Some(writer) = &self.writer {
      let frames: Arc<[BusFrame]> = Arc::from(vec![frame.clone()]);
      for port in writer.ports() {
        port.bus(frames.clone());
      }
    }
    self.bus_recipients(&frame)
  }

  /// How many socket connections an event on `route` targets here.
  pub fn socket_targets(&self, route: &Route) -> u32 {
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
      Route::All => self.wires.len(),
      Route::Channel(channel) => socket(self.registry.members(channel)),
      Route::Client(id) => socket(self.registry.keys_for_id(id)),
    }) as u32
  }

  /// How many connections an event on `route` targets here.
  pub fn local_targets(&self, route: &Route) -> u32 {
    (match route {
      Route::All => self.registry.len(),
      Route::Channel(channel) => self.registry.members(channel).len(),
      Route::Client(id) => self.registry.keys_for_id(id).len(),
    }) as u32
  }

  /// The bus thread has stopped: it is let go.
  pub fn bus_stopped(&mut self) {
    if let Some(bus) = self.bus.take() {
      self.bus_final = Some(bus.stats());
    }
  }

  /// The bus's figures (its last ones once stopped); `None` without a bus.
  pub fn bus_stats(&self) -> Option<BusStatsSnapshot> {
    self
      .bus
      .as_ref()
      .map(Bus::stats)
      .or_else(|| self.bus_final.clone())
  }

  /// Tells the bus how many connections this instance has (presence) and
  /// whether any are on the stream transport (live entries then also come
  /// to the JS thread).
  pub(super) fn bus_counts(&self) {
    if let Some(bus) = &self.bus {
      let total = self.registry.len();
      bus.set_counts(total, total.saturating_sub(self.wires.len()));
    }
  }

  /// Gives the writer threads' ports to the bus (after the writer starts).
  pub(super) fn bus_ports(&self) {
    if let (Some(bus), Some(writer)) = (&self.bus, &self.writer) {
      bus.set_ports(writer.ports());
    }
  }

  /// A socket connection's client id and channels, for the writer's
  /// routing of bus entries. Called whenever either changes.
  pub(super) fn route_changed(&self, key: ConnKey) {
    if self.bus.is_none() {
      return;
    }
    let (Some(entry), Some(writer)) = (self.registry.get(key), &self.writer) else {
      return;
    };
    if let Transport::Socket { wire, .. } = entry.handle.transport {
      writer.route(wire, entry.id.clone(), entry.channels.clone());
    }
  }

  /// Where live delivery is now (for a response whose headers go out);
  /// `None` without a bus.
  pub fn bus_mark(&self) -> Option<Mark> {
    self.bus.as_ref().map(Bus::mark)
  }

  /// Asks the bus for the replay of `key`, registered held, with its client
  /// id and channels as they are now (the binding calls it on the tick
  /// after registering, so channels the route joins at once count). False
  /// without a bus, or when `key` is not waiting for one.
  pub fn request_replay(&mut self, key: ConnKey) -> bool {
    let Some(bus) = &self.bus else {
      return false;
    };
    let Some(entry) = self.registry.get_mut(key) else {
      return false;
    };
    let Some(from) = entry.handle.replay_from.take() else {
      return false;
    };
    let target = match entry.handle.transport {
      Transport::Socket { wire, .. } => match self.writer.as_ref().and_then(|w| w.port_of(wire)) {
        Some(port) => ReplayTarget::Socket { port, wire },
        None => return false,
      },
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

  /// The stream-transport connections a live bus entry goes to: its
  /// route's, whose gate admits it. (The writer threads serve the socket
  /// connections themselves.)
  pub fn bus_recipients(&mut self, frame: &BusFrame) -> Vec<ConnKey> {
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
          if !matches!(conn.transport, Transport::Stream { .. }) {
            return false;
          }
          if frame.id.is_none() && conn.gate.is_held() {
            // Local while Redis is away: it follows the replay.
            conn.held_local.hold(&frame.chunk, max_bytes);
            return false;
          }
          conn.gate.admits(frame.id)
        })
      })
      .collect()
  }

  /// A stream connection's replay arrived: its gate opens, and what came
  /// locally while it was held is returned, to be written after the
  /// replay's frames. `None` when it is gone.
  pub fn replayed(&mut self, key: ConnKey, cursor: Option<EntryId>) -> Option<Vec<Arc<[u8]>>> {
    let entry = self.registry.get_mut(key)?;
    entry.handle.gate.release(cursor);
    Some(entry.handle.held_local.take(crate::frame::reset_chunk))
  }
}
