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

use napi::{Env, Error, Result, Status};
use sse_helper_core::bus::Mark;
use sse_helper_core::hub::{Reason, Removal};
use sse_helper_core::registry::{self, ConnKey};

use crate::effects::{ensure_writer, execute, key_of, raw_key_of, restore_response};
use crate::error::{self, invalid, invalid_type};
use crate::js::{self, RawEnv, RawValue};
use crate::socket::{self, SocketInfo};
use crate::state::{JsConn, Shared};
use sse_helper_core::hub::CoreError;

/// Where a new connection starts on a hub with a bus (ignored without).
pub struct Start<'a> {
  /// The client's `Last-Event-ID`.
  pub last_event_id: Option<&'a str>,
  /// Where live delivery was when its headers were flushed.
  pub mark: Option<Mark>,
}

/// What a successful registration returns to the class.
pub struct Registered {
  pub id: String,
  /// The new connection, `None` when an existing one was moved (or the
  /// response was already over and so not registered).
  pub key: Option<ConnKey>,
}

pub fn register(
  state: &Shared,
  env: &Env,
  res: RawValue,
  id: Option<String>,
  meta: Option<RawValue>,
  socket: Option<SocketInfo>,
  start: Start<'_>,
) -> Result<Registered> {
  let raw = env.raw();
  if state.borrow().core.is_closing() {
    return Err(error::throw(state, raw, CoreError::Closed));
  }
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

  if let Some(key) = key_of(state, raw, res) {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    let new_meta = meta.map(|m| s.refs.hold(raw, m)).transpose()?;
    let moved = s.core.entry(key).is_some_and(|e| *e.id != *id);
    // A new entry in the original: its age starts over.
    s.core.reregister(key, &id, Instant::now());
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
      s.refs.release(raw, old);
    }
    return Ok(Registered { id, key: None });
  }

  // A response that is already over is not registered: no `close` event
  // would ever come to remove it. One this hub removed while its writer
  // still flushes is over too, though Node has not ended it yet.
  let ending = raw_key_of(state, raw, res).is_some_and(|key| state.borrow().core.is_ending(key));
  if ending
    || js::get_truthy(raw, res, c"destroyed")
    || js::get_truthy(raw, res, c"writableEnded")
    || js::get_truthy(raw, res, c"closed")
  {
    return Ok(Registered { id, key: None });
  }

  // 1. Everything read from JS before anything is committed.
  let flush = js::get(raw, res, c"flush")
    .ok()
    .filter(|f| js::is_function(raw, *f));
  js::clear_exception(raw);
  // The original attaches its `close` listener with `once`, in a try: a
  // response without one (or whose `once` throws) is registered anyway.
  let once = js::get(raw, res, c"once")
    .ok()
    .filter(|f| js::is_function(raw, *f));
  js::clear_exception(raw);
  let fd = match socket {
    Some(info) if state.borrow().core.socket_slot_free() => socket::handoff(&info),
    _ => None,
  };
  let fd = fd.filter(|_| state.borrow().hooks.is_some());
  if fd.is_some() {
    ensure_writer(state, env)?;
  }

  // A getter read above may have closed the hub; the fd is dropped.
  if state.borrow().core.is_closing() {
    return Err(error::throw(state, raw, CoreError::Closed));
  }

  // 2. Commit: no JS runs while the state is borrowed.
  let (key, handed_off, listener, symbol) = {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    let created_at_ms = now_ms();
    let order = s.next_order;
    s.next_order += 1;
    let handle = JsConn {
      res: s.refs.hold(raw, res)?,
      created_at_ms,
      order,
      flush: match (fd.is_some(), flush) {
        (false, Some(flush)) => Some(s.refs.hold(raw, flush)?),
        _ => None,
      },
      meta: meta.map(|m| s.refs.hold(raw, m)).transpose()?,
    };
    let (key, wire) = s.core.register_with(
      &id,
      handle,
      fd,
      Instant::now(),
      start.last_event_id,
      start.mark,
    );
    let listener = s.on_close.as_ref().map(|l| l.value(raw)).transpose()?;
    let symbol = s.key_symbol.as_ref().map(|l| l.value(raw)).transpose()?;
    (key, wire.is_some(), listener, symbol)
  };

  // 3. Effects on `res`, each of which may run JS; undone on failure.
  let outcome = (|| -> Result<()> {
    if let Some(symbol) = symbol {
      js::set_symbol_keyed(raw, res, symbol, key.to_f64())?;
      // A frozen, sealed or non-extensible response (or a Proxy that drops
      // the write) keeps its key in the hub's WeakMap instead.
      if js::get_symbol_keyed(raw, res, symbol) != Some(key.to_f64())
        && !keep_key_aside(state, raw, res, key)
      {
        return Err(invalid(
          state,
          raw,
          "res cannot be registered: it keeps neither a property nor a WeakMap entry (a Proxy refusing both?)",
        ));
      }
    }
    if let (Some(listener), Some(once)) = (listener, once) {
      let name = js::string(raw, "close")?;
      // Ignored when it throws, as the original does.
      let _ = js::call(raw, res, once, &[name, listener]);
    }
    if handed_off {
      install_socket_hooks(state, raw, res)?;
    }
    Ok(())
  })();
  // A callback run by the steps above may have removed the connection
  // already (its removal undid what was installed before it); undo what
  // was installed after.
  if outcome.is_ok() && !state.borrow().core.contains(key) {
    if let Some(listener) = listener {
      if let Ok(name) = js::string(raw, "close") {
        js::call_method_quietly(raw, res, c"removeListener", &[name, listener]);
      }
    }
    if handed_off {
      restore_response(raw, res);
    }
    return Ok(Registered { id, key: None });
  }
  if let Err(err) = outcome {
    // Keep the pending exception while undoing, then throw it again.
    let exception = js::clear_exception(raw);
    let effects = state
      .borrow_mut()
      .core
      .remove(key, Removal::Forget, Reason::Rollback);
    execute(state, raw, effects);
    if let Some(symbol) = symbol {
      js::delete_keyed(raw, res, symbol);
    }
    js::rethrow(raw, exception);
    return Err(err);
  }
  Ok(Registered { id, key: Some(key) })
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
