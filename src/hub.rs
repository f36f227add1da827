//! The `#[napi]` class `NativeHub` that the JS surface (`index.js`) wraps.
//! Each method converts its arguments, asks the core
//! (`sse_helper_core::hub::HubCore`) and executes what it answers. Every
//! method catches panics (`catch_unwind`) and throws them as JS errors, so
//! none can abort the process.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use napi::bindgen_prelude::*;
use napi::{Env, JsValue};
use napi_derive::napi;
use sse_helper_core::bus::Mark;
use sse_helper_core::hub::options;
use sse_helper_core::hub::{millis, AppWrite, Broadcast, Frame, Planned, Reason, Removal};
use sse_helper_core::registry::ConnKey;

use crate::args::{self, guard_panics, EventOptions};
use crate::deliver;
use crate::effects::{self, execute, key_of};
use crate::error::{self, invalid_type};
use crate::js::{self, RawEnv, RawValue};
use crate::registration::{self, check_response};
use crate::socket::SocketInfo;
use crate::state::{Hooks, HubState, Shared};
use crate::stream::{self, OutFrame, WriteOutcome};

/// Registry counters, transports and writer figures at one instant.
#[napi(object)]
pub struct NativeStats {
  /// Registered connections.
  pub clients: u32,
  /// Connections written through the response's own `write`.
  pub stream_connections: u32,
  /// Connections written by the native socket writer.
  pub socket_connections: u32,
  /// Frames handed to connections (each recipient counts once).
  pub frames_sent: f64,
  /// Bytes handed to connections.
  pub bytes_sent: f64,
  /// Frames skipped for slow clients under the `drop` policy.
  pub frames_dropped: f64,
  /// Channels with at least one member.
  pub channels: u32,
  /// Reconnections that were replayed missed events from history.
  pub replays: f64,
  /// Reconnections whose Last-Event-ID was no longer in history, or whose
  /// missed events were more than `maxBufferedBytes`.
  pub resets: f64,
  /// Connections closed for passing `maxBufferedBytes`.
  pub slow_disconnects: f64,
  /// Bytes waiting in the socket writer's queues now.
  pub queued_bytes: f64,
  /// Most connections this hub's socket writer may hold at once: about
  /// half the open-files limit (each costs a second fd), which Node raises
  /// to the hard limit at startup. Later ones use the stream transport.
  /// `Infinity` where the limit is unlimited or unreadable, 0 with
  /// `transport: 'stream'`.
  pub socket_capacity: f64,
  /// Socket writer threads (running, or the number the first hand-off
  /// starts).
  pub writer_threads: u32,
  /// Socket connections on each running writer thread.
  pub socket_connections_by_thread: Vec<u32>,
  /// The Redis bus, when configured.
  pub bus: Option<NativeBusStats>,
}

/// The Redis bus's state and counters.
#[napi(object)]
pub struct NativeBusStats {
  /// `'connecting'`, `'connected'`, `'disconnected'` (retrying) or `'closed'`.
  pub state: String,
  /// Entries this instance appended to the stream.
  pub entries_written: f64,
  /// Entries read back from the stream (every instance's).
  pub entries_read: f64,
  /// Reconnections to Redis after an outage.
  pub reconnects: f64,
  /// Reconnecting clients replayed missed entries from the stream.
  pub replays: f64,
  /// Clients sent `event: reset` by the bus (id trimmed or unknown, more
  /// missed than the replay bounds, or entries trimmed during an outage).
  pub resets: f64,
  /// Entries skipped because they broke the encoding.
  pub malformed: f64,
  /// Events delivered to local clients only, without an id, because Redis
  /// was away.
  pub local_fallbacks: f64,
}

/// A registry of SSE connections. The JS surface (`index.js`) wraps it;
/// its methods take already-serialized text.
#[napi(custom_finalize)]
pub struct NativeHub {
  state: Shared,
}

impl ObjectFinalize for NativeHub {
  /// Runs during garbage collection, where no JS may run: it only lets go.
  /// Socket connections still registered are ended through the writer
  /// (which flushes what it holds first); their responses are ended from
  /// the writer's callback, a normal JS turn. Stream connections stay until
  /// their `close` event, which still cleans up. Once nothing is left the
  /// hub releases its references and the writer thread exits by itself;
  /// nothing here joins a thread.
  fn finalize(self, env: Env) -> Result<()> {
    guard_panics(|| {
      // Never borrowed here in practice (finalizers run outside any call
      // into the hub); if it were, the hub stays alive as it is rather
      // than panic.
      let Ok(mut s) = self.state.try_borrow_mut() else {
        return Ok(());
      };
      let effects = s.core.orphan();
      drop(s);
      effects::execute_without_js(&self.state, env.raw(), effects);
      Ok(())
    })
  }
}

/// Where a new connection starts, for `register`.
#[napi(object)]
#[derive(Default)]
pub struct RegisterStart {
  /// The client's `Last-Event-ID` (history or bus replay from it).
  pub last_event_id: Option<String>,
  /// `busMark()` as it was when the response's headers were flushed.
  pub mark: Option<String>,
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
  #[napi(constructor, catch_unwind)]
  pub fn new(
    env: Env,
    type_error: Option<Function<'_>>,
    hooks: Option<Object<'_>>,
    lifecycle: Option<Function<'_>>,
  ) -> Result<Self> {
    let raw = env.raw();
    let state: Shared = Rc::new(RefCell::new(HubState::new()));
    let listener_state = state.clone();
    let on_close =
      env.create_function_from_closure::<(), (), _>("sseHelperOnClose", move |ctx| {
        let env = ctx.env.raw();
        let res = ctx.this::<Unknown>()?.raw();
        guard_panics(|| {
          effects::closed(&listener_state, env, res);
          Ok(())
        })
      })?;
    let symbol = js::new_symbol(raw, "sse-helper-native connection")?;
    let key_map = js::new_weak_map(raw)?;
    let hook = |name: &std::ffi::CStr| -> Result<Option<RawValue>> {
      let Some(hooks) = &hooks else {
        return Ok(None);
      };
      let value = js::get(raw, hooks.raw(), name)?;
      Ok(js::is_function(raw, value).then_some(value))
    };
    let hook_values = [
      hook(c"write")?,
      hook(c"end")?,
      hook(c"destroy")?,
      hook(c"socketDestroy")?,
      hook(c"writeAfterEnd")?,
      hook(c"nodeWrite")?,
    ];
    {
      let mut s = state.borrow_mut();
      let s = &mut *s;
      s.on_close = Some(s.refs.hold(raw, on_close.raw())?);
      s.key_symbol = Some(s.refs.hold(raw, symbol)?);
      s.key_map = Some(s.refs.hold(raw, key_map)?);
      s.type_error = type_error.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      s.lifecycle = lifecycle.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      if let [Some(write), Some(end), Some(destroy), Some(socket_destroy), Some(write_after_end), Some(node_write)] =
        hook_values
      {
        s.hooks = Some(Hooks {
          write: s.refs.hold(raw, write)?,
          end: s.refs.hold(raw, end)?,
          destroy: s.refs.hold(raw, destroy)?,
          socket_destroy: s.refs.hold(raw, socket_destroy)?,
          write_after_end: s.refs.hold(raw, write_after_end)?,
          node_write: s.refs.hold(raw, node_write)?,
        });
      }
    }
    Ok(NativeHub { state })
  }

  /// Registers `res` under `id` (generated when absent) and returns the id.
  /// A response already registered is moved to `id` and its meta replaced.
  /// `socket` locates the connection's socket when the JS surface found it
  /// eligible for the socket writer (plain HTTP/1.1 over TCP, Node's own
  /// `write`/`end`, nothing pending); the fd is used only if it really is
  /// that socket. With history on, a `lastEventId` gets the events missed
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
    socket: Option<SocketInfo>,
    start: Option<RegisterStart>,
  ) -> Result<String> {
    let raw = env.raw();
    let RegisterStart {
      last_event_id,
      mark,
    } = start.unwrap_or_default();
    // With a bus the core decides whether the connection is held for a
    // replay (see `request_replay`): nothing live reaches it before.
    let bus = self.state.borrow().core.bus().is_some();
    let start = registration::Start {
      last_event_id: last_event_id.as_deref().filter(|_| bus),
      mark: mark.as_deref().and_then(Mark::parse),
    };
    let registered = registration::register(
      &self.state,
      &env,
      res.raw(),
      id,
      meta.map(|m| m.raw()),
      socket,
      start,
    )?;
    if let (Some(key), Some(last_event_id)) = (registered.key, last_event_id) {
      if bus {
        return Ok(registered.id);
      }
      let replay = self
        .state
        .borrow_mut()
        .core
        .replay(key, &last_event_id, Instant::now());
      if let Some(dispatch) = replay {
        deliver::run(&self.state, raw, dispatch);
      }
    }
    Ok(registered.id)
  }

  /// True when `res` is registered with this hub.
  #[napi(catch_unwind)]
  pub fn has(&self, env: Env, res: Unknown) -> bool {
    key_of(&self.state, env.raw(), res.raw()).is_some()
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
      Some(key) => remove(&self.state, raw, key, Removal::End, Reason::Removed),
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
    let raw = env.raw();
    let mut values = Vec::new();
    {
      let s = self.state.borrow();
      let undefined = js::undefined(raw)?;
      let mut listed: Vec<_> = match &id {
        Some(id) => s
          .core
          .keys_for_id(id)
          .iter()
          .filter_map(|k| s.core.entry(*k))
          .collect(),
        None => s.core.iter().collect(),
      };
      listed.sort_by_key(|e| e.handle.handle.order);
      values.reserve(listed.len() * 4);
      for e in listed {
        let conn = &e.handle.handle;
        values.push(js::string(raw, &e.id)?);
        values.push(conn.res.value(raw)?);
        values.push(match &conn.meta {
          Some(meta) => meta.value(raw)?,
          None => undefined,
        });
        values.push(js::double(raw, conn.created_at_ms)?);
      }
    }
    let array = js::array(raw, &values)?;
    // SAFETY: `array` was made in this call on `env`, which outlives the
    // returned value ('env).
    Ok(unsafe { Unknown::from_raw_unchecked(raw, array) })
  }

  /// The client id `res` is registered under, if it is.
  #[napi(catch_unwind)]
  pub fn id_of(&self, env: Env, res: Unknown) -> Option<String> {
    let key = key_of(&self.state, env.raw(), res.raw())?;
    let s = self.state.borrow();
    s.core.entry(key).map(|e| e.id.to_string())
  }

  /// Drops every connection under `id` from the registry without ending
  /// it, as deleting from the original's `_clients` map does (its `close`
  /// listener is detached, a socket connection goes back to Node).
  #[napi(catch_unwind)]
  pub fn forget_id(&self, env: Env, id: String) -> bool {
    let keys = self.state.borrow().core.keys_for_id(&id).to_vec();
    let mut forgot = false;
    for key in keys {
      forgot |= remove(
        &self.state,
        env.raw(),
        key,
        Removal::Forget,
        Reason::Removed,
      );
    }
    forgot
  }

  /// Unregisters and ends every connection under `id`.
  #[napi(catch_unwind)]
  pub fn unregister_id(&self, env: Env, id: String) -> bool {
    let keys = self.state.borrow().core.keys_for_id(&id).to_vec();
    let mut removed = false;
    for key in keys {
      removed |= remove(&self.state, env.raw(), key, Removal::End, Reason::Removed);
    }
    removed
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
    let raw = env.raw();
    let options = args::event_options(options.as_ref());
    let planned = self
      .state
      .borrow_mut()
      .core
      .send_to(&id, &data, &options, Instant::now());
    let dispatch = error::check(&self.state, raw, planned)?;
    Ok(deliver::run(&self.state, raw, dispatch) > 0)
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
    let options = args::event_options(options.as_ref());
    let frame = self.state.borrow().core.event(&data, &options);
    let frame = error::check(&self.state, raw, frame)?;
    Ok(write_to_response(&self.state, raw, res, frame))
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
    if let Some(res) = res {
      let res = res.raw();
      check_response(&self.state, raw, res, "target")?;
      let frame = Frame::comment(&text);
      return Ok(u32::from(write_to_response(&self.state, raw, res, frame)));
    }
    let dispatch = self
      .state
      .borrow_mut()
      .core
      .comment(id.as_deref(), &text, Instant::now());
    Ok(deliver::run(&self.state, raw, dispatch))
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
    let planned = self
      .state
      .borrow_mut()
      .core
      .broadcast(request, Instant::now());
    let dispatch = match error::check(&self.state, raw, planned)? {
      Planned::Ready(dispatch) => dispatch,
      Planned::Filter { frame, candidates } => {
        let Some(filter) = &filter else {
          return Ok(0);
        };
        let chosen = filtered_keys(&self.state, raw, filter, &candidates)?;
        let now = Instant::now();
        self
          .state
          .borrow_mut()
          .core
          .broadcast_to(frame, &chosen, now)
      }
    };
    Ok(deliver::run(&self.state, raw, dispatch))
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
    let raw = env.raw();
    let options = args::event_options(options.as_ref());
    let planned = self
      .state
      .borrow_mut()
      .core
      .broadcast_final(&data, &options, Instant::now());
    let dispatch = error::check(&self.state, raw, planned)?;
    let written = deliver::run(&self.state, raw, dispatch);
    self.close_all(env);
    Ok(written)
  }

  /// Ends and unregisters every connection; returns how many there were.
  #[napi(catch_unwind)]
  pub fn close_all(&self, env: Env) -> u32 {
    let keys = self.state.borrow().core.keys();
    let mut closed = 0;
    for key in keys {
      closed += u32::from(remove(
        &self.state,
        env.raw(),
        key,
        Removal::End,
        Reason::Removed,
      ));
    }
    closed
  }

  /// Ends every connection (each after what is queued for it), refuses new
  /// ones and stops the writer thread once the last end is done; then calls
  /// `lifecycle('closed')`. Returns how many connections were ended.
  #[napi(catch_unwind)]
  pub fn close(&self, env: Env) -> u32 {
    let effects = self.state.borrow_mut().core.close();
    let ended = effects
      .iter()
      .filter(|e| matches!(e, sse_helper_core::hub::Effect::Disconnect { .. }))
      .count();
    execute(&self.state, env.raw(), effects);
    // After the `disconnect` listeners ran: what they broadcast still goes
    // out to the other instances before the bus stops.
    self.state.borrow_mut().core.stop_bus();
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
      (None, Some(id)) => self.state.borrow().core.keys_for_id(&id).to_vec(),
      (None, None) => Vec::new(),
    };
    let mut s = self.state.borrow_mut();
    let changed = keys
      .into_iter()
      .filter(|k| s.core.set_membership(*k, &channel, member));
    Ok(changed.count() as u32)
  }

  /// Channels `res` is a member of.
  #[napi(catch_unwind)]
  pub fn channels_of(&self, env: Env, res: Unknown) -> Vec<String> {
    match key_of(&self.state, env.raw(), res.raw()) {
      Some(key) => self.state.borrow().core.channels_of(key),
      None => Vec::new(),
    }
  }

  /// Writes a heartbeat comment to every connection nothing was sent to for
  /// `idle_ms` (saturating: a huge value means never); returns how many.
  #[napi(catch_unwind)]
  pub fn heartbeat(&self, env: Env, idle_ms: f64) -> u32 {
    let dispatch = self
      .state
      .borrow_mut()
      .core
      .heartbeat(millis(idle_ms), Instant::now());
    deliver::run(&self.state, env.raw(), dispatch)
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
    self.state.borrow().core.count() as u32
  }

  /// Removes connections that ended, errored or were destroyed, and ends and
  /// removes those connected for longer than `max_age_ms` (any finite
  /// non-negative number; a huge one means "never").
  #[napi(catch_unwind)]
  pub fn cleanup_stale(&self, env: Env, max_age_ms: f64) -> Result<u32> {
    let raw = env.raw();
    let max_age = error::check(&self.state, raw, options::max_age(max_age_ms))?;
    let (too_old, candidates) = {
      let s = self.state.borrow();
      let too_old = s.core.older_than(Instant::now(), max_age);
      let mut candidates = Vec::with_capacity(s.core.count());
      for entry in s.core.iter() {
        candidates.push((entry.key, entry.handle.handle.res.value(raw)?));
      }
      (too_old, candidates)
    };
    let mut removed = 0;
    for (key, res) in candidates {
      let dead = js::get_truthy(raw, res, c"writableEnded")
        || js::get_truthy(raw, res, c"destroyed")
        || js::get_truthy(raw, res, c"errored");
      if (dead || too_old.contains(&key))
        && remove(&self.state, raw, key, Removal::End, Reason::Removed)
      {
        removed += 1;
      }
    }
    Ok(removed)
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
    error::check(&self.state, raw, applied)
  }

  /// Counters and gauges at this instant.
  #[napi(catch_unwind)]
  pub fn stats(&self) -> NativeStats {
    let s = self.state.borrow().core.stats();
    NativeStats {
      clients: s.clients as u32,
      stream_connections: s.stream_connections as u32,
      socket_connections: s.socket_connections as u32,
      frames_sent: s.frames_sent as f64,
      bytes_sent: s.bytes_sent as f64,
      frames_dropped: s.frames_dropped as f64,
      channels: s.channels as u32,
      replays: s.replays as f64,
      resets: s.resets as f64,
      slow_disconnects: s.slow_disconnects as f64,
      queued_bytes: s.queued_bytes as f64,
      socket_capacity: s.socket_capacity.map_or(f64::INFINITY, |c| c as f64),
      writer_threads: s.writer_threads as u32,
      socket_connections_by_thread: s
        .socket_connections_by_thread
        .iter()
        .map(|&n| n as u32)
        .collect(),
      bus: self
        .state
        .borrow()
        .core
        .bus_stats()
        .map(|b| NativeBusStats {
          state: b.state.as_str().to_string(),
          entries_written: b.entries_written as f64,
          entries_read: b.entries_read as f64,
          reconnects: b.reconnects as f64,
          replays: b.replays as f64,
          resets: b.resets as f64,
          malformed: b.malformed as f64,
          local_fallbacks: b.local_fallbacks as f64,
        }),
    }
  }

  /// Checks `configure({ redis })`'s options without starting anything
  /// (`configure` applies nothing unless every option is valid).
  #[napi(catch_unwind)]
  pub fn check_bus(&self, env: Env, options: crate::bus::BusOptions) -> Result<()> {
    crate::bus::check(&self.state, env.raw(), &options).map(|_| ())
  }

  /// Starts the Redis bus (once per hub): from now on broadcasts, publishes
  /// and `sendTo` go through the stream and every instance delivers them.
  #[napi(catch_unwind)]
  pub fn start_bus(&self, env: Env, options: crate::bus::BusOptions) -> Result<()> {
    crate::bus::start(&self.state, &env, &options)
  }

  /// Asks the bus for `res`'s replay if `register` held it for one (from
  /// its `Last-Event-ID`, or from the mark its headers were flushed at);
  /// called on the tick after `addClient`, so channels the route joined
  /// right away count. False when nothing was waiting.
  #[napi(catch_unwind)]
  pub fn request_replay(&self, env: Env, res: Unknown) -> bool {
    match key_of(&self.state, env.raw(), res.raw()) {
      Some(key) => self.state.borrow_mut().core.request_replay(key),
      None => false,
    }
  }

  /// Where the bus's live delivery is now (`""` before it knows), for a
  /// response whose headers are flushed: `register` gets it back as `mark`,
  /// and a connection that missed entries since is replayed them. `None`
  /// without a bus.
  #[napi(catch_unwind)]
  pub fn bus_mark(&self) -> Option<String> {
    self.state.borrow().core.bus_mark().map(Mark::to_text)
  }

  /// Asks the bus for every live instance's client count; the answer comes
  /// as `lifecycle('reply', request, 'ok:<n>' | 'error:<message>')`.
  #[napi(catch_unwind)]
  pub fn bus_count(&self, request: u32) -> bool {
    match self.state.borrow().core.bus() {
      Some(bus) => {
        bus.count(request);
        true
      }
      None => false,
    }
  }

  /// Asks to hear (`lifecycle('reply', request, 'ok:0')`) once everything
  /// this instance appended has been read back and delivered.
  #[napi(catch_unwind)]
  pub fn bus_flush(&self, request: u32) -> bool {
    match self.state.borrow().core.bus() {
      Some(bus) => {
        bus.flush(request);
        true
      }
      None => false,
    }
  }

  /// Writes `retry: <ms>` to every local connection (before a drain): a
  /// field alone, which sets the browser's reconnection delay and
  /// dispatches no event. `ms` is checked by the JS surface.
  #[napi(catch_unwind)]
  pub fn retry_hint(&self, env: Env, ms: u32) -> u32 {
    let dispatch = self.state.borrow_mut().core.retry_hint(ms, Instant::now());
    deliver::run(&self.state, env.raw(), dispatch)
  }

  /// napi references this hub holds right now (responses, their `write`,
  /// metas, its own listener, symbol and hooks). For leak tests.
  #[napi(getter, catch_unwind)]
  pub fn held_references(&self) -> u32 {
    self.state.borrow().refs.live() as u32
  }

  /// Fault injection for tests: makes the socket writer thread panic, to
  /// check that its death is reported and its connections torn down.
  #[napi(catch_unwind)]
  pub fn crash_writer_for_test(&self) -> bool {
    self.state.borrow().core.crash_writer()
  }
}

/// Removes `key` as the core decides and executes the result; false if it
/// was not registered.
fn remove(state: &Shared, env: RawEnv, key: ConnKey, removal: Removal, reason: Reason) -> bool {
  let (registered, effects) = {
    let mut s = state.borrow_mut();
    (s.core.contains(key), s.core.remove(key, removal, reason))
  };
  execute(state, env, effects);
  registered
}

/// Sends `frame` to one response: through the registry when registered
/// (so its transport and policy apply), else straight to its `write`.
///
/// As in the original helper, a response whose `write` throws is ended
/// (quietly), and removed when registered.
fn write_to_response(state: &Shared, env: RawEnv, res: RawValue, frame: Frame) -> bool {
  if let Some(key) = key_of(state, env, res) {
    let dispatch = state.borrow_mut().core.send_one(key, frame, Instant::now());
    return deliver::run(state, env, dispatch) == 1;
  }
  let ending =
    effects::raw_key_of(state, env, res).is_some_and(|k| state.borrow().core.is_ending(k));
  if ending || js::get_truthy(env, res, c"destroyed") {
    return false;
  }
  match stream::write(env, res, None, &OutFrame::new(frame.body())) {
    WriteOutcome::Written | WriteOutcome::Buffered => true,
    WriteOutcome::Ended => false,
    WriteOutcome::Threw => {
      js::call_method_quietly(env, res, c"end", &[]);
      false
    }
  }
}

/// Keys among `candidates` whose `filter(meta, id)` is truthy. Runs every
/// filter before anything is written, so a throwing filter writes nothing.
fn filtered_keys(
  state: &Shared,
  env: RawEnv,
  filter: &Function<'_, (Unknown<'_>, String), Unknown<'_>>,
  candidates: &[ConnKey],
) -> Result<Vec<ConnKey>> {
  let undefined = js::undefined(env)?;
  let candidates: Vec<(ConnKey, RawValue, Arc<str>)> = {
    let s = state.borrow();
    let meta_of = |conn: &crate::state::JsConn| {
      conn
        .meta
        .as_ref()
        .and_then(|m| m.value(env).ok())
        .unwrap_or(undefined)
    };
    candidates
      .iter()
      .filter_map(|k| s.core.entry(*k))
      .map(|e| (e.key, meta_of(&e.handle.handle), e.id.clone()))
      .collect()
  };
  let mut keys = Vec::new();
  let func = filter.raw();
  for (key, meta, id) in candidates {
    let id = js::string(env, &id)?;
    match js::call(env, meta, func, &[meta, id]) {
      Ok(result) if js::truthy(env, result) => keys.push(key),
      Ok(_) => {}
      Err(exception) => {
        js::rethrow(env, exception);
        return Err(Error::new(Status::PendingException, "filter threw"));
      }
    }
  }
  Ok(keys)
}
