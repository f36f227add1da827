//! The `#[napi]` binding: the `NativeHub` class the JS surface wraps. It
//! converts values, holds the napi references, chooses each connection's
//! transport and maps errors; the bookkeeping lives in [`crate::registry`],
//! the framing in [`crate::frame`] and the socket writes in [`crate::writer`].
//!
//! Two rules keep it from aborting the process:
//! - No `RefCell` borrow of the hub's state is held while JS can run: a
//!   getter, a Proxy trap, a listener or a filter may call back into the
//!   hub. Each method reads what it needs from JS first, then borrows to
//!   decide and commit, then runs JS again with nothing borrowed.
//! - Every entry point catches panics (`catch_unwind`) and throws them as
//!   JS errors; the writer thread catches its own and reports its death.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::backpressure::{self, Admit, SlowPolicy};
use crate::frame::{self, EventFields};
use crate::history::{History, Replay};
use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::registry::{self, ConnKey, Registry};
use crate::transport::{self, OutFrame, Transport, WriteOutcome};
use crate::writer::{ConnGauge, DeadReason, SocketWriter, WireId, WriterConfig, WriterEvent};

/// What the hub keeps per connection.
#[derive(Debug)]
struct Conn {
  res: JsRef,
  transport: Transport,
  meta: Option<JsRef>,
}

/// A socket-transport response removed with a graceful end while the writer
/// still holds bytes for it. It keeps its `close` listener, so Node closing
/// the socket (the app's `res.destroy()`, the client leaving) releases it at
/// once; otherwise the writer's `Ended` (or its end timeout) finishes it.
#[derive(Debug)]
struct PendingEnd {
  key: ConnKey,
  res: JsRef,
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
  /// A registration that failed half-way: no event, the app never saw it.
  Rollback,
}

impl Reason {
  fn as_str(self) -> &'static str {
    match self {
      Reason::Closed => "close",
      Reason::Removed => "removed",
      Reason::Error => "error",
      Reason::Slow => "slow",
      Reason::Rollback => "rollback",
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

/// Functions the JS surface installs on responses handed to the socket
/// writer, and on responses the hub has ended.
struct Hooks {
  /// Replaces `res.write` on a socket-transport response.
  write: JsRef,
  /// Replaces `res.end` on a socket-transport response.
  end: JsRef,
  /// Replaces `res.destroy` and `res.socket.destroy` on a socket-transport
  /// response, so the writer forgets it before anything else is sent.
  destroy: JsRef,
  socket_destroy: JsRef,
  /// Replaces `res.write` on a response the hub ended: returns false and
  /// never makes Node emit `'error'`.
  write_after_end: JsRef,
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
  hooks: Option<Hooks>,
  mode: TransportMode,
  writer_config: WriterConfig,
  /// Started on the first socket hand-off.
  writer: Option<SocketWriter>,
  /// The event queue of a writer told to stop, until it reports `Stopped`.
  retired_events: Option<Arc<std::sync::Mutex<Vec<WriterEvent>>>>,
  /// Set when the writer thread died: later connections use the stream.
  writer_died: bool,
  /// Most connections the writer may hold (see [`crate::writer::fd_budget`]).
  fd_budget: usize,
  next_wire: WireId,
  wires: HashMap<WireId, ConnKey>,
  pending_ends: HashMap<WireId, PendingEnd>,
  /// The wire of each pending end, by the key its response still carries.
  ending_keys: HashMap<ConnKey, WireId>,
  history: History,
  /// When the last broadcast to everyone went out: heartbeats only go to
  /// connections idle since both this and their own last send.
  last_broadcast: Instant,
  /// `lifecycle(kind, id, reason)` in JS, for the hub's events.
  lifecycle: Option<JsRef>,
  /// Responses in the middle of `register`, so a getter that registers the
  /// same response again is refused instead of registering it twice.
  registering: Vec<RawValue>,
  /// `close()` was called: nothing new is registered, and once the last
  /// end is done the writer stops and `closed` is reported.
  closing: bool,
  /// The JS object was garbage-collected: once nothing is registered or
  /// pending, the hub lets go of everything it holds.
  orphaned: bool,
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
    self.mode == TransportMode::Auto
      && !self.writer_died
      && !self.closing
      && self.wires.len() + self.pending_ends.len() < self.fd_budget
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
  /// (flushing what it holds first); their responses are ended from the
  /// writer's callback, a normal JS turn. Stream connections stay until
  /// their `close` event, which still cleans up. Once nothing is left the
  /// hub releases its references and the writer thread exits by itself.
  fn finalize(self, env: Env) -> Result<()> {
    let mut s = self.state.borrow_mut();
    let s = &mut *s;
    s.orphaned = true;
    let wires: Vec<(WireId, ConnKey)> = s.wires.iter().map(|(w, k)| (*w, *k)).collect();
    for (wire, key) in wires {
      let Some(entry) = s.registry.remove(key) else {
        continue;
      };
      s.wires.remove(&wire);
      let Conn {
        res,
        transport,
        meta,
      } = entry.handle;
      match &s.writer {
        Some(writer) => {
          writer.end(wire);
          s.ending_keys.insert(key, wire);
          s.pending_ends.insert(wire, PendingEnd { key, res });
        }
        None => s.refs.release(env.raw(), res),
      }
      transport.release(env.raw(), &mut s.refs);
      if let Some(meta) = meta {
        s.refs.release(env.raw(), meta);
      }
    }
    release_if_orphaned(s, env.raw());
    Ok(())
  }
}

/// An orphaned hub with nothing left lets go of its own references and its
/// writer (whose thread then exits by itself; nobody joins it).
fn release_if_orphaned(s: &mut HubState, env: RawEnv) {
  if !s.orphaned || !s.registry.is_empty() || !s.pending_ends.is_empty() {
    return;
  }
  if let Some(writer) = s.writer.take() {
    writer.shutdown();
  }
  let hooks = s.hooks.take().map(|h| {
    [
      h.write,
      h.end,
      h.destroy,
      h.socket_destroy,
      h.write_after_end,
    ]
  });
  let own = [
    s.on_close.take(),
    s.key_symbol.take(),
    s.type_error.take(),
    s.lifecycle.take(),
  ];
  for reference in own.into_iter().flatten().chain(hooks.into_iter().flatten()) {
    s.refs.release(env, reference);
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

/// 2^31 - 1: the longest delay Node's timers take (longer ones fire at once).
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// `n` when it is a whole number within `min..=max`.
fn whole_number(n: f64, min: f64, max: f64) -> Option<u64> {
  (n.is_finite() && n.fract() == 0.0 && n >= min && n <= max).then_some(n as u64)
}

/// Milliseconds from JS as a `Duration`, saturating: any huge value (up to
/// `Number.MAX_VALUE`) means "longer than anything", never a panic.
fn millis(ms: f64) -> Duration {
  Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).unwrap_or(Duration::MAX)
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

/// Where the JS surface says a connection's socket is, for checking that
/// the fd it found really is that socket.
#[napi(object)]
pub struct SocketInfo {
  /// The socket's fd (`res.socket._handle.fd`).
  pub fd: i32,
  /// `res.socket.remoteAddress`.
  pub remote_address: String,
  /// `res.socket.remotePort`.
  pub remote_port: u32,
  /// `res.socket.localPort`.
  pub local_port: u32,
}

#[napi]
impl NativeHub {
  /// `typeError` is the constructor bad-input errors are made with (pass the
  /// caller's `TypeError`). `hooks` holds `write`, `end`, `destroy`,
  /// `socketDestroy` (installed on responses handed to the socket writer)
  /// and `writeAfterEnd` (installed on responses the hub ended); without
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
      retired_events: None,
      writer_died: false,
      fd_budget: crate::writer::fd_budget(),
      next_wire: 1,
      wires: HashMap::new(),
      pending_ends: HashMap::new(),
      ending_keys: HashMap::new(),
      history: History::new(0),
      last_broadcast: Instant::now(),
      lifecycle: None,
      registering: Vec::new(),
      closing: false,
      orphaned: false,
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
        guard_panics(|| {
          forget_response(&listener_state, env, res);
          Ok(())
        })
      })?;
    let symbol = js::new_symbol(raw, "sse-helper-native connection")?;
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
    ];
    {
      let mut s = state.borrow_mut();
      let s = &mut *s;
      s.on_close = Some(s.refs.hold(raw, on_close.raw())?);
      s.key_symbol = Some(s.refs.hold(raw, symbol)?);
      s.type_error = type_error.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      s.lifecycle = lifecycle.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
      if let [Some(write), Some(end), Some(destroy), Some(socket_destroy), Some(write_after_end)] =
        hook_values
      {
        s.hooks = Some(Hooks {
          write: s.refs.hold(raw, write)?,
          end: s.refs.hold(raw, end)?,
          destroy: s.refs.hold(raw, destroy)?,
          socket_destroy: s.refs.hold(raw, socket_destroy)?,
          write_after_end: s.refs.hold(raw, write_after_end)?,
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
    last_event_id: Option<String>,
  ) -> Result<String> {
    let raw = env.raw();
    let res = res.raw();
    let state = &self.state;
    if state.borrow().closing {
      return Err(closed_error(raw));
    }
    let write = response_write(state, raw, res, "res")?;
    let id = match id {
      Some(id) => {
        registry::validate_client_id(&id).map_err(|e| invalid(state, raw, &format!("id {e}")))?;
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
    let _registering = Registering::enter(state, raw, res)?;

    if let Some(key) = key_of(state, raw, res) {
      let mut s = state.borrow_mut();
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

    // Everything read from JS before anything is committed.
    let flush = js::get(raw, res, c"flush")
      .ok()
      .filter(|f| js::is_function(raw, *f));
    js::clear_exception(raw);
    let on = js::get(raw, res, c"on")?;
    let socket = match socket {
      Some(info) if state.borrow().socket_slot_free() => socket_handoff(&info),
      _ => None,
    };
    if socket.is_some() {
      ensure_writer(state, &env)?;
    }

    // Commit: no JS runs while the state is borrowed.
    let (key, wire, listener, symbol) = {
      let mut s = state.borrow_mut();
      let s = &mut *s;
      let socket = socket.filter(|_| s.hooks.is_some() && s.writer.is_some());
      let (transport, handoff) = match socket {
        Some(fd) => {
          let wire = s.next_wire;
          s.next_wire += 1;
          let gauge = Arc::new(ConnGauge::default());
          (
            Transport::Socket {
              wire,
              gauge: gauge.clone(),
            },
            Some((wire, fd, gauge)),
          )
        }
        None => (Transport::stream(raw, &mut s.refs, write, flush)?, None),
      };
      let conn = Conn {
        res: s.refs.hold(raw, res)?,
        transport,
        meta: meta.map(|m| s.refs.hold(raw, m)).transpose()?,
      };
      let key = s.registry.insert(&id, conn, Instant::now());
      let wire = handoff.map(|(wire, fd, gauge)| {
        s.wires.insert(wire, key);
        if let Some(writer) = &s.writer {
          writer.add(wire, fd, gauge);
        }
        wire
      });
      let listener = s.on_close.as_ref().map(|l| l.value(raw)).transpose()?;
      let symbol = s.key_symbol.as_ref().map(|l| l.value(raw)).transpose()?;
      (key, wire, listener, symbol)
    };

    // Effects on `res`, each of which may run JS; undone on failure.
    let outcome = (|| -> Result<()> {
      if let Some(symbol) = symbol {
        js::set_symbol_keyed(raw, res, symbol, key.to_f64())?;
        // A frozen, sealed or non-extensible response (or a Proxy that
        // drops the write) would be registered but never found again.
        if js::get_symbol_keyed(raw, res, symbol) != Some(key.to_f64()) {
          return Err(invalid(
            state,
            raw,
            "res must be extensible: the helper keeps its key on the response",
          ));
        }
      }
      if let Some(listener) = listener {
        let name = js::string(raw, "close")?;
        if let Err(exception) = js::call(raw, res, on, &[name, listener]) {
          js::rethrow(raw, exception);
          return Err(Error::new(
            Status::PendingException,
            "res.on('close') threw",
          ));
        }
      }
      if wire.is_some() {
        install_socket_hooks(state, raw, res)?;
      }
      Ok(())
    })();
    if let Err(err) = outcome {
      // Keep the pending exception while undoing, then throw it again.
      let exception = js::clear_exception(raw);
      remove_conn(state, raw, key, Removal::Forget, Reason::Rollback);
      if let Some(symbol) = symbol {
        js::delete_keyed(raw, res, symbol);
      }
      if !exception.is_null() {
        js::rethrow(raw, exception);
      }
      return Err(err);
    }
    if let Some(last_event_id) = last_event_id {
      if state.borrow().registry.contains(key) {
        self.replay(raw, key, &last_event_id);
      }
    }
    Ok(id)
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
      Some(key) => remove_conn(&self.state, raw, key, Removal::End, Reason::Removed),
      None => false,
    })
  }

  /// Forgets `res` at once, before the app destroys it: the socket writer
  /// drops it (and anything queued) ahead of any later send, so a frame sent
  /// in the same tick never reaches a destroyed connection. False when `res`
  /// is neither registered nor ending.
  #[napi(catch_unwind)]
  pub fn forget(&self, env: Env, res: Unknown) -> bool {
    forget_response(&self.state, env.raw(), res.raw())
  }

  /// Unregisters and ends every connection under `id`.
  #[napi(catch_unwind)]
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
  #[napi(catch_unwind)]
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
    let write = response_write(&self.state, raw, res, "res")?;
    let bytes = build_frame(&self.state, raw, &data, options.as_ref())?;
    Ok(self.write_to_response(raw, res, write, &bytes))
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
    let out = if recording {
      // The history keeps the HTTP chunk the socket writer sends, so a
      // replay shares it instead of copying.
      let chunk: Arc<[u8]> = frame::http_chunk(&bytes).into();
      let id = options
        .as_ref()
        .and_then(|o| o.id.as_deref())
        .unwrap_or_default();
      self.state.borrow_mut().history.record(id, chunk.clone());
      OutFrame::with_chunk(&bytes, chunk)
    } else {
      OutFrame::new(&bytes)
    };
    if to_everyone {
      self.state.borrow_mut().last_broadcast = Instant::now();
    }
    Ok(self.fan_out(raw, keys.as_deref(), &out))
  }

  /// Broadcasts, then ends and unregisters every connection.
  #[napi(catch_unwind)]
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
  #[napi(catch_unwind)]
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

  /// Ends every connection (each after what is queued for it), refuses new
  /// ones and stops the writer thread once the last end is done; then calls
  /// `lifecycle('closed')`. Returns how many connections were ended.
  #[napi(catch_unwind)]
  pub fn close(&self, env: Env) -> u32 {
    self.state.borrow_mut().closing = true;
    let closed = self.close_all(env);
    finish_close_if_done(&self.state, env.raw());
    closed
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
    let keys = self.targets(env.raw(), res, id, &channel)?;
    let mut s = self.state.borrow_mut();
    let changed = keys.into_iter().filter(|k| match member {
      true => s.registry.join(*k, &channel),
      false => s.registry.leave(*k, &channel),
    });
    Ok(changed.count() as u32)
  }

  /// Channels `res` is a member of.
  #[napi(catch_unwind)]
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
  #[napi(catch_unwind)]
  pub fn heartbeat(&self, env: Env, idle_ms: f64) -> u32 {
    let now = Instant::now();
    let idle = millis(idle_ms);
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
  #[napi(catch_unwind)]
  pub fn count(&self) -> u32 {
    self.state.borrow().registry.len() as u32
  }

  /// Removes connections that ended, errored or were destroyed, and ends and
  /// removes those connected for longer than `max_age_ms` (any finite
  /// non-negative number; a huge one means "never").
  #[napi(catch_unwind)]
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
    let max_age = millis(max_age_ms);
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
  /// Returns 1 when the connection's backlog is still below `high_water_mark`
  /// (Node's `write` would return true), 0 when it is not (the writer emits
  /// `drain` on `res` once flushed), and -1 when `res` is no longer
  /// registered (nothing was written).
  #[napi(catch_unwind)]
  pub fn write_raw(&self, env: Env, res: Unknown, chunk: &[u8], high_water_mark: f64) -> i32 {
    let raw = env.raw();
    let Some(key) = key_of(&self.state, raw, res.raw()) else {
      return -1;
    };
    let s = self.state.borrow();
    let Some(Transport::Socket { wire, gauge }) = s.registry.get(key).map(|e| &e.handle.transport)
    else {
      return -1;
    };
    let Some(writer) = &s.writer else {
      return -1;
    };
    if !chunk.is_empty() {
      // A zero-size chunk would end the chunked body.
      let chunk: Arc<[u8]> = frame::http_chunk(chunk).into();
      gauge.submitted.fetch_add(chunk.len(), Ordering::AcqRel);
      writer.write(*wire, chunk);
    }
    if (gauge.backlog() as f64) < high_water_mark {
      return 1;
    }
    gauge.want_drain.store(true, Ordering::Release);
    // The writer may have flushed everything between the two reads; then
    // no `drain` would come, so answer as if below the mark.
    if gauge.backlog() == 0 && gauge.want_drain.swap(false, Ordering::AcqRel) {
      return 1;
    }
    0
  }

  /// Sets the transport for new connections, the slow-client bound and
  /// policy (both transports), the replay history size and how long an
  /// ended socket connection may take to flush.
  #[napi(catch_unwind)]
  pub fn configure(
    &self,
    env: Env,
    transport: Option<String>,
    max_buffered_bytes: Option<f64>,
    slow_client_policy: Option<String>,
    history_size: Option<f64>,
    end_timeout_ms: Option<f64>,
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
      |b| whole_number(b, 1.0, MAX_SAFE_INTEGER),
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
    let end_timeout = parse_option(
      state,
      raw,
      end_timeout_ms,
      |n| whole_number(n, 1.0, MAX_TIMER_MS),
      "options.endTimeoutMs must be an integer from 1 to 2147483647",
    )?;
    let mut s = self.state.borrow_mut();
    if let Some(mode) = mode {
      s.mode = mode;
    }
    if let Some(bound) = bound {
      s.writer_config.max_buffered_bytes = usize::try_from(bound).unwrap_or(usize::MAX);
    }
    if let Some(policy) = policy {
      s.writer_config.slow_policy = policy;
    }
    if let Some(size) = history {
      s.history.set_capacity(size as usize);
    }
    if let Some(ms) = end_timeout {
      s.writer_config.end_timeout = Duration::from_millis(ms);
    }
    if let Some(writer) = &s.writer {
      writer.configure(s.writer_config);
    }
    Ok(())
  }

  /// Counters and gauges at this instant.
  #[napi(catch_unwind)]
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
  #[napi(getter, catch_unwind)]
  pub fn held_references(&self) -> u32 {
    self.state.borrow().refs.live() as u32
  }

  /// Fault injection for tests: makes the socket writer thread panic, to
  /// check that its death is reported and its connections torn down.
  #[napi(catch_unwind)]
  pub fn crash_writer_for_test(&self) -> bool {
    match &self.state.borrow().writer {
      Some(writer) => {
        writer.crash();
        true
      }
      None => false,
    }
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
    let undefined = js::undefined(env)?;
    let candidates: Vec<(ConnKey, RawValue, Arc<str>)> = {
      let s = self.state.borrow();
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
          js::rethrow(env, exception);
          return Err(Error::new(Status::PendingException, "filter threw"));
        }
      }
    }
    Ok(keys)
  }

  /// Sends what `key` missed since `last_event_id`, before any live event,
  /// or an `event: reset` when that id is no longer in history or what it
  /// missed is more than `maxBufferedBytes` (a replay obeys the same bound
  /// as live events, so a reconnecting client cannot make the server queue
  /// more for it than a live one). Socket connections get the history's own
  /// chunks, shared; stream connections one buffer of at most the bound.
  fn replay(&self, env: RawEnv, key: ConnKey, last_event_id: &str) {
    enum Plan {
      Stream(Vec<u8>),
      Socket(WireId, Vec<Arc<[u8]>>),
    }
    let plan = {
      let mut s = self.state.borrow_mut();
      let s = &mut *s;
      if s.history.capacity() == 0 {
        return;
      }
      let wire = s.registry.get(key).and_then(|e| e.handle.transport.wire());
      let bound = s.writer_config.max_buffered_bytes;
      match s.history.since(last_event_id, bound) {
        Replay::Missed(events) if events.is_empty() => return,
        Replay::Missed(events) => {
          s.replays += 1;
          match wire {
            Some(wire) => Plan::Socket(wire, events.iter().map(|e| e.chunk().clone()).collect()),
            None => Plan::Stream(events.iter().flat_map(|e| e.frame()).copied().collect()),
          }
        }
        Replay::Reset => {
          s.resets += 1;
          Plan::Stream(frame::reset_frame(s.history.newest_id()))
        }
      }
    };
    match plan {
      Plan::Socket(wire, chunks) => {
        if let Some(writer) = &self.state.borrow().writer {
          writer.send_frames(vec![wire], chunks);
        }
      }
      Plan::Stream(bytes) => {
        self.fan_out(env, Some(&[key]), &OutFrame::new(&bytes));
      }
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
        Transport::Socket { wire, .. } if keys.is_some() => wires.push(*wire),
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
        s.writer_config.max_buffered_bytes,
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
        match backpressure::admit(pending, out.len(), bound, policy) {
          Admit::Queue => {}
          Admit::Drop => {
            dropped += 1;
            continue;
          }
          Admit::Disconnect => {
            slow.push(t.key);
            continue;
          }
        }
        if pending == 0 {
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
      for (key, value) in congestion {
        if let Some(Transport::Stream { congested, .. }) =
          s.registry.get_mut(key).map(|e| &mut e.handle.transport)
        {
          *congested = value;
        }
      }
    }
    for key in slow {
      if remove_conn(&self.state, env, key, Removal::Destroy, Reason::Slow) {
        self.state.borrow_mut().stream_slow_disconnects += 1;
      }
    }
    for key in dead {
      remove_conn(&self.state, env, key, Removal::End, Reason::Error);
    }
    written + socket_count as u32
  }
}

/// Runs `f`, turning a panic into a JS-visible error instead of letting it
/// unwind into Node-API (which aborts the process).
fn guard_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
  std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    .map_err(napi::bindgen_prelude::panic_to_error)
    .and_then(|r| r)
}

/// Marks `res` as being registered for the duration of `register`, and
/// refuses a nested registration of the same response (from a getter or a
/// Proxy trap it runs), which would otherwise register it twice.
struct Registering<'a> {
  state: &'a Shared,
}

impl<'a> Registering<'a> {
  fn enter(state: &'a Shared, env: RawEnv, res: RawValue) -> Result<Self> {
    let nested = state
      .borrow()
      .registering
      .iter()
      .any(|other| js::strict_equals(env, *other, res));
    if nested {
      return Err(Error::new(
        Status::InvalidArg,
        "addClient: res is already being registered (called again from inside its own registration)",
      ));
    }
    state.borrow_mut().registering.push(res);
    Ok(Self { state })
  }
}

impl Drop for Registering<'_> {
  fn drop(&mut self) {
    if let Ok(mut s) = self.state.try_borrow_mut() {
      s.registering.pop();
    }
  }
}

/// The error `addClient` throws once `close()` was called.
fn closed_error(env: RawEnv) -> Error {
  js::throw_error(env, c"ERR_SSE_CLOSED", "the SSE hub was closed");
  Error::new(Status::PendingException, "the SSE hub was closed")
}

/// Calls the JS lifecycle callback with up to two string arguments.
fn emit(state: &Shared, env: RawEnv, kind: &str, a: &str, b: &str) {
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
    js::string(env, a),
    js::string(env, b),
  ];
  if let ([Ok(kind), Ok(a), Ok(b)], Ok(undefined)) = (args, js::undefined(env)) {
    // A throwing listener must not break the cleanup in progress; the JS
    // side rethrows it on the next tick.
    let _ = js::call(env, undefined, callback, &[kind, a, b]);
  }
}

/// A duplicate of the connection's fd for the writer, or `None` when the fd
/// is not a connected TCP socket, or not the one `info` describes (the
/// connection then stays on the stream). The check matters: writing to
/// another connection's fd would hand one client another's data.
fn socket_handoff(info: &SocketInfo) -> Option<OwnedFd> {
  if info.fd < 0 {
    return None;
  }
  // SAFETY: `fd` is only borrowed for the duplication, during this call, in
  // which Node keeps it open (it belongs to a live socket the JS thread,
  // which we are on, owns); the duplicate is ours.
  let dup = unsafe { BorrowedFd::borrow_raw(info.fd) }
    .try_clone_to_owned()
    .ok()?;
  let stream = TcpStream::from(dup);
  let peer = stream.peer_addr().ok()?;
  let local = stream.local_addr().ok()?;
  let remote_ip: IpAddr = info.remote_address.parse().ok()?;
  let same = peer.ip().to_canonical() == remote_ip.to_canonical()
    && u32::from(peer.port()) == info.remote_port
    && u32::from(local.port()) == info.local_port;
  same.then(|| OwnedFd::from(stream))
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
      guard_panics(|| {
        process_writer_events(&events_state, ctx.env.raw());
        Ok(())
      })
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
  let events = {
    let s = state.borrow();
    match (&s.writer, &s.retired_events) {
      (Some(writer), _) => writer.take_events(),
      (None, Some(events)) => {
        std::mem::take(&mut *events.lock().unwrap_or_else(|e| e.into_inner()))
      }
      (None, None) => return,
    }
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
            DeadReason::Slow => Reason::Slow,
            DeadReason::WriteError | DeadReason::EndTimeout => Reason::Error,
          };
          remove_conn(state, env, key, Removal::Destroy, reason);
        }
      }
      WriterEvent::Drain(wire) => {
        let res = {
          let s = state.borrow();
          s.wires
            .get(&wire)
            .and_then(|key| s.registry.get(*key))
            .and_then(|e| e.handle.res.value(env).ok())
        };
        if let (Some(res), Ok(name)) = (res, js::string(env, "drain")) {
          js::call_method_quietly(env, res, c"emit", &[name]);
        }
      }
      WriterEvent::Stopped => {
        state.borrow_mut().retired_events = None;
        let closing = state.borrow().closing;
        if closing {
          emit(state, env, "closed", "", "");
        }
      }
      WriterEvent::Died => writer_died(state, env),
    }
  }
}

/// The writer thread panicked: its fds are closed and its queues gone.
/// Every socket connection and pending end is torn down through Node, new
/// connections use the stream transport, and the app hears of it.
fn writer_died(state: &Shared, env: RawEnv) {
  {
    let mut s = state.borrow_mut();
    s.writer_died = true;
    s.writer = None;
    s.retired_events = None;
  }
  let pending: Vec<WireId> = state.borrow().pending_ends.keys().copied().collect();
  for wire in pending {
    finish_pending_end(state, env, wire, Removal::Destroy);
  }
  let socket_keys: Vec<ConnKey> = state.borrow().wires.values().copied().collect();
  for key in socket_keys {
    remove_conn(state, env, key, Removal::Destroy, Reason::Error);
  }
  emit(
    state,
    env,
    "error",
    "ERR_SSE_WRITER_DIED",
    "the native socket writer thread stopped unexpectedly; its connections were closed and new ones use the stream transport",
  );
  finish_close_if_done(state, env);
}

/// Once `close()` was called and nothing is registered or ending, the
/// writer is told to stop; `closed` is reported when it has (or at once if
/// there is none).
fn finish_close_if_done(state: &Shared, env: RawEnv) {
  let stopped_now = {
    let mut s = state.borrow_mut();
    if !s.closing || !s.registry.is_empty() || !s.pending_ends.is_empty() {
      return;
    }
    match s.writer.take() {
      Some(writer) => {
        s.retired_events = Some(writer.events());
        writer.shutdown();
        false
      }
      None => s.retired_events.is_none(),
    }
  };
  if stopped_now {
    emit(state, env, "closed", "", "");
  }
}

/// The app's `close` listener and destroy hooks land here: `res` is going
/// away, so it is forgotten without being ended or written to again.
fn forget_response(state: &Shared, env: RawEnv, res: RawValue) -> bool {
  let Some(key) = raw_key_of(state, env, res) else {
    return false;
  };
  if state.borrow().registry.contains(key) {
    return remove_conn(state, env, key, Removal::Forget, Reason::Closed);
  }
  let wire = state.borrow().ending_keys.get(&key).copied();
  match wire {
    Some(wire) => {
      if let Some(writer) = &state.borrow().writer {
        writer.remove(wire);
      }
      finish_pending_end(state, env, wire, Removal::Forget);
      true
    }
    None => false,
  }
}

/// Finishes a response the writer has let go of: Node ends it (`End`),
/// destroys it (`Destroy`), or it is already gone (`Forget`).
fn finish_pending_end(state: &Shared, env: RawEnv, wire: WireId, removal: Removal) {
  let (pending, listener) = {
    let mut s = state.borrow_mut();
    let Some(pending) = s.pending_ends.remove(&wire) else {
      return;
    };
    s.ending_keys.remove(&pending.key);
    let listener = s.on_close.as_ref().and_then(|l| l.value(env).ok());
    (pending, listener)
  };
  if let Ok(res) = pending.res.value(env) {
    detach_close_listener(env, res, listener);
    restore_response(env, res);
    finish_response(state, env, res, removal);
  }
  {
    let mut s = state.borrow_mut();
    s.refs.release(env, pending.res);
    release_if_orphaned(&mut s, env);
  }
  finish_close_if_done(state, env);
}

/// Installs the socket writer's `write`, `end` and `destroy` on `res`, and
/// `destroy` on its socket.
fn install_socket_hooks(state: &Shared, env: RawEnv, res: RawValue) -> Result<()> {
  let hooks = {
    let s = state.borrow();
    let Some(h) = &s.hooks else {
      return Ok(());
    };
    [
      h.write.value(env)?,
      h.end.value(env)?,
      h.destroy.value(env)?,
      h.socket_destroy.value(env)?,
    ]
  };
  let [write, end, destroy, socket_destroy] = hooks;
  js::set_named(env, res, c"write", write)?;
  js::set_named(env, res, c"end", end)?;
  js::set_named(env, res, c"destroy", destroy)?;
  let socket = js::get(env, res, c"socket")?;
  if js::is_object(env, socket) {
    js::set_named(env, socket, c"destroy", socket_destroy)?;
  }
  Ok(())
}

/// Puts Node's own methods back on a response leaving the socket writer.
fn restore_response(env: RawEnv, res: RawValue) {
  js::delete_named(env, res, "write");
  js::delete_named(env, res, "end");
  js::delete_named(env, res, "destroy");
  if let Ok(socket) = js::get(env, res, c"socket") {
    if js::is_object(env, socket) {
      js::delete_named(env, socket, "destroy");
    }
  }
  js::clear_exception(env);
}

/// Ends or destroys `res` as `removal` says. A response the hub ended gets a
/// `write` that returns false instead of Node's, which would emit an
/// `'error'` (fatal without a listener) for a write after end.
fn finish_response(state: &Shared, env: RawEnv, res: RawValue, removal: Removal) {
  match removal {
    Removal::Forget => return,
    Removal::End => {
      if !js::get_truthy(env, res, c"writableEnded") {
        js::call_method_quietly(env, res, c"end", &[]);
      }
    }
    Removal::Destroy => js::call_method_quietly(env, res, c"destroy", &[]),
  }
  let write_after_end = state
    .borrow()
    .hooks
    .as_ref()
    .and_then(|h| h.write_after_end.value(env).ok());
  if let Some(write_after_end) = write_after_end {
    if js::set_named(env, res, c"write", write_after_end).is_err() {
      js::clear_exception(env);
    }
  }
}

fn detach_close_listener(env: RawEnv, res: RawValue, listener: Option<RawValue>) {
  if let (Some(listener), Ok(name)) = (listener, js::string(env, "close")) {
    js::call_method_quietly(env, res, c"removeListener", &[name, listener]);
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

/// The key `res` carries, whether or not it is still registered.
fn raw_key_of(state: &Shared, env: RawEnv, res: RawValue) -> Option<ConnKey> {
  if !js::is_object(env, res) {
    return None;
  }
  let symbol = state.borrow().key_symbol.as_ref()?.value(env).ok()?;
  ConnKey::from_f64(js::get_symbol_keyed(env, res, symbol)?)
}

/// The key of `res` when it is registered with this hub.
fn key_of(state: &Shared, env: RawEnv, res: RawValue) -> Option<ConnKey> {
  let key = raw_key_of(state, env, res)?;
  state.borrow().registry.contains(key).then_some(key)
}

/// The one way a connection leaves the registry, whatever the reason:
/// unregisters `key`, finishes the response as `removal` says (for a socket
/// connection ending gracefully, after the writer flushed what it queued),
/// releases every reference, then reports it: `slow` first for a slow
/// client, then `disconnect`. The entry is gone before any JS runs, so a
/// listener that calls back into the hub never sees it again. False if not
/// registered.
fn remove_conn(
  state: &Shared,
  env: RawEnv,
  key: ConnKey,
  removal: Removal,
  reason: Reason,
) -> bool {
  let (entry, listener, deferred, was_socket) = {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    let Some(entry) = s.registry.remove(key) else {
      return false;
    };
    let was_socket = entry.handle.transport.wire().is_some();
    let mut deferred = None;
    if let Some(wire) = entry.handle.transport.wire() {
      s.wires.remove(&wire);
      if let Some(writer) = &s.writer {
        match removal {
          Removal::End => {
            writer.end(wire);
            deferred = Some(wire);
          }
          Removal::Forget | Removal::Destroy => writer.remove(wire),
        }
      }
    }
    let listener = s.on_close.as_ref().and_then(|l| l.value(env).ok());
    (entry, listener, deferred, was_socket)
  };
  let id = entry.id.clone();
  let Conn {
    res: res_ref,
    transport,
    meta,
  } = entry.handle;
  let res = res_ref.value(env).ok();
  {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    transport.release(env, &mut s.refs);
    if let Some(meta) = meta {
      s.refs.release(env, meta);
    }
  }
  match deferred {
    // Ends once the writer has flushed its queue; until then the `close`
    // listener stays, so Node closing the socket still releases it.
    Some(wire) => {
      let mut s = state.borrow_mut();
      s.ending_keys.insert(key, wire);
      s.pending_ends
        .insert(wire, PendingEnd { key, res: res_ref });
    }
    None => {
      if let Some(res) = res {
        detach_close_listener(env, res, listener);
        if was_socket {
          restore_response(env, res);
        }
        finish_response(state, env, res, removal);
      }
      state.borrow_mut().refs.release(env, res_ref);
    }
  }
  if reason != Reason::Rollback {
    if reason == Reason::Slow {
      emit(state, env, "slow", &id, "");
    }
    emit(state, env, "disconnect", &id, reason.as_str());
  }
  release_if_orphaned(&mut state.borrow_mut(), env);
  finish_close_if_done(state, env);
  true
}
