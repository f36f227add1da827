//! `register`: the one method that must run JS on both sides of the core's
//! decision, so it is done in steps, all or nothing.
//!
//! 1. Read from JS (the response's methods, its state, its socket) with
//!    nothing borrowed; refuse a nested registration of the same response.
//! 2. Commit in the core, which runs no JS.
//! 3. Effects on the response (the key symbol, the `close` listener, the
//!    socket hooks), each of which may run JS; on failure everything is
//!    undone (the entry removed, the duplicated fd dropped by the writer,
//!    every reference released) and the error thrown.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::Either;
use napi::{Env, Error, Result, Status};
use napi_derive::napi;
use sse_helper_core::bus::Mark;
use sse_helper_core::hub::{
  Admitted, Change, Leave, Placement, Reason, Removal, SocketOffer, StreamReason, Ticket,
};
use sse_helper_core::registry::{self, ConnKey};

use crate::deliver;
use crate::effects::{ensure_writer, execute, key_of, raw_key_of, restore_response};
use crate::error::{self, invalid, invalid_type};
use crate::js::{self, RawEnv, RawValue};
use crate::names::{Name, NameValues};
use crate::socket::{self, SocketInfo};
use crate::state::{JsConn, Shared};
use crate::table;
use sse_helper_core::hub::CoreError;

/// Where a new connection starts, for `register`.
#[napi(object)]
#[derive(Default)]
pub struct RegisterStart {
  /// The client's `Last-Event-ID` (history or bus replay from it).
  pub last_event_id: Option<String>,
  /// `busMark()` as it was when the response's headers were flushed.
  pub mark: Option<String>,
  /// Channels joined before anything is replayed, so the replay includes
  /// their history (`addClient`'s `channels` option).
  pub channels: Option<Vec<String>>,
  /// The place `reserve` gave `initResponse` for this response.
  pub ticket: Option<f64>,
  /// Its admission key (`clientKey(req)`), when there is no ticket and
  /// `maxClientsPerKey` is on.
  pub client_key: Option<String>,
}

/// Where a new connection starts on a hub with a bus (ignored without).
pub struct Start<'a> {
  /// The client's `Last-Event-ID`.
  pub last_event_id: Option<&'a str>,
  /// Where live delivery was when its headers were flushed.
  pub mark: Option<Mark>,
  /// Channels it joins before anything is replayed.
  pub channels: &'a [String],
  /// The place `initResponse` reserved for it.
  pub ticket: Option<Ticket>,
  /// Its admission key, when it has no ticket.
  pub client_key: Option<&'a str>,
}

/// Registers `res` under `id` (generated when absent) and returns the id;
/// see `NativeHub::register`.
pub fn register(
  state: &Shared,
  env: &Env,
  res: RawValue,
  id: Option<String>,
  meta: Option<RawValue>,
  socket: Either<SocketInfo, String>,
  start: Start<'_>,
) -> Result<String> {
  let raw = env.raw();
  check_open(state, raw)?;
  if !js::is_object(raw, res) {
    return Err(invalid_type(
      state,
      raw,
      "res must be an object (an http.ServerResponse)",
    ));
  }
  let id = id.unwrap_or_else(|| registry::generate_client_id(SystemTime::now()));
  let meta = meta.filter(|m| {
    !matches!(
      js::type_of(raw, *m),
      napi::sys::ValueType::napi_undefined | napi::sys::ValueType::napi_null
    )
  });
  let _registering = Registering::enter(state, raw, res)?;
  let names = names(state, raw)?;
  if let Some(key) = key_of(state, raw, res) {
    move_existing(state, raw, key, &id, meta)?;
  } else if !is_over(state, raw, res, &names) {
    let read = read_response(state, env, res, socket, &names)?;
    // A getter read above may have closed the hub; the fd is dropped.
    check_open(state, raw)?;
    // The limits, decided here and applied by the core's registration,
    // with no JS in between: nothing can take the place meanwhile.
    let admitted = admit(state, raw, &start)?;
    let committed = commit(state, raw, res, &id, meta, read, &start, admitted)?;
    if attach(state, raw, res, &committed, &names)? {
      let replay = state.borrow_mut().core.resume(
        committed.key,
        start.last_event_id,
        start.channels,
        Instant::now(),
      );
      if let Some(dispatch) = replay {
        deliver::run(state, raw, dispatch);
      }
    }
  }
  Ok(id)
}

/// The place a new connection takes: its reservation, or a new one within
/// the limits (a refusal is counted and thrown).
fn admit(state: &Shared, env: RawEnv, start: &Start<'_>) -> Result<Admitted> {
  let admitted = state
    .borrow()
    .core
    .admission(start.ticket, start.client_key);
  if let Err(error) = &admitted {
    state.borrow_mut().core.refused(error);
  }
  error::check(state, env, admitted)
}

/// `ERR_SSE_CLOSED` once `close()` was called.
fn check_open(state: &Shared, env: RawEnv) -> Result<()> {
  match state.borrow().core.state().closing {
    true => Err(error::throw(state, env, CoreError::Closed)),
    false => Ok(()),
  }
}

/// A registered response registered again: moved to `id` (as a `Map` entry
/// set again, its age starts over) and its meta replaced.
fn move_existing(
  state: &Shared,
  env: RawEnv,
  key: ConnKey,
  id: &str,
  meta: Option<RawValue>,
) -> Result<()> {
  let mut s = state.borrow_mut();
  let s = &mut *s;
  let new_meta = meta.map(|m| s.refs.hold(env, m)).transpose()?;
  let moved = s.core.connections().get(key).is_some_and(|e| *e.id != *id);
  s.core.change(key, Change::Rename(id), Instant::now());
  let order = s.next_order;
  if let Some(h) = s.core.handle_mut(key) {
    h.created_at_ms = now_ms();
    if moved {
      // Like a `Map` entry deleted and set again: it now lists last.
      h.order = order;
    }
  }
  if moved {
    s.next_order += 1;
  }
  let old_meta = s
    .core
    .handle_mut(key)
    .and_then(|h| std::mem::replace(&mut h.meta, new_meta));
  if let Some(old) = old_meta {
    s.refs.release(env, old);
  }
  Ok(())
}

/// Whether `res` is already over, and so not registered: no `close` event
/// would ever come to remove it. One this hub removed while its writer
/// still flushes is over too, though Node has not ended it yet.
fn is_over(state: &Shared, env: RawEnv, res: RawValue, names: &NameValues) -> bool {
  let over = |name| js::get_truthy_by_key(env, res, names.get(name));
  raw_key_of(state, env, res)
    .is_some_and(|key| state.borrow().core.placement(key) == Placement::Ending)
    || over(Name::Destroyed)
    || over(Name::WritableEnded)
    || over(Name::Closed)
}

/// The hub's property names, for this call.
fn names(state: &Shared, env: RawEnv) -> Result<NameValues> {
  let names = state.borrow().names.as_ref().and_then(|n| n.values(env));
  names.ok_or_else(|| Error::from_reason("the hub's property names are gone"))
}

/// Step 1: what is read from JS before anything is committed.
struct Read {
  flush: Option<RawValue>,
  once: Option<RawValue>,
  fd: SocketOffer,
}

fn read_response(
  state: &Shared,
  env: &Env,
  res: RawValue,
  socket: Either<SocketInfo, String>,
  names: &NameValues,
) -> Result<Read> {
  let raw = env.raw();
  let flush = js::get_by_key(raw, res, names.get(Name::Flush))
    .ok()
    .filter(|f| js::is_function(raw, *f));
  js::clear_exception(raw);
  // The original attaches its `close` listener with `once`, in a try: a
  // response without one (or whose `once` throws) is registered anyway.
  let once = js::get_by_key(raw, res, names.get(Name::Once))
    .ok()
    .filter(|f| js::is_function(raw, *f));
  js::clear_exception(raw);
  let refusal = state.borrow().core.state().socket_refusal;
  let fd = match (socket, refusal) {
    (Either::B(reason), _) => Err(stream_reason(state, raw, &reason)?),
    (Either::A(_), Some(refusal)) => Err(refusal),
    // Without the six hooks nothing can keep the app's writes in order
    // with the writer's.
    (Either::A(_), None) if state.borrow().hooks.is_none() => Err(StreamReason::WriterDown),
    (Either::A(info), None) => socket::handoff(&info).ok_or(StreamReason::FdMismatch),
  };
  if fd.is_ok() {
    ensure_writer(state, env)?;
  }
  Ok(Read { flush, once, fd })
}

/// The reason the JS surface named (`lib/socket.js`).
fn stream_reason(state: &Shared, env: RawEnv, name: &str) -> Result<StreamReason> {
  StreamReason::from_name(name).ok_or_else(|| {
    invalid(
      state,
      env,
      &format!("unknown stream transport reason {name:?}"),
    )
  })
}

/// Step 2's result: the new connection and what step 3 installs.
struct Committed {
  key: ConnKey,
  slot: Option<u32>,
  handed_off: bool,
  once: Option<RawValue>,
  listener: Option<RawValue>,
  symbol: Option<RawValue>,
}

/// Step 2: the core registers the connection; no JS runs meanwhile.
#[allow(clippy::too_many_arguments)]
fn commit(
  state: &Shared,
  env: RawEnv,
  res: RawValue,
  id: &str,
  meta: Option<RawValue>,
  read: Read,
  start: &Start<'_>,
  admitted: Admitted,
) -> Result<Committed> {
  let mut s = state.borrow_mut();
  let s = &mut *s;
  // Everything that can fail comes before the core registers anything, so
  // a failure leaves nothing to undo but the references held here.
  let listener = s.on_close.as_ref().map(|l| l.value(env)).transpose()?;
  let symbol = s.key_symbol.as_ref().map(|l| l.value(env)).transpose()?;
  let flush = match (read.fd.is_ok(), read.flush) {
    (false, Some(flush)) => Some(flush),
    _ => None,
  };
  let res_ref = s.refs.hold(env, res)?;
  let flush_ref = match flush.map(|f| s.refs.hold(env, f)).transpose() {
    Ok(reference) => reference,
    Err(err) => {
      s.refs.release(env, res_ref);
      return Err(err);
    }
  };
  let meta_ref = match meta.map(|m| s.refs.hold(env, m)).transpose() {
    Ok(reference) => reference,
    Err(err) => {
      s.refs.release(env, res_ref);
      if let Some(reference) = flush_ref {
        s.refs.release(env, reference);
      }
      return Err(err);
    }
  };
  let order = s.next_order;
  s.next_order += 1;
  let handle = JsConn {
    res: res_ref,
    created_at_ms: now_ms(),
    order,
    flush: flush_ref,
    meta: meta_ref,
    slot: s.table.as_mut().and_then(|t| t.take()),
  };
  let slot = handle.slot;
  let (key, wire) = s.core.register_with(
    id,
    handle,
    read.fd,
    Instant::now(),
    start.last_event_id,
    start.mark,
    admitted,
  );
  Ok(Committed {
    key,
    slot,
    handed_off: wire.is_some(),
    once: read.once,
    listener,
    symbol,
  })
}

/// Step 3: the effects on `res`, each of which may run JS. True when the
/// connection is in place; false when a callback they ran removed it
/// already (what was installed after is undone). On failure everything is
/// undone and the error thrown.
fn attach(
  state: &Shared,
  env: RawEnv,
  res: RawValue,
  c: &Committed,
  names: &NameValues,
) -> Result<bool> {
  let outcome = install(state, env, res, c, names);
  if let Err(err) = outcome {
    // Keep the pending exception while undoing, then throw it again.
    let exception = js::clear_exception(env);
    let effects = state.borrow_mut().core.leave(Leave::Remove {
      key: c.key,
      removal: Removal::Forget,
      reason: Reason::Rollback,
    });
    execute(state, env, effects);
    if let Some(symbol) = c.symbol {
      js::delete_keyed(env, res, symbol);
    }
    js::rethrow(env, exception);
    return Err(err);
  }
  if state.borrow().core.connections().contains(c.key) {
    return Ok(true);
  }
  if let Some(listener) = c.listener {
    if let Ok(name) = js::string(env, "close") {
      js::call_method_quietly(env, res, c"removeListener", &[name, listener]);
    }
  }
  if c.handed_off {
    restore_response(env, res);
  }
  Ok(false)
}

/// The key symbol (or the WeakMap entry), the `close` listener and the
/// socket hooks.
fn install(
  state: &Shared,
  env: RawEnv,
  res: RawValue,
  c: &Committed,
  names: &NameValues,
) -> Result<()> {
  if let Some(slot) = c.slot {
    table::fill(state, env, slot, res)?;
  }
  if let Some(symbol) = c.symbol {
    js::set_symbol_keyed(env, res, symbol, c.key.to_f64())?;
    // A frozen, sealed or non-extensible response (or a Proxy that drops
    // the write) keeps its key in the hub's WeakMap instead.
    if js::get_symbol_keyed(env, res, symbol) != Some(c.key.to_f64())
      && !keep_key_aside(state, env, res, c.key)
    {
      return Err(invalid(
        state,
        env,
        "res cannot be registered: it keeps neither a property nor a WeakMap entry (a Proxy refusing both?)",
      ));
    }
  }
  if let (Some(listener), Some(once)) = (c.listener, c.once) {
    // Ignored when it throws, as the original does.
    let _ = js::call(env, res, once, &[names.get(Name::Close), listener]);
  }
  if c.handed_off {
    install_socket_hooks(state, env, res)?;
  }
  Ok(())
}

/// Records `res` → `key` in the hub's WeakMap, for a response that cannot
/// carry the key symbol; true if a lookup now finds it.
fn keep_key_aside(state: &Shared, env: RawEnv, res: RawValue, key: ConnKey) -> bool {
  let map = {
    let mut s = state.borrow_mut();
    s.key_map_used = true;
    s.key_map.as_ref().and_then(|m| m.value(env).ok())
  };
  let Some(map) = map else {
    return false;
  };
  js::weak_map_set(env, map, res, key.to_f64())
    && js::weak_map_get(env, map, res) == Some(key.to_f64())
}

/// The wall-clock time in ms, as `Date.now()` gives it (the original's
/// `createdAt`).
fn now_ms() -> f64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0.0, |d| d.as_millis() as f64)
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

/// A TypeError naming `arg` unless `res` looks like a writable response
/// (for the package's own APIs, which stay strict).
pub fn check_response(state: &Shared, env: RawEnv, res: RawValue, arg: &str) -> Result<()> {
  let looks_right = js::is_object(env, res)
    && js::is_function(env, js::get(env, res, c"write")?)
    && js::is_function(env, js::get(env, res, c"end")?);
  if !looks_right {
    return Err(invalid_type(
      state,
      env,
      &format!("{arg} must be an http.ServerResponse (an object with write and end)"),
    ));
  }
  Ok(())
}
