//! Registration: which transport a new connection gets, its replay gate
//! with a bus, and the registry's queries.

use std::sync::Arc;
use std::time::Instant;

use super::{
  Admitted, Conn, HubCore, Lifecycle, SocketOffer, StreamReason, Transport, TransportMode,
};
use crate::bus::subscription::Subscription;
use crate::bus::{Admission, Bus, Mark, ReplayFrom};
use crate::registry::{ConnKey, Registry};
use crate::shards::{ShardId, Writers};
use crate::writer::{ConnGauge, SocketFd};

impl<H> HubCore<H> {
  /// Whether a new connection may be handed to the socket writer.
  #[cfg(test)]
  pub(crate) fn socket_slot_free(&self) -> bool {
    self.socket_refusal().is_none()
  }

  /// Why a new connection could not be handed to the socket writer now,
  /// whatever its socket (`None`: it could).
  pub(crate) fn socket_refusal(&self) -> Option<StreamReason> {
    if self.mode == TransportMode::Stream {
      Some(StreamReason::Configured)
    } else if self.writer_died || self.lifecycle != Lifecycle::Open {
      // A closing hub refuses registrations before this is asked; its
      // writer is stopping either way.
      Some(StreamReason::WriterDown)
    } else if self.sockets + self.ending.len() >= self.fd_budget {
      Some(StreamReason::Capacity)
    } else {
      None
    }
  }

  /// Whether the writer runs and takes connections.
  pub(crate) fn has_writer(&self) -> bool {
    self.writer.as_ref().is_some_and(Writers::alive)
  }

  /// Hands the connections registered since the last call to the writer
  /// threads, which hold them so a burst of registrations wakes each thread
  /// once (the binding calls this at the end of a JS turn with
  /// registrations; any other command to a thread hands them over first).
  pub fn flush_writers(&self) {
    if let Some(writer) = &self.writer {
      writer.flush();
    }
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
  /// uses the stream transport and the duplicate is closed. Without one,
  /// it counts as a connection with no socket.
  #[cfg(test)]
  pub(crate) fn register(
    &mut self,
    id: &str,
    handle: H,
    socket: Option<crate::writer::SocketFd>,
    now: Instant,
  ) -> (ConnKey, Option<ConnKey>) {
    let offer = socket.ok_or(StreamReason::NoSocket);
    self.register_with(id, handle, offer, now, None, None, Admitted::Free)
  }

  /// [`HubCore::register`], on a hub with a bus from where the client
  /// stands: after its `Last-Event-ID`, or after `mark` (where live delivery
  /// was when its headers were flushed). If entries were delivered since,
  /// its replay gate is held from the first moment, on either transport, and
  /// [`HubCore::request_replay`] then replays them before any live entry.
  /// The decision and the registration happen under live delivery's lock
  /// ([`crate::bus::DeliveryLock::admit`]): no entry falls between them.
  /// `admitted` is its place, as [`HubCore::admission`] decided; `socket`
  /// its fd for the writer, or why it has none.
  #[allow(clippy::too_many_arguments)]
  pub fn register_with(
    &mut self,
    id: &str,
    handle: H,
    socket: SocketOffer,
    now: Instant,
    last_event_id: Option<&str>,
    mark: Option<Mark>,
    admitted: Admitted,
  ) -> (ConnKey, Option<ConnKey>) {
    let client_key = self.take_place(admitted);
    match self.bus.running().map(Bus::delivery) {
      Some(lock) => lock.admit(last_event_id, mark, |admission| {
        let replay_from = match admission {
          Admission::Live => None,
          Admission::Held(from) => Some(from.clone()),
        };
        self.insert(id, handle, socket, now, replay_from, client_key)
      }),
      None => self.insert(id, handle, socket, now, None, client_key),
    }
  }

  fn insert(
    &mut self,
    id: &str,
    handle: H,
    socket: SocketOffer,
    now: Instant,
    replay_from: Option<ReplayFrom>,
    client_key: Option<Arc<str>>,
  ) -> (ConnKey, Option<ConnKey>) {
    let hold = replay_from.is_some();
    let (transport, socket) = match self.place(socket) {
      Ok((fd, shard)) => {
        let gauge = Arc::new(ConnGauge::default());
        let transport = Transport::Socket {
          gauge: gauge.clone(),
          shard,
        };
        (transport, Some((fd, gauge, shard)))
      }
      Err(reason) => {
        self.stream_fallbacks.count(reason);
        let transport = Transport::Stream {
          congested: false,
          reason,
        };
        (transport, None)
      }
    };
    let conn = Conn {
      handle,
      transport,
      subscription: Subscription::new(hold),
      replay_from,
      client_key,
    };
    let key = self.registry.insert(id, conn, now);
    // The writer knows the connection by the registry's own key.
    let wire = socket.map(|(fd, gauge, shard)| {
      self.sockets += 1;
      if let Some(writer) = &mut self.writer {
        writer.add_to(shard, key, fd, gauge, hold);
      }
      key
    });
    self.route_changed(key);
    self.bus_counts();
    (key, wire)
  }

  /// Where `offer` goes: to the writer, or to the stream and why. The
  /// transport configured outranks whatever the response was (it would be
  /// on the stream anyway); a dropped duplicate closes only itself.
  fn place(&self, offer: SocketOffer) -> Result<(SocketFd, ShardId), StreamReason> {
    match (self.socket_refusal(), offer) {
      (Some(StreamReason::Configured), _) => Err(StreamReason::Configured),
      (_, Err(reason)) => Err(reason),
      (Some(refusal), Ok(_)) => Err(refusal),
      (None, Ok(fd)) => match self.writer.as_ref().and_then(Writers::pick) {
        Some(shard) => Ok((fd, shard)),
        None => Err(StreamReason::WriterDown),
      },
    }
  }

  /// Whether `key` was removed gracefully and its writer still flushes: its
  /// response is over for the app (no re-registration, no more sends).
  pub(crate) fn is_ending(&self, key: ConnKey) -> bool {
    self.ending.contains_key(&key)
  }

  /// The registered connections, to read (what changes them are the
  /// hub's requests).
  pub fn connections(&self) -> &Registry<Conn<H>> {
    &self.registry
  }

  pub fn handle_mut(&mut self, key: ConnKey) -> Option<&mut H> {
    self.registry.get_mut(key).map(|e| &mut e.handle.handle)
  }

  /// Registers a registered connection again, under `id` (its own or
  /// another): its age starts over at `now`, as the original helper's fresh
  /// `{ res, meta, createdAt }` entry does, so `cleanupStaleClients` counts
  /// from the last registration.
  pub(crate) fn reregister(&mut self, key: ConnKey, id: &str, now: Instant) -> bool {
    let renamed = self.registry.rename(key, id);
    if let Some(entry) = self.registry.get_mut(key) {
      entry.connected_at = now;
    }
    self.route_changed(key);
    renamed
  }

  /// Adds a connection to a channel, or takes it out; true if it changed.
  pub(crate) fn set_membership(&mut self, key: ConnKey, channel: &str, member: bool) -> bool {
    let changed = match member {
      true => self.registry.join(key, channel),
      false => self.registry.leave(key, channel),
    };
    if changed {
      self.route_changed(key);
    }
    changed
  }
}
