//! Executing what the core decided, on the JS thread, with nothing
//! borrowed while JS runs: ending or destroying responses, putting Node's
//! methods back, releasing references, and the hub's events.

use std::sync::Arc;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Error, Result, Status};
use sse_helper_core::hub::{CoreError, Effect, Leave, Removal};
use sse_helper_core::registry::ConnKey;

use crate::args::guard_panics;
use crate::js::{self, RawEnv, RawValue};
use crate::state::{JsConn, Shared};
use crate::table;

/// Carries out `effects` in order.
pub fn execute(state: &Shared, env: RawEnv, effects: Vec<Effect<JsConn>>) {
  for effect in effects {
    match effect {
      Effect::Finish {
        handle,
        how,
        socket,
      } => finish(state, env, handle, how, socket),
      Effect::Slow { id } => emit(state, env, "slow", &id, ""),
      Effect::Disconnect { id, reason } => emit(state, env, "disconnect", &id, reason.as_str()),
      Effect::Drain { key } => {
        let res = {
          let s = state.borrow();
          s.core
            .connections()
            .get(key)
            .and_then(|e| e.handle.handle.res.value(env).ok())
        };
        if let (Some(res), Ok(name)) = (res, js::string(env, "drain")) {
          js::call_method_quietly(env, res, c"emit", &[name]);
        }
      }
      Effect::WriterDied { all } => {
        let died = CoreError::WriterDied { all };
        emit(state, env, "error", died.code(), &died.to_string())
      }
      Effect::Closed => emit(state, env, "closed", "", ""),
      Effect::ReleaseHub => state.borrow_mut().release_own(env),
    }
  }
}

/// Carries out effects where no JS may run (a GC finalizer): references are
/// released, nothing is called. Only `ReleaseHub` is expected there.
pub fn execute_without_js(state: &Shared, env: RawEnv, effects: Vec<Effect<JsConn>>) {
  let mut s = state.borrow_mut();
  let s = &mut *s;
  for effect in effects {
    match effect {
      Effect::Finish { handle, .. } => {
        // The table's element stays (setting it could run JS): the table
        // goes with the orphaned hub's own references once nothing is left.
        if let (Some(slot), Some(table)) = (handle.slot, s.table.as_mut()) {
          table.give_back(slot);
        }
        let res = handle.release_all_but_res(env, &mut s.refs);
        s.refs.release(env, res);
      }
      Effect::ReleaseHub => s.release_own(env),
      _ => {}
    }
  }
}

/// Detaches the `close` listener (unless the response is being destroyed),
/// puts Node's methods back on a socket
/// connection's response, ends or destroys it, then releases its handle.
fn finish(state: &Shared, env: RawEnv, handle: JsConn, how: Removal, socket: bool) {
  let listener = state
    .borrow()
    .on_close
    .as_ref()
    .and_then(|l| l.value(env).ok());
  if let Ok(res) = handle.res.value(env) {
    // A destroyed response keeps its `close` listener, which ends it when
    // the close comes (see `on_close`).
    let keep_listener = matches!(how, Removal::Destroy | Removal::Destroyed);
    if let (false, Some(listener), Ok(name)) = (keep_listener, listener, js::string(env, "close")) {
      js::call_method_quietly(env, res, c"removeListener", &[name, listener]);
    }
    if socket {
      restore_response(env, res);
    }
    finish_response(state, env, res, how);
  }
  if let Some(slot) = handle.slot {
    table::clear(state, env, slot);
  }
  let mut s = state.borrow_mut();
  let s = &mut *s;
  let res = handle.release_all_but_res(env, &mut s.refs);
  s.refs.release(env, res);
}

/// Puts Node's own methods back on a response leaving the socket writer.
/// The installed `end` set `finished` at once (so `writableEnded` is true
/// the moment the app ends it, as with Node's own); it is put back too, or
/// Node's `end`, which the hub calls next, would take it as already done.
pub fn restore_response(env: RawEnv, res: RawValue) {
  js::delete_named(env, res, "write");
  js::delete_named(env, res, "end");
  js::delete_named(env, res, "destroy");
  if js::get_truthy(env, res, c"finished") {
    if let Ok(no) = js::boolean(env, false) {
      let _ = js::set_named(env, res, c"finished", no);
    }
  }
  if let Ok(socket) = js::get(env, res, c"socket") {
    if js::is_object(env, socket) {
      js::delete_named(env, socket, "destroy");
    }
  }
  js::clear_exception(env);
}

/// Ends or destroys `res` as `how` says. A response the hub ended gets a
/// `write` that returns false instead of Node's, which would emit an
/// `'error'` (fatal without a listener) for a write after end.
fn finish_response(state: &Shared, env: RawEnv, res: RawValue, how: Removal) {
  match how {
    Removal::Forget | Removal::Destroyed => return,
    Removal::End | Removal::Closed => {
      if !js::get_truthy(env, res, c"writableEnded") {
        js::call_method_quietly(env, res, c"end", &[]);
      }
    }
    Removal::Destroy => js::call_method_quietly(env, res, c"destroy", &[]),
  }
  let hooks = {
    let s = state.borrow();
    s.hooks.as_ref().and_then(|h| {
      Some((
        h.write_after_end.value(env).ok()?,
        h.node_write.value(env).ok()?,
      ))
    })
  };
  let Some((write_after_end, node_write)) = hooks else {
    return;
  };
  // Only a response still on Node's own `write`: a test double or a
  // wrapper keeps what it has, as with the original helper.
  let on_node_write =
    js::get(env, res, c"write").is_ok_and(|w| js::strict_equals(env, w, node_write));
  js::clear_exception(env);
  if on_node_write && js::set_named(env, res, c"write", write_after_end).is_err() {
    js::clear_exception(env);
  }
}

/// Calls the JS lifecycle callback: `(kind, a, b)`.
pub fn emit(state: &Shared, env: RawEnv, kind: &str, a: &str, b: &str) {
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

/// The key `res` carries, whether or not it is still registered.
pub fn raw_key_of(state: &Shared, env: RawEnv, res: RawValue) -> Option<ConnKey> {
  if !js::is_object(env, res) {
    return None;
  }
  let (symbol, key_map) = {
    let s = state.borrow();
    let symbol = s.key_symbol.as_ref()?.value(env).ok()?;
    let key_map = match (s.key_map_used, &s.key_map) {
      (true, Some(map)) => map.value(env).ok(),
      _ => None,
    };
    (symbol, key_map)
  };
  let key = js::get_symbol_keyed(env, res, symbol)
    .or_else(|| key_map.and_then(|map| js::weak_map_get(env, map, res)))?;
  ConnKey::from_f64(key)
}

/// The key of `res` when it is registered with this hub.
pub fn key_of(state: &Shared, env: RawEnv, res: RawValue) -> Option<ConnKey> {
  let key = raw_key_of(state, env, res)?;
  state
    .borrow()
    .core
    .connections()
    .contains(key)
    .then_some(key)
}

/// The app is about to destroy `res`: it is forgotten without being ended
/// or written to again.
pub fn forget(state: &Shared, env: RawEnv, res: RawValue) -> bool {
  going_away(state, env, res, Leave::Destroying)
}

/// `res`'s `close` fired: it is forgotten and ended, as the original
/// helper's `close` listener does (`removeClient`, then `res.end()`). A
/// response destroyed since (by the app, by Node on the peer's hangup, by
/// the hub) is no longer registered but kept this listener for this: it is
/// ended now, when the original would end it. Nothing more reaches the
/// wire; `writableEnded` reads the same afterwards.
pub fn closed(state: &Shared, env: RawEnv, res: RawValue) {
  if !going_away(state, env, res, Leave::Closed) && !js::get_truthy(env, res, c"writableEnded") {
    js::call_method_quietly(env, res, c"end", &[]);
  }
}

fn going_away(state: &Shared, env: RawEnv, res: RawValue, leave: fn(ConnKey) -> Leave) -> bool {
  let Some(key) = raw_key_of(state, env, res) else {
    return false;
  };
  let effects = state.borrow_mut().core.leave(leave(key));
  let left = !effects.is_empty();
  execute(state, env, effects);
  left
}

/// Starts the hub's writer threads on first use, with a thread-safe function
/// that brings its events back to the JS thread. The function is weak
/// (unref'd): the writer never keeps the process alive.
pub fn ensure_writer(state: &Shared, env: &Env) -> Result<()> {
  if state.borrow().core.state().writer {
    return Ok(());
  }
  let notify = notifier(state, env, "sseHelperWriterEvents", |state, env| {
    let effects = state.borrow_mut().core.writer_events();
    execute(state, env, effects);
  })?;
  state
    .borrow_mut()
    .core
    .start_writer(notify)
    .map_err(|e| Error::from_reason(format!("starting the socket writer failed: {e}")))
}

/// A `notify` for a thread of the core (a writer, the bus): callable from
/// any thread, it runs `on_js_thread` on the JS thread with the hub's
/// state, panics caught. It is weak (unref'd): the thread never keeps the
/// process alive by itself, only while JS awaits it (`waiting`).
pub fn notifier(
  state: &Shared,
  env: &Env,
  name: &'static str,
  on_js_thread: impl Fn(&Shared, RawEnv) + 'static,
) -> Result<Arc<dyn Fn() + Send + Sync>> {
  let owner = state.clone();
  let callback = env.create_function_from_closure::<(), (), _>(name, move |ctx| {
    let env = ctx.env.raw();
    guard_panics(|| {
      on_js_thread(&owner, env);
      Ok(())
    })
  })?;
  let tsfn: ThreadsafeFunction<(), (), (), Status, false, true> = callback
    .build_threadsafe_function()
    .callee_handled::<false>()
    .weak::<true>()
    .build()?;
  // Ref'd while JS awaits what comes through it (see `waiting`).
  state
    .borrow_mut()
    .waiting
    .add_notifier(env.raw(), tsfn.handle.clone());
  Ok(Arc::new(move || {
    tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
  }))
}
