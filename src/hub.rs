//! The `#[napi]` class `NativeHub` that the JS surface (`lib/hub.js`)
//! wraps. Each method converts its arguments, asks the core
//! (`sse_helper_core::hub::HubCore`) and executes what it answers; the
//! longer steps live in their own files (`registration`, `removal`, `deliver`,
//! `direct`, `entries`, `stats`, `setup`, `finalize`, `bus`, `waiting`). Every method catches
//! panics (`catch_unwind`) and throws them as JS errors, so none can abort
//! the process.

use std::time::Instant;

use napi::bindgen_prelude::*;
use napi::{Env, JsValue};
use napi_derive::napi;
use sse_helper_core::bus::Mark;
use sse_helper_core::hub::options;
use sse_helper_core::hub::{
  millis, AppWrite, Broadcast, BusLink, Change, Outgoing, Placement, Planned, Removal, Shutdown,
  Ticket, TransportMode,
};
use sse_helper_core::registry::ConnKey;

use crate::args::{self, EventOptions};
use crate::deliver;
use crate::direct::{filtered_keys, write_to_response};
use crate::effects::{self, execute, key_of};
use crate::error::{self, invalid_type};
use crate::js::{self, RawEnv};
use crate::registration::{self, check_response, RegisterStart};
use crate::removal::{self, remove, remove_all, remove_id};
use crate::socket::SocketInfo;
use crate::state::Shared;
use crate::stats::NativeStats;

/// A registry of SSE connections. The JS surface (`index.js`) wraps it;
/// its methods take already-serialized text.
#[napi(custom_finalize)]
pub struct NativeHub {
  pub(crate) state: Shared,
}

impl NativeHub {
  /// Asks the core for `outgoing` (given the time) and runs what it
  /// planned; how many connections it was written to. The core is borrowed
  /// only while it plans: no JS runs then.
  fn send_planned(&self, raw: RawEnv, outgoing: Outgoing<'_>) -> Result<u32> {
    let planned = self.plan(raw, outgoing)?;
    Ok(deliver::planned(&self.state, raw, planned))
  }

  /// The core's plan for `outgoing`, its refusal thrown.
  fn plan(&self, raw: RawEnv, outgoing: Outgoing<'_>) -> Result<Planned> {
    let planned = self.state.borrow_mut().core.send(outgoing, Instant::now());
    error::check(&self.state, raw, planned)
  }
}

#[napi]
impl NativeHub {
  /// `typeError` is the constructor bad-input errors are made with (pass the
  /// caller's `TypeError`). `hooks` holds `write`, `end`, `destroy`,
  /// `socketDestroy` (installed on responses handed to the socket writer)
  /// and `writeAfterEnd` (installed on Node responses the hub ended, those
  /// whose `write` is still `nodeWrite`, Node's own); without
  /// them the hub uses the stream transport only. `lifecycle(kind, a, b)`
  /// is called when a connection leaves (`'disconnect'`, id, reason) or is
  /// found slow (`'slow'`, id), when the writer thread died (`'error'`,
  /// code, message) and when `close()` has finished (`'closed'`).
  /// `capacityError` and `keyCapacityError` are the classes refusals are
  /// made with: `new capacityError(maxClients, retryAfter)` and
  /// `new keyCapacityError(maxClientsPerKey, retryAfter, key)`.
  #[napi(constructor, catch_unwind)]
  pub fn new(
    env: Env,
    type_error: Option<Function<'_>>,
    hooks: Option<Object<'_>>,
    lifecycle: Option<Function<'_>>,
    capacity_error: Option<Function<'_>>,
    key_capacity_error: Option<Function<'_>>,
  ) -> Result<Self> {
    let state = crate::setup::new_state(
      &env,
      type_error,
      hooks,
      lifecycle,
      capacity_error,
      key_capacity_error,
    )?;
    Ok(NativeHub { state })
  }

  /// Registers `res` under `id` (generated when absent) and returns the id.
  /// A response already registered is moved to `id` and its meta replaced.
  /// `socket` locates the connection's socket when the JS surface found it
  /// eligible for the socket writer (plain HTTP/1.x over TCP, Node's own
  /// `write`/`end`, nothing pending), or names why not (a
  /// `getStats().streamFallbacks` name); the fd is used only if it really
  /// is that socket. With history on, a `lastEventId` gets the events missed
  /// since, before any live event.
  ///
  /// All or nothing: if any step that runs JS fails (setting the key on
  /// `res`, attaching the `close` listener, installing the hooks), what was
  /// done is undone and the error thrown; no entry, listener, reference or
  /// duplicated fd is left behind.
  #[napi(catch_unwind)]
  pub fn register(
    &self,
    env: Env,
    res: Unknown,
    id: Option<String>,
    meta: Option<Unknown>,
    socket: Either<SocketInfo, String>,
    start: Option<RegisterStart>,
  ) -> Result<String> {
    let RegisterStart {
      last_event_id,
      mark,
      channels,
      ticket,
      client_key,
    } = start.unwrap_or_default();
    let start = registration::Start {
      last_event_id: last_event_id.as_deref(),
      mark: mark.as_deref().and_then(Mark::parse),
      channels: channels.as_deref().unwrap_or_default(),
      ticket: ticket.and_then(Ticket::from_f64),
      client_key: client_key.as_deref(),
    };
    let meta = meta.map(|m| m.raw());
    registration::register(&self.state, &env, res.raw(), id, meta, socket, start)
  }

  /// Throws `ERR_SSE_CLOSED` once `close()` or `drain()` was called; else
  /// whether `res`, when given, is registered with this hub (what
  /// `addClient` asks next, in the same call).
  #[napi(catch_unwind)]
  pub fn check_open(&self, env: Env, res: Option<Unknown>) -> Result<bool> {
    let raw = env.raw();
    let open = match self.state.borrow().core.state().closing {
      true => Err(sse_helper_core::hub::CoreError::Closed),
      false => Ok(()),
    };
    error::check(&self.state, raw, open)?;
    Ok(res.is_some_and(|res| key_of(&self.state, raw, res.raw()).is_some()))
  }

  /// Throws `SseCapacityError` (`maxClients`) or `SseKeyCapacityError`
  /// (`maxClientsPerKey`, under `key`) when `res` is not registered and
  /// would pass a limit; a response holding `ticket` (its reservation) has
  /// its place. Nothing is taken: `register` does that.
  #[napi(catch_unwind)]
  pub fn check_capacity(
    &self,
    env: Env,
    res: Unknown,
    key: Option<String>,
    ticket: Option<f64>,
  ) -> Result<()> {
    let raw = env.raw();
    let ticket = ticket.and_then(Ticket::from_f64);
    let refused = self
      .state
      .borrow()
      .core
      .admission(ticket, key.as_deref())
      .map(|_| ());
    // `res` is looked up only when the hub is full, as before.
    let admitted = match refused {
      Err(_) if key_of(&self.state, raw, res.raw()).is_some() => Ok(()),
      other => other,
    };
    if let Err(error) = &admitted {
      self.state.borrow_mut().core.refused(error);
    }
    error::check(&self.state, raw, admitted)
  }

  /// `initResponse`: reserves a place for `res` (not registered) under
  /// `key`, until `register` takes it or `release` gives it back; throws
  /// as `checkCapacity` does when a limit is reached. `null` when nothing
  /// is reserved: no limit is on, `res` is registered, or the hub is
  /// closing.
  #[napi(catch_unwind)]
  pub fn reserve(&self, env: Env, res: Unknown, key: Option<String>) -> Result<Option<f64>> {
    let raw = env.raw();
    if !self.state.borrow().core.state().limited || key_of(&self.state, raw, res.raw()).is_some() {
      return Ok(None);
    }
    let reserved = self.state.borrow_mut().core.reserve(key.as_deref());
    Ok(error::check(&self.state, raw, reserved)?.map(Ticket::to_f64))
  }

  /// Gives a reservation back (its response closed without registering);
  /// false when it was used or released already.
  #[napi(catch_unwind)]
  pub fn release_reservation(&self, ticket: f64) -> bool {
    match Ticket::from_f64(ticket) {
      Some(ticket) => self.state.borrow_mut().core.release(ticket),
      None => false,
    }
  }

  /// Whether `maxClientsPerKey` is on: only then does the JS surface
  /// compute a request's `clientKey`.
  #[napi(getter, catch_unwind)]
  pub fn keyed(&self) -> bool {
    self.state.borrow().core.state().keyed
  }

  /// What a registration's reading depends on, in one call (bits of
  /// `FLAGS` in lib/hub.js): 1 when a new connection can be replayed what
  /// it missed (history on, or a bus configured: only then is its
  /// `Last-Event-ID` read), 2 when `configure({ transport: 'stream' })`
  /// holds (its socket is not inspected), 4 when a bus was configured (its
  /// replay is asked for after registering), 8 when that bus still runs.
  #[napi(getter, catch_unwind)]
  pub fn flags(&self) -> u32 {
    let state = self.state.borrow().core.state();
    let bus = state.bus != BusLink::Off;
    u32::from(state.replayable)
      | u32::from(state.transport == TransportMode::Stream) << 1
      | u32::from(bus) << 2
      | u32::from(bus && state.bus != BusLink::Closed) << 3
  }

  /// Hands the connections registered this JS turn to the writer threads
  /// (`lib/hub.js` calls it from `setImmediate` after registrations): held
  /// until then, a burst of them wakes each thread once.
  #[napi(catch_unwind)]
  pub fn flush_writers(&self) {
    self.state.borrow().core.flush_writers();
  }

  /// `drain()`, and the start of `close()`: refuses new connections from
  /// now on (`ERR_SSE_CLOSED`).
  #[napi(catch_unwind)]
  pub fn drain(&self) {
    self.state.borrow_mut().core.shutdown(Shutdown::Drain);
  }

  /// True when `res` is registered with this hub.
  #[napi(catch_unwind)]
  pub fn has(&self, env: Env, res: Unknown) -> bool {
    key_of(&self.state, env.raw(), res.raw()).is_some()
  }

  /// Why the stream transport has `res` (a `getStats().streamFallbacks`
  /// name); `null` when the native writer has it or it is not registered.
  #[napi(catch_unwind)]
  pub fn stream_reason(&self, env: Env, res: Unknown) -> Option<&'static str> {
    let key = key_of(&self.state, env.raw(), res.raw())?;
    match self.state.borrow().core.placement(key) {
      Placement::Stream(reason) => Some(reason.name()),
      _ => None,
    }
  }

  /// Unregisters `res`, detaches its listener and ends it if still open.
  #[napi(catch_unwind)]
  pub fn unregister(&self, env: Env, res: Unknown) -> Result<bool> {
    let raw = env.raw();
    let res = res.raw();
    if !js::is_object(raw, res) {
      return Err(invalid_type(
        &self.state,
        raw,
        "res must be an http.ServerResponse",
      ));
    }
    Ok(match key_of(&self.state, raw, res) {
      Some(key) => remove(&self.state, raw, key, Removal::End),
      None => false,
    })
  }

  /// Forgets `res` at once, before the app destroys it: the socket writer
  /// drops it (and anything queued) ahead of any later send, so a frame sent
  /// in the same tick never reaches a destroyed connection. False when `res`
  /// is neither registered nor ending.
  #[napi(catch_unwind)]
  pub fn forget(&self, env: Env, res: Unknown) -> bool {
    effects::forget(&self.state, env.raw(), res.raw())
  }

  /// The registry as the original helper's `_clients` map shows it: a flat
  /// array `[id, res, meta, createdAt, …]`, four values per connection (only
  /// those under `id` when given), in registration order. `createdAt` is
  /// the wall-clock time of registration in ms.
  #[napi(catch_unwind)]
  pub fn entries<'env>(&self, env: &'env Env, id: Option<String>) -> Result<Unknown<'env>> {
    let array = crate::entries::entries(&self.state, env.raw(), id.as_deref())?;
    // SAFETY: `array` was made in this call on `env`, which outlives the
    // returned value ('env).
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), array) })
  }

  /// The client id `res` is registered under, if it is.
  #[napi(catch_unwind)]
  pub fn id_of(&self, env: Env, res: Unknown) -> Option<String> {
    let key = key_of(&self.state, env.raw(), res.raw())?;
    let s = self.state.borrow();
    s.core.connections().get(key).map(|e| e.id.to_string())
  }

  /// Drops every connection under `id` from the registry without ending
  /// it, as deleting from the original's `_clients` map does (its `close`
  /// listener is detached, a socket connection goes back to Node).
  #[napi(catch_unwind)]
  pub fn forget_id(&self, env: Env, id: String) -> bool {
    remove_id(&self.state, env.raw(), &id, Removal::Forget)
  }

  /// Unregisters and ends every connection under `id`.
  #[napi(catch_unwind)]
  pub fn unregister_id(&self, env: Env, id: String) -> bool {
    remove_id(&self.state, env.raw(), &id, Removal::End)
  }

  /// Frames `data` once and writes it to every connection under `id`.
  /// True when at least one live connection was there (with a bus: when
  /// the event was appended, or delivered locally).
  #[napi(catch_unwind)]
  pub fn send_to(
    &self,
    env: Env,
    id: String,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<bool> {
    let outgoing = Outgoing::ToClient {
      id: &id,
      data: &data,
      options: args::event_options(options.as_ref()),
    };
    Ok(self.send_planned(env.raw(), outgoing)? > 0)
  }

  /// Writes one framed event to any response, registered or not.
  #[napi(catch_unwind)]
  pub fn send(
    &self,
    env: Env,
    res: Unknown,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<bool> {
    let raw = env.raw();
    let res = res.raw();
    if !js::is_object(raw, res) {
      return Err(invalid_type(
        &self.state,
        raw,
        "res must be an http.ServerResponse",
      ));
    }
    let outgoing = Outgoing::ToResponse {
      data: &data,
      options: args::event_options(options.as_ref()),
    };
    match self.plan(raw, outgoing)? {
      Planned::Write(frame) => Ok(write_to_response(&self.state, raw, res, frame)),
      _ => Ok(false),
    }
  }

  /// Writes a comment (`: text` per line) to `res`, to the connections
  /// under `id`, or to every connection when neither is given.
  #[napi(catch_unwind)]
  pub fn comment(
    &self,
    env: Env,
    res: Option<Unknown>,
    id: Option<String>,
    text: String,
  ) -> Result<u32> {
    let raw = env.raw();
    let Some(res) = res else {
      let outgoing = Outgoing::Comment {
        id: id.as_deref(),
        text: &text,
      };
      return self.send_planned(raw, outgoing);
    };
    let res = res.raw();
    check_response(&self.state, raw, res, "target")?;
    match self.plan(raw, Outgoing::CommentToResponse { text: &text })? {
      Planned::Write(frame) => Ok(u32::from(write_to_response(&self.state, raw, res, frame))),
      _ => Ok(0),
    }
  }

  /// Frames `data` once and writes it to every connection (or the members
  /// of `channel`, or those whose meta passes `filter`); returns how many
  /// were written (socket connections count once their frame is queued).
  /// With history on, a broadcast to everyone gets the next id (unless
  /// `options.id` gives one) and is kept for replay.
  #[napi(catch_unwind)]
  pub fn broadcast(
    &self,
    env: Env,
    data: String,
    options: Option<EventOptions>,
    channel: Option<String>,
    filter: Option<Function<'_, (Unknown<'_>, String), Unknown<'_>>>,
  ) -> Result<u32> {
    let raw = env.raw();
    let request = Broadcast {
      data: &data,
      options: args::event_options(options.as_ref()),
      channel: channel.as_deref(),
      filtered: filter.is_some(),
    };
    match self.plan(raw, Outgoing::Broadcast(request))? {
      Planned::Filter { frame, candidates } => {
        let Some(filter) = &filter else {
          return Ok(0);
        };
        let chosen = filtered_keys(&self.state, raw, filter, &candidates)?;
        self.send_planned(
          raw,
          Outgoing::Chosen {
            frame,
            keys: &chosen,
          },
        )
      }
      planned => Ok(deliver::planned(&self.state, raw, planned)),
    }
  }

  /// Broadcasts, then ends and unregisters every connection. With a bus the
  /// event stays local (no id): this is what a shutting-down instance says
  /// to its own clients.
  #[napi(catch_unwind)]
  pub fn broadcast_and_close(
    &self,
    env: Env,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<u32> {
    let outgoing = Outgoing::Final {
      data: &data,
      options: args::event_options(options.as_ref()),
    };
    let written = self.send_planned(env.raw(), outgoing)?;
    self.close_all(env);
    Ok(written)
  }

  /// Ends and unregisters every connection; returns how many there were.
  #[napi(catch_unwind)]
  pub fn close_all(&self, env: Env) -> u32 {
    let keys = self.state.borrow().core.connections().keys();
    remove_all(&self.state, env.raw(), keys, Removal::End)
  }

  /// Ends every connection (each after what is queued for it), refuses new
  /// ones and stops the writer thread once the last end is done; then calls
  /// `lifecycle('closed')`. Returns how many connections were ended.
  #[napi(catch_unwind)]
  pub fn close(&self, env: Env) -> u32 {
    let effects = self.state.borrow_mut().core.shutdown(Shutdown::Close);
    let ended = effects
      .iter()
      .filter(|e| matches!(e, sse_helper_core::hub::Effect::Disconnect { .. }))
      .count();
    execute(&self.state, env.raw(), effects);
    // The core let go of its shared replays: so does the binding.
    crate::replays::prune(&self.state, env.raw());
    // After the `disconnect` listeners ran: what they broadcast still goes
    // out to the other instances before the bus stops.
    self.state.borrow_mut().core.shutdown(Shutdown::StopBus);
    ended as u32
  }

  /// Adds `res` (or every connection under `id`) to `channel`, or takes
  /// them out when `member` is false; returns how many changed.
  #[napi(catch_unwind)]
  pub fn set_membership(
    &self,
    env: Env,
    res: Option<Unknown>,
    id: Option<String>,
    channel: String,
    member: bool,
  ) -> Result<u32> {
    let raw = env.raw();
    error::check(
      &self.state,
      raw,
      options::check_channel(&channel, "channel"),
    )?;
    let keys: Vec<ConnKey> = match (res, id) {
      (Some(res), _) => key_of(&self.state, raw, res.raw()).into_iter().collect(),
      (None, Some(id)) => self
        .state
        .borrow()
        .core
        .connections()
        .keys_for_id(&id)
        .to_vec(),
      (None, None) => Vec::new(),
    };
    let change = match member {
      true => Change::Join(&channel),
      false => Change::Part(&channel),
    };
    let now = Instant::now();
    let mut s = self.state.borrow_mut();
    let changed = keys.into_iter().filter(|k| s.core.change(*k, change, now));
    Ok(changed.count() as u32)
  }

  /// Writes a heartbeat comment to every connection nothing was sent to for
  /// `idle_ms` (saturating: a huge value means never); returns how many.
  #[napi(catch_unwind)]
  pub fn heartbeat(&self, env: Env, idle_ms: f64) -> u32 {
    let outgoing = Outgoing::Heartbeat {
      idle: millis(idle_ms),
    };
    // A heartbeat is never refused.
    self.send_planned(env.raw(), outgoing).unwrap_or(0)
  }

  /// The id a client can resume from to get what is broadcast after now
  /// (`HubCore::position`); `None` when nothing could be replayed.
  #[napi(catch_unwind)]
  pub fn position(&self) -> Option<String> {
    self.state.borrow().core.position()
  }

  /// Registered connections.
  #[napi(catch_unwind)]
  pub fn count(&self) -> u32 {
    self.state.borrow().core.connections().len() as u32
  }

  /// Removes connections that ended, errored or were destroyed, and ends and
  /// removes those connected for longer than `max_age_ms` (any finite
  /// non-negative number; a huge one means "never").
  #[napi(catch_unwind)]
  pub fn cleanup_stale(&self, env: Env, max_age_ms: f64) -> Result<u32> {
    removal::cleanup_stale(&self.state, env.raw(), max_age_ms)
  }

  /// Writes raw bytes the app passed to `res.write` on a socket-transport
  /// response, as one HTTP chunk, in order with the helper's frames.
  /// Returns 1 when the connection's backlog is still below `high_water_mark`
  /// (Node's `write` would return true), 0 when it is not (the writer emits
  /// `drain` on `res` once flushed), and -1 when `res` is no longer
  /// registered (nothing was written).
  #[napi(catch_unwind)]
  pub fn write_raw(&self, env: Env, res: Unknown, chunk: &[u8], high_water_mark: f64) -> i32 {
    let Some(key) = key_of(&self.state, env.raw(), res.raw()) else {
      return -1;
    };
    match self
      .state
      .borrow()
      .core
      .app_write(key, chunk, high_water_mark)
    {
      AppWrite::Accepted => 1,
      AppWrite::Full => 0,
      AppWrite::Gone => -1,
    }
  }

  /// Sets the transport for new connections, the slow-client bound and
  /// policy (both transports), the replay history size and how long an
  /// ended socket connection may take to flush.
  #[napi(catch_unwind)]
  pub fn configure(&self, env: Env, options: args::HubOptions) -> Result<()> {
    let raw = env.raw();
    let settings = error::check(&self.state, raw, options.view().settings())?;
    let applied = self.state.borrow_mut().core.configure(settings);
    // A capacity changed ends the shared replays.
    crate::replays::prune(&self.state, raw);
    error::check(&self.state, raw, applied)
  }

  /// Counters and gauges at this instant.
  #[napi(catch_unwind)]
  pub fn stats(&self) -> NativeStats {
    let s = self.state.borrow();
    NativeStats::of(s.core.stats())
  }

  /// JS awaits something the hub's threads will report (`ready()`,
  /// `close()`): Node stays alive until the matching `release()`.
  #[napi(catch_unwind)]
  pub fn hold(&self, env: Env) {
    self.state.borrow_mut().waiting.hold(env.raw());
  }

  /// What a `hold()` waited for has come.
  #[napi(catch_unwind)]
  pub fn release(&self, env: Env) {
    self.state.borrow_mut().waiting.release(env.raw());
  }

  /// Writes `retry: <ms>` to every local connection (before a drain): a
  /// field alone, which sets the browser's reconnection delay and
  /// dispatches no event. `ms` is checked by the JS surface.
  #[napi(catch_unwind)]
  pub fn retry_hint(&self, env: Env, ms: u32, jitter_ms: Option<u32>) -> u32 {
    let outgoing = Outgoing::RetryHint {
      ms,
      jitter: jitter_ms.unwrap_or(0),
    };
    // A retry hint is never refused.
    self.send_planned(env.raw(), outgoing).unwrap_or(0)
  }

  /// napi references this hub holds right now (responses, their `write`,
  /// metas, its own listener, symbol and hooks), plus the responses its
  /// table holds at their slots. For leak tests.
  #[napi(getter, catch_unwind)]
  pub fn held_references(&self) -> u32 {
    let s = self.state.borrow();
    s.refs.live() as u32 + s.table.as_ref().map_or(0, |t| t.taken())
  }

  /// Fault injection for tests: makes the socket writer thread panic, to
  /// check that its death is reported and its connections torn down.
  #[napi(catch_unwind)]
  pub fn crash_writer_for_test(&self) -> bool {
    self.state.borrow().core.crash_writer()
  }
}
