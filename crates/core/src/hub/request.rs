//! The hub's requests: each public call the binding makes names what it
//! wants as one value (a send, a way out, a change to a connection, a step
//! of the hub's end) and gets back what to execute. The decisions behind
//! each request live in the files by concern (`send`, `lifecycle`,
//! `register`, `admission`); this file only routes a request to them, so
//! the surface the binding sees stays a handful of calls.

use std::time::{Duration, Instant};

use super::bus::BusLink;
use super::dispatch::Frame;
use super::options::EventOptions;
use super::send::{Broadcast, Planned};
use super::{CoreError, Effect, HubCore, Reason, Removal, StreamReason, Transport, TransportMode};
use crate::registry::ConnKey;

/// One sending call. Every variant but [`Outgoing::ToResponse`] and
/// [`Outgoing::CommentToResponse`] goes to registered connections.
#[derive(Debug)]
pub enum Outgoing<'a> {
  /// `broadcast` or `publish` (see [`Broadcast`]).
  Broadcast(Broadcast<'a>),
  /// A filtered broadcast's frame, to the keys its filter chose.
  Chosen { frame: Frame, keys: &'a [ConnKey] },
  /// `sendToClient`: to every connection under `id` (with a bus, through
  /// the stream).
  ToClient {
    id: &'a str,
    data: &'a str,
    options: EventOptions<'a>,
  },
  /// A ready frame to one registered connection.
  ToConnection { key: ConnKey, frame: Frame },
  /// The broadcast of `broadcastAndClose`: local and without an id when a
  /// bus runs, an ordinary broadcast otherwise.
  Final {
    data: &'a str,
    options: EventOptions<'a>,
  },
  /// `send(res, …)` to a response that may not be registered: the checked
  /// frame comes back as [`Planned::Write`].
  ToResponse {
    data: &'a str,
    options: EventOptions<'a>,
  },
  /// A comment to one response, registered or not ([`Planned::Write`]).
  CommentToResponse { text: &'a str },
  /// A comment to the connections under `id`, or to every connection.
  Comment { id: Option<&'a str>, text: &'a str },
  /// `: heartbeat` to every connection nothing was sent to for `idle`.
  Heartbeat { idle: Duration },
  /// `retry: <ms>` to every connection, each drawn from `ms..=ms + jitter`.
  RetryHint { ms: u32, jitter: u32 },
}

/// A way out of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
  /// The app (or the hub's own rules) removes `key`: `removal` says how
  /// its response ends, `reason` what `disconnect` reports.
  Remove {
    key: ConnKey,
    removal: Removal,
    reason: Reason,
  },
  /// The response is about to be destroyed: registered, it is forgotten;
  /// ending, it is released at once, without waiting for its queue.
  Destroying(ConnKey),
  /// The response's `close` fired: as `Destroying`, and it is ended.
  Closed(ConnKey),
}

/// A step of the hub's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
  /// `drain()`: new connections are refused from now on; the ones here
  /// stay until `close()`.
  Drain,
  /// `close()`: every connection is ended and new ones refused; the writer
  /// stops once the last ending connection is done, then
  /// [`Effect::Closed`] follows.
  Close,
  /// After `close()`'s effects ran: the bus stops once what was appended
  /// before is written, so what a `disconnect` listener broadcast still
  /// reaches the other instances.
  StopBus,
  /// The JS hub was garbage-collected (no JS may run now): socket
  /// connections are ended through the writer, stream ones stay until
  /// their `close`; only [`Effect::Closed`] (when a `close()` was pending
  /// and the writer has stopped) and [`Effect::ReleaseHub`] are reported.
  Orphan,
}

/// A change to one registered connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
  /// Registered again under `id` (its own or another): its age starts over.
  Rename(&'a str),
  /// Joins a channel.
  Join(&'a str),
  /// Leaves a channel.
  Part(&'a str),
}

/// Where one connection (by the key its response carries) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
  /// Registered, on the socket writer.
  Socket,
  /// Registered, on the stream transport, for this reason.
  Stream(StreamReason),
  /// Removed gracefully while its writer still flushes: over for the app
  /// (no re-registration, no more sends).
  Ending,
  /// Neither.
  Gone,
}

/// What the binding asks of the hub before it reads a request: the
/// settings and states that decide which of a connection's details matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubState {
  /// `close()` or `drain()` was called (or the JS hub is gone): new
  /// connections are refused.
  pub closing: bool,
  /// `configure({ transport })` as it stands.
  pub transport: TransportMode,
  /// A new connection can be replayed what it missed (history on, or a bus
  /// configured): only then is its `Last-Event-ID` read.
  pub replayable: bool,
  /// `maxClientsPerKey` is on: only then is a request's key computed.
  pub keyed: bool,
  /// `maxClients` or `maxClientsPerKey` is on: only then does
  /// `initResponse` reserve a place.
  pub limited: bool,
  /// Why a new connection could not be handed to the socket writer now,
  /// whatever its socket (`None`: it could).
  pub socket_refusal: Option<StreamReason>,
  /// The socket writer runs and takes connections.
  pub writer: bool,
  /// The bus's link as the JS thread was last told of it.
  pub bus: BusLink,
}

impl<H> HubCore<H> {
  /// Decides one send: what to write where, or (a filtered broadcast) the
  /// candidates the binding's filter picks from first.
  pub fn send(&mut self, outgoing: Outgoing<'_>, now: Instant) -> Result<Planned, CoreError> {
    Ok(match outgoing {
      Outgoing::Broadcast(request) => return self.broadcast(request, now),
      Outgoing::Chosen { frame, keys } => Planned::Ready(self.broadcast_to(frame, keys, now)),
      Outgoing::ToClient { id, data, options } => {
        Planned::Ready(self.send_to(id, data, &options, now)?)
      }
      Outgoing::ToConnection { key, frame } => Planned::Ready(self.send_one(key, frame, now)),
      Outgoing::Final { data, options } => {
        Planned::Ready(self.broadcast_final(data, &options, now)?)
      }
      Outgoing::ToResponse { data, options } => Planned::Write(self.event(data, &options)?),
      Outgoing::CommentToResponse { text } => Planned::Write(Frame::comment(text)),
      Outgoing::Comment { id, text } => Planned::Ready(self.comment(id, text, now)),
      Outgoing::Heartbeat { idle } => Planned::Ready(self.heartbeat(idle, now)),
      Outgoing::RetryHint { ms, jitter } => Planned::Several(self.retry_hint(ms, jitter, now)),
    })
  }

  /// The one way out of the registry (see [`Leave`]). A socket connection
  /// ended gracefully while the writer runs becomes ending: the writer
  /// flushes its queue, then [`HubCore::writer_events`] finishes it.
  /// Events come after the entry is gone, `slow` before `disconnect`.
  /// Empty when the key is neither registered nor ending.
  pub fn leave(&mut self, leave: Leave) -> Vec<Effect<H>> {
    match leave {
      Leave::Remove {
        key,
        removal,
        reason,
      } => self.remove(key, removal, reason),
      Leave::Destroying(key) => self.going_away(key, Removal::Destroyed),
      Leave::Closed(key) => self.going_away(key, Removal::Closed),
    }
  }

  /// One step of the hub's end (see [`Shutdown`]).
  pub fn shutdown(&mut self, step: Shutdown) -> Vec<Effect<H>> {
    match step {
      Shutdown::Drain => {
        self.drain();
        Vec::new()
      }
      Shutdown::Close => self.close(),
      Shutdown::StopBus => {
        self.stop_bus();
        Vec::new()
      }
      Shutdown::Orphan => self.orphan(),
    }
  }

  /// Changes one registered connection; true if anything changed (a
  /// rename: if it was registered under another id).
  pub fn change(&mut self, key: ConnKey, change: Change<'_>, now: Instant) -> bool {
    match change {
      Change::Rename(id) => self.reregister(key, id, now),
      Change::Join(channel) => self.set_membership(key, channel, true),
      Change::Part(channel) => self.set_membership(key, channel, false),
    }
  }

  /// Where the connection `key` is.
  pub fn placement(&self, key: ConnKey) -> Placement {
    if let Some(entry) = self.registry.get(key) {
      return match entry.handle.transport {
        Transport::Stream { reason, .. } => Placement::Stream(reason),
        Transport::Socket { .. } => Placement::Socket,
      };
    }
    match self.is_ending(key) {
      true => Placement::Ending,
      false => Placement::Gone,
    }
  }

  /// The settings and states a request's reading depends on (see
  /// [`HubState`]).
  pub fn state(&self) -> HubState {
    HubState {
      closing: self.is_closing(),
      transport: self.mode,
      replayable: self.replayable(),
      keyed: self.keyed(),
      limited: self.limited(),
      socket_refusal: self.socket_refusal(),
      writer: self.has_writer(),
      bus: self.link.link,
    }
  }
}
