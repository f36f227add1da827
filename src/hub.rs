//! The `#[napi]` binding: the `NativeHub` class the JS surface wraps. It
//! converts values, holds the napi references, chooses each connection's
//! transport and maps errors; the bookkeeping lives in [`crate::registry`],
//! the framing in [`crate::frame`] and the socket writes in [`crate::writer`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::frame::{self, EventFields};
use crate::history::{History, Replay};
use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::registry::{self, ConnKey, Registry};
use crate::transport::{self, OutFrame, Transport, WriteOutcome};
use crate::writer::{DeadReason, SlowPolicy, SocketWriter, WireId, WriterConfig, WriterEvent};

/// What the hub keeps per connection.
#[derive(Debug)]
struct Conn {
  res: JsRef,
  transport: Transport,
  meta: Option<JsRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportMode {
  /// The socket writer where the connection allows it, else the stream.
  Auto,
  /// Always the response's own `write`.
  Stream,
}

/// How a connection leaves the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
  /// The client is gone (its `close` fired): only forget it.
  Forget,
  /// End the response gracefully, after whatever is queued for it.
  End,
  /// Tear the connection down (a dead socket or a slow client).
  Destroy,
}

/// Why a connection left, as the `disconnect` event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
  /// The client closed the connection.
  Closed,
  /// The app removed it (or it was ended by the app, or was stale).
  Removed,
  /// A write failed.
  Error,
  /// It fell further behind than `maxBufferedBytes` allows.
  Slow,
}

impl Reason {
  fn as_str(self) -> &'static str {
    match self {
      Reason::Closed => "close",
      Reason::Removed => "removed",
      Reason::Error => "error",
      Reason::Slow => "slow",
    }
  }
}

/// Options of one event, as JS passes them.
#[napi(object)]
pub struct EventOptions {
  pub event: Option<String>,
  pub id: Option<String>,
  pub retry: Option<f64>,
}

/// Everything a hub owns. Shared (on the JS thread only) between the class,
/// its `close` listener and its writer-event callback.
struct HubState {
  registry: Registry<Conn>,
  refs: Refs,
  /// The one `close` listener attached to every registered response.
  on_close: Option<JsRef>,
  /// Private symbol under which a response carries its registry key, so a
  /// `close` event or `removeClient(res)` finds it without a scan.
  key_symbol: Option<JsRef>,
  /// The caller's `TypeError`, so bad-input errors belong to the caller's
  /// realm (`instanceof TypeError` holds under Jest's vm contexts too).
  type_error: Option<JsRef>,
  /// `write` and `end` replacements installed on socket-transport responses,
  /// so the app's own writes go through the writer's queue, in order.
  hooks: Option<(JsRef, JsRef)>,
  mode: TransportMode,
  writer_config: WriterConfig,
  /// Started on the first socket hand-off.
  writer: Option<SocketWriter>,
  /// Most connections the writer may hold (see [`crate::writer::fd_budget`]).
  fd_budget: usize,
  next_wire: WireId,
  wires: HashMap<WireId, ConnKey>,
  /// Responses removed with `Removal::End` whose queue the writer is still
  /// flushing; Node ends them once it reports `Ended`.
  pending_ends: HashMap<WireId, JsRef>,
  history: History,
  /// When the last broadcast to everyone went out: heartbeats only go to
  /// connections idle since both this and their own last send.
  last_broadcast: Instant,
  /// `lifecycle(kind, id, reason)` in JS, for the hub's events.
  lifecycle: Option<JsRef>,
  stream_frames: u64,
  stream_bytes: u64,
  stream_dropped: u64,
  stream_slow_disconnects: u64,
  replays: u64,
  resets: u64,
}

impl HubState {
  fn socket_connections(&self) -> usize {
    self.wires.len()
  }

  fn socket_slot_free(&self) -> bool {
    self.mode == TransportMode::Auto && self.wires.len() + self.pending_ends.len() < self.fd_budget
  }
}

type Shared = Rc<RefCell<HubState>>;

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
  /// Reconnections whose Last-Event-ID was no longer in history.
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
}

/// A registry of SSE connections. The JS surface (`index.js`) wraps it;
/// its methods take already-serialized text.
#[napi(custom_finalize)]
pub struct NativeHub {
  state: Shared,
}

impl ObjectFinalize for NativeHub {
  fn finalize(self, env: Env) -> Result<()> {
    // Stopping the writer joins its thread and releases its thread-safe
    // function; responses still registered keep the state alive through
    // their `close` listener, so late events still clean up.
    let writer = self.state.borrow_mut().writer.take();
    drop(writer);
    // Responses whose end waited for the writer: end them now, or nothing
    // ever would.
    let pending: Vec<WireId> = self.state.borrow().pending_ends.keys().copied().collect();
    for wire in pending {
      finish_pending_end(&self.state, env.raw(), wire, Removal::End);
    }
    let mut state = self.state.borrow_mut();
    let state = &mut *state;
    let hooks = state.hooks.take().map(|(w, e)| [w, e]);
    let own = [
      state.on_close.take(),
      state.key_symbol.take(),
      state.type_error.take(),
      state.lifecycle.take(),
    ];
    for reference in own.into_iter().flatten().chain(hooks.into_iter().flatten()) {
      state.refs.release(env.raw(), reference);
    }
    Ok(())
  }
}

/// Bad input from JS: every such error leaves through here, as a `TypeError`
/// whose message starts with the argument's name.
fn invalid_arg(state: &Shared, env: RawEnv, code: &std::ffi::CStr, message: &str) -> Error {
  let ctor = state
    .borrow()
    .type_error
    .as_ref()
    .and_then(|c| c.value(env).ok());
  js::throw_type_error(env, ctor, code, message)
}

fn invalid(state: &Shared, env: RawEnv, message: &str) -> Error {
  invalid_arg(state, env, c"ERR_INVALID_ARG_VALUE", message)
}

fn invalid_type(state: &Shared, env: RawEnv, message: &str) -> Error {
  invalid_arg(state, env, c"ERR_INVALID_ARG_TYPE", message)
}

/// An optional setting: `None` stays `None`, a value `parse` rejects is a
/// TypeError carrying `message`.
fn parse_option<V, T>(
  state: &Shared,
  env: RawEnv,
  value: Option<V>,
  parse: impl FnOnce(V) -> Option<T>,
  message: &str,
) -> Result<Option<T>> {
  match value {
    None => Ok(None),
    Some(v) => parse(v)
      .map(Some)
      .ok_or_else(|| invalid(state, env, message)),
  }
}

/// 2^53 - 1, JavaScript's `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// `n` when it is a whole number within `min..=max`.
fn whole_number(n: f64, min: f64, max: f64) -> Option<u64> {
  (n.is_finite() && n.fract() == 0.0 && n >= min && n <= max).then_some(n as u64)
}

/// Frames one event: checks the fields (a TypeError before anything is
/// written), then `event:`/`id:`/`retry:` lines and the data lines.
fn build_frame(
  state: &Shared,
  env: RawEnv,
  data: &str,
  options: Option<&EventOptions>,
) -> Result<Vec<u8>> {
  let Some(options) = options else {
    return Ok(frame::data_frame(data));
  };
  let retry = parse_option(
    state,
    env,
    options.retry,
    |r| whole_number(r, 0.0, MAX_SAFE_INTEGER),
    "options.retry must be a non-negative integer (milliseconds)",
  )?;
  let fields = EventFields {
    event: options.event.as_deref(),
    id: options.id.as_deref(),
    retry,
  };
  fields
    .validate()
    .map_err(|e| invalid(state, env, &format!("options.{e}")))?;
  let mut out = Vec::with_capacity(data.len() + 32);
  frame::push_event(&mut out, &fields, data);
  Ok(out)
}

#[napi]
impl NativeHub {
  /// `typeError` is the constructor bad-input errors are made with (pass the
  /// caller's `TypeError`). `writeHook` and `endHook` replace `res.write` and
  /// `res.end` on responses handed to the socket writer; without them the
  /// hub uses the stream transport only. `lifecycle(kind, id, reason)` is
  /// called when a connection leaves or is found slow.
  #[napi(constructor)]
  pub fn new(
    env: Env,
    type_error: Option<Function<'_>>,
    write_hook: Option<Function<'_>>,
    end_hook: Option<Function<'_>>,
    lifecycle: Option<Function<'_>>,
  ) -> Result<Self> {
    let raw = env.raw();
    let state: Shared = Rc::new(RefCell::new(HubState {
      registry: Registry::new(),
      refs: Refs::default(),
      on_close: None,
      key_symbol: None,
      type_error: None,
      hooks: None,
      mode: TransportMode::Auto,
      writer_config: WriterConfig::default(),
      writer: None,
      fd_budget: crate::writer::fd_budget(),
      next_wire: 1,
      wires: HashMap::new(),
      pending_ends: HashMap::new(),
      history: History::new(0),
      last_broadcast: Instant::now(),
      lifecycle: None,
      stream_frames: 0,
      stream_bytes: 0,
      stream_dropped: 0,
      stream_slow_disconnects: 0,
      replays: 0,
      resets: 0,
    }));
    let listener_state = state.clone();
    let on_close =
      env.create_function_from_closure::<(), (), _>("sseHelperOnClose", move |ctx| {
        let env = ctx.env.raw();
        let res = ctx.this::<Unknown>()?.raw();
        if let Some(key) = key_of(&listener_state, env, res) {
          remove_conn(&listener_state, env, key, Removal::Forget, Reason::Closed);
        }
        Ok(())
      })?;
    let symbol = js::new_symbol(raw, "sse-helper-native connection")?;
    {
      let mut s = state.borrow_mut();
      let s = &mut *s;
      s.on_close = Some(s.refs.hold(raw, on_close.raw())?);
      s.key_symbol = Some(s.refs.hold(raw, symbol)?);
      s.type_error = type_error.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      s.lifecycle = lifecycle.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      if let (Some(write), Some(end)) = (write_hook, end_hook) {
        s.hooks = Some((s.refs.hold(raw, write.raw())?, s.refs.hold(raw, end.raw())?));
      }
    }
    Ok(NativeHub { state })
  }

  /// Registers `res` under `id` (generated when absent) and returns the id.
  /// A response already registered is moved to `id` and its meta replaced.
  /// `fd` is the socket's fd when the JS surface found the connection
  /// eligible for the socket writer (plain HTTP/1.1 over TCP, Node's own
  /// `write`/`end`, nothing pending), else -1. With history on, a
  /// `lastEventId` gets the events missed since, before any live event.
  #[napi]
  pub fn register(
    &self,
    env: Env,
    res: Unknown,
    id: Option<String>,
    meta: Option<Unknown>,
    fd: Option<i32>,
    last_event_id: Option<String>,
  ) -> Result<String> {
    let raw = env.raw();
    let res = res.raw();
    let write = response_write(&self.state, raw, res, "res")?;
    let id = match id {
      Some(id) => {
        registry::validate_client_id(&id)
          .map_err(|e| invalid(&self.state, raw, &format!("id {e}")))?;
        id
      }
      None => registry::generate_client_id(),
    };
    let meta = meta.map(|m| m.raw()).filter(|m| {
      !matches!(
        js::type_of(raw, *m),
        napi::sys::ValueType::napi_undefined | napi::sys::ValueType::napi_null
      )
    });

    if let Some(key) = key_of(&self.state, raw, res) {
      let mut s = self.state.borrow_mut();
      let s = &mut *s;
      let new_meta = meta.map(|m| s.refs.hold(raw, m)).transpose()?;
      s.registry.rename(key, &id);
      let old_meta = s
        .registry
        .get_mut(key)
        .and_then(|e| std::mem::replace(&mut e.handle.meta, new_meta));
      if let Some(old) = old_meta {
        s.refs.release(raw, old);
      }
      return Ok(id);
    }

    // A response that is already over is not registered: no `close` event
    // would ever come to remove it.
    if js::get_truthy(raw, res, c"destroyed")
      || js::get_truthy(raw, res, c"writableEnded")
      || js::get_truthy(raw, res, c"closed")
    {
      return Ok(id);
    }

    let socket = match fd {
      Some(fd) if fd >= 0 && self.state.borrow().socket_slot_free() => socket_handoff(fd),
      _ => None,
    };
    if socket.is_some() {
      ensure_writer(&self.state, &env)?;
    }

    let (key, listener, hooks) = {
      let mut s = self.state.borrow_mut();
      let s = &mut *s;
      let (transport, socket) = match (socket, s.hooks.is_some(), s.writer.is_some()) {
        (Some(fd), true, true) => {
          let wire = s.next_wire;
          s.next_wire += 1;
          (Transport::Socket { wire }, Some((wire, fd)))
        }
        _ => (Transport::stream(raw, &mut s.refs, res, write)?, None),
      };
      let conn = Conn {
        res: s.refs.hold(raw, res)?,
        transport,
        meta: meta.map(|m| s.refs.hold(raw, m)).transpose()?,
      };
      let key = s.registry.insert(&id, conn, Instant::now());
      let handed_off = socket.is_some();
      if let Some((wire, fd)) = socket {
        s.wires.insert(wire, key);
        if let Some(writer) = &s.writer {
          writer.add(wire, fd);
        }
      }
      if let Some(symbol) = s.key_symbol.as_ref() {
        js::set_symbol_keyed(raw, res, symbol.value(raw)?, key.to_f64())?;
      }
      let listener = s.on_close.as_ref().map(|l| l.value(raw)).transpose()?;
      let hooks = match (&s.hooks, handed_off) {
        (Some((w, e)), true) => Some((w.value(raw)?, e.value(raw)?)),
        _ => None,
      };
      (key, listener, hooks)
    };
    if let Some((write_hook, end_hook)) = hooks {
      js::set_named(raw, res, c"write", write_hook)?;
      js::set_named(raw, res, c"end", end_hook)?;
    }
    if let Some(listener) = listener {
      let name = js::string(raw, "close")?;
      let on = js::get(raw, res, c"on")?;
      if js::call(raw, res, on, &[name, listener]).is_err() {
        remove_conn(&self.state, raw, key, Removal::Forget, Reason::Error);
        return Err(invalid(&self.state, raw, "res.on('close') threw"));
      }
    }
    if let Some(last_event_id) = last_event_id {
      self.replay(raw, key, &last_event_id);
    }
    Ok(id)
  }

  /// True when `res` is registered with this hub.
  #[napi]
  pub fn has(&self, env: Env, res: Unknown) -> bool {
    key_of(&self.state, env.raw(), res.raw()).is_some()
  }

  /// Unregisters `res`, detaches its listener and ends it if still open.
  #[napi]
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
      Some(key) => remove_conn(&self.state, raw, key, Removal::End, Reason::Removed),
      None => false,
    })
  }

  /// Unregisters and ends every connection under `id`.
  #[napi]
  pub fn unregister_id(&self, env: Env, id: String) -> bool {
    let keys = self.state.borrow().registry.keys_for_id(&id).to_vec();
    let mut removed = false;
    for key in keys {
      removed |= remove_conn(&self.state, env.raw(), key, Removal::End, Reason::Removed);
    }
    removed
  }

  /// Frames `data` once and writes it to every connection under `id`.
  /// True when at least one connection was written.
  #[napi]
  pub fn send_to(
    &self,
    env: Env,
    id: String,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<bool> {
    let raw = env.raw();
    let bytes = build_frame(&self.state, raw, &data, options.as_ref())?;
    let keys = self.state.borrow().registry.keys_for_id(&id).to_vec();
    if keys.is_empty() {
      return Ok(false);
    }
    Ok(self.fan_out(raw, Some(&keys), &OutFrame::new(&bytes)) > 0)
  }

  /// Writes one framed event to any response, registered or not.
  #[napi]
  pub fn send(
    &self,
    env: Env,
    res: Unknown,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<bool> {
    let raw = env.raw();
    let res = res.raw();
    let write = response_write(&self.state, raw, res, "res")?;
    let bytes = build_frame(&self.state, raw, &data, options.as_ref())?;
    Ok(self.write_to_response(raw, res, write, &bytes))
  }

  /// Writes a comment (`: text` per line) to `res`, to the connections
  /// under `id`, or to every connection when neither is given.
  #[napi]
  pub fn comment(
    &self,
    env: Env,
    res: Option<Unknown>,
    id: Option<String>,
    text: String,
  ) -> Result<u32> {
    let raw = env.raw();
    let mut bytes = Vec::with_capacity(text.len() + 4);
    frame::push_comment(&mut bytes, &text);
    bytes.push(b'\n');
    if let Some(res) = res {
      let res = res.raw();
      let write = response_write(&self.state, raw, res, "target")?;
      return Ok(u32::from(self.write_to_response(raw, res, write, &bytes)));
    }
    let keys = match id {
      Some(id) => self.state.borrow().registry.keys_for_id(&id).to_vec(),
      None => self.state.borrow().registry.keys(),
    };
    Ok(self.fan_out(raw, Some(&keys), &OutFrame::new(&bytes)))
  }

  /// Frames `data` once and writes it to every connection (or the members
  /// of `channel`, or those whose meta passes `filter`); returns how many
  /// were written (socket connections count once their frame is queued).
  /// With history on, a broadcast to everyone gets the next id (unless
  /// `options.id` gives one) and is kept for replay.
  #[napi]
  pub fn broadcast(
    &self,
    env: Env,
    data: String,
    options: Option<EventOptions>,
    channel: Option<String>,
    filter: Option<Function<'_, (Unknown<'_>, String), Unknown<'_>>>,
  ) -> Result<u32> {
    let raw = env.raw();
    let to_everyone = channel.is_none() && filter.is_none();
    let recording = to_everyone && self.state.borrow().history.capacity() > 0;
    let mut options = options;
    if recording {
      let given = options.as_ref().and_then(|o| o.id.clone());
      let id = match given {
        Some(id) => id,
        None => self.state.borrow_mut().history.next_id(),
      };
      let o = options.get_or_insert(EventOptions {
        event: None,
        id: None,
        retry: None,
      });
      o.id = Some(id);
    }
    let bytes = build_frame(&self.state, raw, &data, options.as_ref())?;
    if let Some(channel) = &channel {
      registry::validate_channel(channel)
        .map_err(|e| invalid(&self.state, raw, &format!("options.channel {e}")))?;
    }
    let members = channel.map(|c| self.state.borrow().registry.members(&c).to_vec());
    let keys = match (members, &filter) {
      (members, Some(filter)) => Some(self.filtered_keys(raw, filter, members.as_deref())?),
      (members, None) => members,
    };
    if recording {
      let id = options
        .as_ref()
        .and_then(|o| o.id.as_deref())
        .unwrap_or_default();
      self
        .state
        .borrow_mut()
        .history
        .record(id, Arc::from(bytes.as_slice()));
    }
    if to_everyone {
      self.state.borrow_mut().last_broadcast = Instant::now();
    }
    Ok(self.fan_out(raw, keys.as_deref(), &OutFrame::new(&bytes)))
  }

  /// Broadcasts, then ends and unregisters every connection.
  #[napi]
  pub fn broadcast_and_close(
    &self,
    env: Env,
    data: String,
    options: Option<EventOptions>,
  ) -> Result<u32> {
    let written = self.broadcast(env, data, options, None, None)?;
    self.close_all(env);
    Ok(written)
  }

  /// Ends and unregisters every connection; returns how many there were.
  #[napi]
  pub fn close_all(&self, env: Env) -> u32 {
    let keys = self.state.borrow().registry.keys();
    let mut closed = 0;
    for key in keys {
      closed += u32::from(remove_conn(
        &self.state,
        env.raw(),
        key,
        Removal::End,
        Reason::Removed,
      ));
    }
    closed
  }

  /// Adds `res` (or every connection under `id`) to `channel`, or takes
  /// them out when `member` is false; returns how many changed.
  #[napi]
  pub fn set_membership(
    &self,
    env: Env,
    res: Option<Unknown>,
    id: Option<String>,
    channel: String,
    member: bool,
  ) -> Result<u32> {
    let keys = self.targets(env.raw(), res, id, &channel)?;
    let mut s = self.state.borrow_mut();
    let changed = keys.into_iter().filter(|k| match member {
      true => s.registry.join(*k, &channel),
      false => s.registry.leave(*k, &channel),
    });
    Ok(changed.count() as u32)
  }

  /// Channels `res` is a member of.
  #[napi]
  pub fn channels_of(&self, env: Env, res: Unknown) -> Vec<String> {
    let Some(key) = key_of(&self.state, env.raw(), res.raw()) else {
      return Vec::new();
    };
    let s = self.state.borrow();
    s.registry
      .get(key)
      .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
      .unwrap_or_default()
  }

  /// Writes a heartbeat comment to every connection nothing was sent to for
  /// `idle_ms`; returns how many.
  #[napi]
  pub fn heartbeat(&self, env: Env, idle_ms: f64) -> u32 {
    let now = Instant::now();
    let idle = Duration::from_secs_f64(idle_ms.max(0.0) / 1000.0);
    let keys: Vec<ConnKey> = {
      let s = self.state.borrow();
      if now.saturating_duration_since(s.last_broadcast) < idle {
        return 0;
      }
      s.registry
        .iter()
        .filter(|e| now.saturating_duration_since(e.last_sent) >= idle)
        .map(|e| e.key)
        .collect()
    };
    if keys.is_empty() {
      return 0;
    }
    self.fan_out(env.raw(), Some(&keys), &OutFrame::new(b": heartbeat\n\n"))
  }

  /// Registered connections.
  #[napi]
  pub fn count(&self) -> u32 {
    self.state.borrow().registry.len() as u32
  }

  /// Removes connections that ended, errored or were destroyed, and ends and
  /// removes those connected for longer than `max_age_ms`.
  #[napi]
  pub fn cleanup_stale(&self, env: Env, max_age_ms: f64) -> Result<u32> {
    let raw = env.raw();
    if !(max_age_ms.is_finite() && max_age_ms >= 0.0) {
      return Err(invalid(
        &self.state,
        raw,
        "maxAgeMs must be a non-negative finite number of milliseconds",
      ));
    }
    let now = Instant::now();
    let max_age = Duration::from_secs_f64(max_age_ms / 1000.0);
    let candidates: Vec<(ConnKey, bool, RawValue)> = {
      let s = self.state.borrow();
      let mut out = Vec::with_capacity(s.registry.len());
      for entry in s.registry.iter() {
        let too_old = now.saturating_duration_since(entry.connected_at) > max_age;
        out.push((entry.key, too_old, entry.handle.res.value(raw)?));
      }
      out
    };
    let mut removed = 0;
    for (key, too_old, res) in candidates {
      let dead = js::get_truthy(raw, res, c"writableEnded")
        || js::get_truthy(raw, res, c"destroyed")
        || js::get_truthy(raw, res, c"errored");
      if (dead || too_old) && remove_conn(&self.state, raw, key, Removal::End, Reason::Removed) {
        removed += 1;
      }
    }
    Ok(removed)
  }

  /// Writes raw bytes the app passed to `res.write` on a socket-transport
  /// response, as one HTTP chunk, in order with the helper's frames.
  #[napi]
  pub fn write_raw(&self, env: Env, res: Unknown, chunk: &[u8]) -> bool {
    let raw = env.raw();
    let Some(key) = key_of(&self.state, raw, res.raw()) else {
      return false;
    };
    if chunk.is_empty() {
      // A zero-size chunk would end the chunked body.
      return true;
    }
    let s = self.state.borrow();
    match (
      s.registry.get(key).and_then(|e| e.handle.transport.wire()),
      &s.writer,
    ) {
      (Some(wire), Some(writer)) => {
        writer.send(vec![wire], frame::http_chunk(chunk).into());
        true
      }
      _ => false,
    }
  }

  /// Sets the transport for new connections, the slow-client bound and
  /// policy (both transports) and the replay history size.
  #[napi]
  pub fn configure(
    &self,
    env: Env,
    transport: Option<String>,
    max_buffered_bytes: Option<f64>,
    slow_client_policy: Option<String>,
    history_size: Option<f64>,
  ) -> Result<()> {
    let raw = env.raw();
    let state = &self.state;
    let mode = parse_option(
      state,
      raw,
      transport.as_deref(),
      |t| match t {
        "auto" => Some(TransportMode::Auto),
        "stream" => Some(TransportMode::Stream),
        _ => None,
      },
      "options.transport must be 'auto' or 'stream'",
    )?;
    let bound = parse_option(
      state,
      raw,
      max_buffered_bytes,
      |b| whole_number(b, 1.0, 9.0e15),
      "options.maxBufferedBytes must be a positive integer",
    )?;
    let policy = parse_option(
      state,
      raw,
      slow_client_policy.as_deref(),
      |p| match p {
        "disconnect" => Some(SlowPolicy::Disconnect),
        "drop" => Some(SlowPolicy::Drop),
        _ => None,
      },
      "options.slowClientPolicy must be 'disconnect' or 'drop'",
    )?;
    let history = parse_option(
      state,
      raw,
      history_size,
      |n| whole_number(n, 0.0, 1.0e6),
      "options.historySize must be an integer from 0 to 1000000",
    )?;
    let mut s = self.state.borrow_mut();
    if let Some(mode) = mode {
      s.mode = mode;
    }
    if let Some(bound) = bound {
      s.writer_config.max_buffered_bytes = bound as usize;
    }
    if let Some(policy) = policy {
      s.writer_config.slow_policy = policy;
    }
    if let Some(size) = history {
      s.history.set_capacity(size as usize);
    }
    if let Some(writer) = &s.writer {
      writer.configure(s.writer_config);
    }
    Ok(())
  }

  /// Counters and gauges at this instant.
  #[napi]
  pub fn stats(&self) -> NativeStats {
    let s = self.state.borrow();
    let socket = s.socket_connections();
    let writer = s.writer.as_ref().map(SocketWriter::stats);
    let load = |f: fn(&crate::writer::WriterStats) -> u64| writer.map_or(0, f) as f64;
    NativeStats {
      clients: s.registry.len() as u32,
      stream_connections: (s.registry.len() - socket) as u32,
      socket_connections: socket as u32,
      frames_sent: s.stream_frames as f64 + load(|w| w.frames_written.load(Ordering::Relaxed)),
      bytes_sent: s.stream_bytes as f64 + load(|w| w.payload_bytes.load(Ordering::Relaxed)),
      frames_dropped: s.stream_dropped as f64 + load(|w| w.frames_dropped.load(Ordering::Relaxed)),
      channels: s.registry.channel_count() as u32,
      replays: s.replays as f64,
      resets: s.resets as f64,
      slow_disconnects: s.stream_slow_disconnects as f64
        + load(|w| w.slow_disconnects.load(Ordering::Relaxed)),
      queued_bytes: load(|w| w.queued_bytes.load(Ordering::Relaxed) as u64),
      socket_capacity: match (s.mode, s.fd_budget) {
        (TransportMode::Stream, _) => 0.0,
        (_, usize::MAX) => f64::INFINITY,
        (_, budget) => budget as f64,
      },
    }
  }

  /// napi references this hub holds right now (responses, their `write`,
  /// metas, its own listener, symbol and hooks). For leak tests.
  #[napi(getter)]
  pub fn held_references(&self) -> u32 {
    self.state.borrow().refs.live() as u32
  }
}

impl NativeHub {
  /// Sends `bytes` to one response: through the registry when registered
  /// (so its transport and policy apply), else straight to its `write`.
  fn write_to_response(&self, env: RawEnv, res: RawValue, write: RawValue, bytes: &[u8]) -> bool {
    if let Some(key) = key_of(&self.state, env, res) {
      return self.fan_out(env, Some(&[key]), &OutFrame::new(bytes)) == 1;
    }
    if js::get_truthy(env, res, c"destroyed") {
      return false;
    }
    matches!(
      transport::write_stream(env, res, write, None, &OutFrame::new(bytes)),
      WriteOutcome::Written | WriteOutcome::Buffered
    )
  }

  /// The connections a channel operation applies to: `res`, or all under `id`.
  fn targets(
    &self,
    env: RawEnv,
    res: Option<Unknown>,
    id: Option<String>,
    channel: &str,
  ) -> Result<Vec<ConnKey>> {
    registry::validate_channel(channel)
      .map_err(|e| invalid(&self.state, env, &format!("channel {e}")))?;
    Ok(match (res, id) {
      (Some(res), _) => key_of(&self.state, env, res.raw()).into_iter().collect(),
      (None, Some(id)) => self.state.borrow().registry.keys_for_id(&id).to_vec(),
      (None, None) => Vec::new(),
    })
  }

  /// Keys (among `within`, or all) whose `filter(meta, id)` is truthy. Runs
  /// every filter before anything is written, so a throwing filter writes
  /// nothing.
  fn filtered_keys(
    &self,
    env: RawEnv,
    filter: &Function<'_, (Unknown<'_>, String), Unknown<'_>>,
    within: Option<&[ConnKey]>,
  ) -> Result<Vec<ConnKey>> {
    let candidates: Vec<(ConnKey, RawValue, Arc<str>)> = {
      let s = self.state.borrow();
      let mut undefined = std::ptr::null_mut();
      unsafe { napi::sys::napi_get_undefined(env, &mut undefined) };
      let entries: Box<dyn Iterator<Item = &registry::Entry<Conn>>> = match within {
        Some(keys) => Box::new(keys.iter().filter_map(|k| s.registry.get(*k))),
        None => Box::new(s.registry.iter()),
      };
      entries
        .map(|e| {
          let meta = e
            .handle
            .meta
            .as_ref()
            .and_then(|m| m.value(env).ok())
            .unwrap_or(undefined);
          (e.key, meta, e.id.clone())
        })
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
          unsafe { napi::sys::napi_throw(env, exception) };
          return Err(Error::new(Status::PendingException, "filter threw"));
        }
      }
    }
    Ok(keys)
  }

  /// Sends what `key` missed since `last_event_id` (or an `event: reset`
  /// when that id is no longer in history), before any live event.
  fn replay(&self, env: RawEnv, key: ConnKey, last_event_id: &str) {
    let bytes = {
      let mut s = self.state.borrow_mut();
      if s.history.capacity() == 0 {
        return;
      }
      let bytes = match s.history.since(last_event_id) {
        Replay::Missed(frames) => {
          let mut out = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
          for f in frames {
            out.extend_from_slice(f);
          }
          Some(out)
        }
        Replay::Reset => None,
      };
      match bytes {
        Some(out) => {
          if !out.is_empty() {
            s.replays += 1;
          }
          out
        }
        None => {
          s.resets += 1;
          frame::reset_frame(s.history.newest_id())
        }
      }
    };
    if !bytes.is_empty() {
      self.fan_out(env, Some(&[key]), &OutFrame::new(&bytes));
    }
  }

  /// Writes one frame to every connection in `keys` (all when `None`):
  /// stream connections one `res.write` each, socket connections one message
  /// to the writer for all of them. Applies the slow-client policy to
  /// stream connections Node is buffering for, and removes those that had
  /// ended or whose write threw. Returns how many were written or queued.
  fn fan_out(&self, env: RawEnv, keys: Option<&[ConnKey]>, out: &OutFrame<'_>) -> u32 {
    struct Target {
      key: ConnKey,
      res: RawValue,
      write: RawValue,
      flush: Option<RawValue>,
      congested: bool,
    }
    // Resolve every handle first: a write runs JS, which may register or
    // remove clients, so no registry borrow is held across it.
    let mut streams: Vec<Target> = Vec::new();
    let mut wires: Vec<WireId> = Vec::new();
    let socket_count;
    let (bound, policy) = {
      let mut s = self.state.borrow_mut();
      let now = keys.map(|_| Instant::now());
      let mut visit = |entry: &registry::Entry<Conn>| match &entry.handle.transport {
        Transport::Stream {
          write,
          flush,
          congested,
        } => {
          if let (Ok(res), Ok(write)) = (entry.handle.res.value(env), write.value(env)) {
            let flush = flush.as_ref().and_then(|f| f.value(env).ok());
            streams.push(Target {
              key: entry.key,
              res,
              write,
              flush,
              congested: *congested,
            });
          }
        }
        // A broadcast to everyone reaches them with one message, no list.
        Transport::Socket { wire } if keys.is_some() => wires.push(*wire),
        Transport::Socket { .. } => {}
      };
      match keys {
        Some(keys) => {
          for key in keys {
            if let Some(entry) = s.registry.get_mut(*key) {
              if let Some(now) = now {
                entry.last_sent = now;
              }
              visit(entry);
            }
          }
        }
        None if s.socket_connections() == s.registry.len() => {}
        None => s.registry.iter().for_each(&mut visit),
      }
      socket_count = match keys {
        Some(_) => wires.len(),
        None => s.socket_connections(),
      };
      if socket_count > 0 {
        if let Some(writer) = &s.writer {
          match keys {
            Some(_) => writer.send(wires, out.http_chunk()),
            None => writer.broadcast(out.http_chunk()),
          }
        }
      }
      (
        s.writer_config.max_buffered_bytes as f64,
        s.writer_config.slow_policy,
      )
    };
    let mut written = 0u32;
    let mut dropped = 0u64;
    let mut dead = Vec::new();
    let mut slow = Vec::new();
    let mut congestion = Vec::new();
    for t in streams {
      if !self.state.borrow().registry.contains(t.key) {
        continue;
      }
      if t.congested {
        // Node has been buffering for this one: look at how much.
        let pending = transport::pending_bytes(env, t.res);
        if pending + out.len() as f64 > bound {
          match policy {
            SlowPolicy::Drop => dropped += 1,
            SlowPolicy::Disconnect => slow.push(t.key),
          }
          continue;
        }
        if pending == 0.0 {
          congestion.push((t.key, false));
        }
      }
      match transport::write_stream(env, t.res, t.write, t.flush, out) {
        WriteOutcome::Written => written += 1,
        WriteOutcome::Buffered => {
          written += 1;
          if !t.congested {
            congestion.push((t.key, true));
          }
        }
        WriteOutcome::Ended | WriteOutcome::Failed => dead.push(t.key),
      }
    }
    {
      let mut s = self.state.borrow_mut();
      s.stream_frames += u64::from(written);
      s.stream_bytes += u64::from(written) * out.len() as u64;
      s.stream_dropped += dropped;
      s.stream_slow_disconnects += slow.len() as u64;
      for (key, value) in congestion {
        if let Some(Transport::Stream { congested, .. }) =
          s.registry.get_mut(key).map(|e| &mut e.handle.transport)
        {
          *congested = value;
        }
      }
    }
    for key in slow {
      report(&self.state, env, "slow", key);
      remove_conn(&self.state, env, key, Removal::Destroy, Reason::Slow);
    }
    for key in dead {
      remove_conn(&self.state, env, key, Removal::End, Reason::Error);
    }
    written + socket_count as u32
  }
}

/// Calls the JS lifecycle callback: `kind` is `'slow'` or `'disconnect'`.
fn report(state: &Shared, env: RawEnv, kind: &str, key: ConnKey) {
  let id = state.borrow().registry.get(key).map(|e| e.id.clone());
  if let Some(id) = id {
    emit(state, env, kind, &id, kind);
  }
}

fn emit(state: &Shared, env: RawEnv, kind: &str, id: &str, reason: &str) {
  let Some(callback) = state
    .borrow()
    .lifecycle
    .as_ref()
    .and_then(|l| l.value(env).ok())
  else {
    return;
  };
  let args = [
    js::string(env, kind),
    js::string(env, id),
    js::string(env, reason),
  ];
  if let [Ok(kind), Ok(id), Ok(reason)] = args {
    let mut undefined = std::ptr::null_mut();
    unsafe { napi::sys::napi_get_undefined(env, &mut undefined) };
    // A throwing listener must not break the cleanup in progress.
    let _ = js::call(env, undefined, callback, &[kind, id, reason]);
  }
}

/// A duplicate of the connection's fd for the writer, or `None` when `fd` is
/// not a connected TCP socket (the connection then stays on the stream).
fn socket_handoff(fd: i32) -> Option<OwnedFd> {
  // SAFETY: `fd` is only borrowed for the duplication; Node keeps owning it.
  let dup = unsafe { BorrowedFd::borrow_raw(fd) }
    .try_clone_to_owned()
    .ok()?;
  let stream = TcpStream::from(dup);
  stream.peer_addr().ok()?;
  Some(OwnedFd::from(stream))
}

/// Starts the hub's writer thread on first use, with a thread-safe function
/// that brings its events back to the JS thread. The function is weak
/// (unref'd): the writer never keeps the process alive.
fn ensure_writer(state: &Shared, env: &Env) -> Result<()> {
  if state.borrow().writer.is_some() {
    return Ok(());
  }
  let events_state = state.clone();
  let on_events =
    env.create_function_from_closure::<(), (), _>("sseHelperWriterEvents", move |ctx| {
      process_writer_events(&events_state, ctx.env.raw());
      Ok(())
    })?;
  let tsfn: ThreadsafeFunction<(), (), (), Status, false, true> = on_events
    .build_threadsafe_function()
    .callee_handled::<false>()
    .weak::<true>()
    .build()?;
  let config = state.borrow().writer_config;
  let writer = SocketWriter::start(
    config,
    Box::new(move || {
      tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }),
  )
  .map_err(|e| Error::from_reason(format!("starting the socket writer failed: {e}")))?;
  state.borrow_mut().writer = Some(writer);
  Ok(())
}

fn process_writer_events(state: &Shared, env: RawEnv) {
  let events = match &state.borrow().writer {
    Some(writer) => writer.take_events(),
    None => return,
  };
  for event in events {
    match event {
      WriterEvent::Ended(wire) => finish_pending_end(state, env, wire, Removal::End),
      WriterEvent::Dead(wire, why) => {
        if state.borrow().pending_ends.contains_key(&wire) {
          finish_pending_end(state, env, wire, Removal::Destroy);
          continue;
        }
        let key = state.borrow().wires.get(&wire).copied();
        if let Some(key) = key {
          let reason = match why {
            DeadReason::Slow => {
              report(state, env, "slow", key);
              Reason::Slow
            }
            DeadReason::WriteError => Reason::Error,
          };
          remove_conn(state, env, key, Removal::Destroy, reason);
        }
      }
    }
  }
}

/// Node ends (or destroys) a socket-transport response once the writer has
/// let go of it.
fn finish_pending_end(state: &Shared, env: RawEnv, wire: WireId, removal: Removal) {
  let Some(res_ref) = state.borrow_mut().pending_ends.remove(&wire) else {
    return;
  };
  if let Ok(res) = res_ref.value(env) {
    restore_response(env, res);
    finish_response(env, res, removal);
  }
  state.borrow_mut().refs.release(env, res_ref);
}

/// Puts Node's own `write`/`end` back on a response leaving the socket writer.
fn restore_response(env: RawEnv, res: RawValue) {
  js::delete_named(env, res, "write");
  js::delete_named(env, res, "end");
}

fn finish_response(env: RawEnv, res: RawValue, removal: Removal) {
  match removal {
    Removal::Forget => {}
    Removal::End => {
      if !js::get_truthy(env, res, c"writableEnded") {
        js::call_method_quietly(env, res, c"end", &[]);
      }
    }
    Removal::Destroy => js::call_method_quietly(env, res, c"destroy", &[]),
  }
}

/// `res.write` if `res` looks like a writable response, else a TypeError
/// naming the argument.
fn response_write(state: &Shared, env: RawEnv, res: RawValue, arg: &str) -> Result<RawValue> {
  let message =
    || format!("{arg} must be an http.ServerResponse (an object with write, end and on)");
  if !js::is_object(env, res) {
    return Err(invalid_type(state, env, &message()));
  }
  let write = js::get(env, res, c"write")?;
  let looks_right = js::is_function(env, write)
    && js::is_function(env, js::get(env, res, c"end")?)
    && js::is_function(env, js::get(env, res, c"on")?);
  if !looks_right {
    return Err(invalid_type(state, env, &message()));
  }
  Ok(write)
}

fn key_of(state: &Shared, env: RawEnv, res: RawValue) -> Option<ConnKey> {
  let symbol = state.borrow().key_symbol.as_ref()?.value(env).ok()?;
  let key = ConnKey::from_f64(js::get_symbol_keyed(env, res, symbol)?)?;
  state.borrow().registry.contains(key).then_some(key)
}

/// Unregisters `key`: detaches the `close` listener, finishes the response
/// as `removal` says (for a socket connection, after the writer flushed what
/// it queued), releases every reference and reports the disconnect. False
/// if not registered.
fn remove_conn(
  state: &Shared,
  env: RawEnv,
  key: ConnKey,
  removal: Removal,
  reason: Reason,
) -> bool {
  let (entry, listener, deferred) = {
    let mut s = state.borrow_mut();
    let Some(entry) = s.registry.remove(key) else {
      return false;
    };
    let mut deferred = false;
    if let Some(wire) = entry.handle.transport.wire() {
      s.wires.remove(&wire);
      if let Some(writer) = &s.writer {
        match removal {
          Removal::End => {
            writer.end(wire);
            deferred = true;
          }
          Removal::Forget | Removal::Destroy => writer.remove(wire),
        }
      }
    }
    let listener = s.on_close.as_ref().and_then(|l| l.value(env).ok());
    (entry, listener, deferred)
  };
  let id = entry.id.clone();
  let Conn {
    res: res_ref,
    transport,
    meta,
  } = entry.handle;
  let wire = transport.wire();
  if let Ok(res) = res_ref.value(env) {
    if let (Some(listener), Ok(name)) = (listener, js::string(env, "close")) {
      js::call_method_quietly(env, res, c"removeListener", &[name, listener]);
    }
    // A deferred end happens once the writer has flushed its queue.
    if !deferred {
      if wire.is_some() {
        restore_response(env, res);
      }
      finish_response(env, res, removal);
    }
  }
  {
    let mut s = state.borrow_mut();
    match wire.filter(|_| deferred) {
      Some(wire) => {
        s.pending_ends.insert(wire, res_ref);
      }
      None => s.refs.release(env, res_ref),
    }
    transport.release(env, &mut s.refs);
    if let Some(meta) = meta {
      s.refs.release(env, meta);
    }
  }
  emit(state, env, "disconnect", &id, reason.as_str());
  true
}
