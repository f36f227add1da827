//! The `#[napi]` binding: the `SseHub` class JS sees. It converts values,
//! holds the napi references and maps errors; the bookkeeping lives in
//! [`crate::registry`] and the framing in [`crate::frame`].

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi::{Env, JsValue};
use napi_derive::napi;

use crate::frame;
use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::registry::{self, ConnKey, Registry};
use crate::transport::{self, OutFrame, Transport, WriteOutcome};

/// What the hub keeps per connection.
#[derive(Debug)]
struct Conn {
  res: JsRef,
  transport: Transport,
  meta: Option<JsRef>,
}

/// Everything a hub owns. Shared (on the JS thread only) between the class
/// and its one `close` listener.
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
}

type Shared = Rc<RefCell<HubState>>;

/// A registry of SSE connections with its own ids, clients and settings.
/// The package's default export is one instance; create more to keep
/// separate registries.
#[napi(custom_finalize)]
pub struct NativeHub {
  state: Shared,
}

impl ObjectFinalize for NativeHub {
  fn finalize(self, env: Env) -> Result<()> {
    // The listener holds the state alive while responses still carry it, so
    // late `close` events still clean up; only our own references go here.
    let mut state = self.state.borrow_mut();
    let state = &mut *state;
    if let Some(on_close) = state.on_close.take() {
      state.refs.release(env.raw(), on_close);
    }
    for reference in [state.key_symbol.take(), state.type_error.take()]
      .into_iter()
      .flatten()
    {
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

#[napi]
impl NativeHub {
  /// `typeError` is the constructor bad-input errors are made with; pass the
  /// caller's `TypeError`.
  #[napi(constructor)]
  pub fn new(env: Env, type_error: Option<Function<'_>>) -> Result<Self> {
    let raw = env.raw();
    let state: Shared = Rc::new(RefCell::new(HubState {
      registry: Registry::new(),
      refs: Refs::default(),
      on_close: None,
      key_symbol: None,
      type_error: None,
    }));
    let listener_state = state.clone();
    let on_close =
      env.create_function_from_closure::<(), (), _>("sseHelperOnClose", move |ctx| {
        let env = ctx.env.raw();
        let res = ctx.this::<Unknown>()?.raw();
        if let Some(key) = key_of(&listener_state, env, res) {
          remove_conn(&listener_state, env, key, false);
        }
        Ok(())
      })?;
    let symbol = js::new_symbol(raw, "sse-helper-native connection")?;
    {
      let mut s = state.borrow_mut();
      let on_close = s.refs.hold(raw, on_close.raw())?;
      let symbol = s.refs.hold(raw, symbol)?;
      s.on_close = Some(on_close);
      s.key_symbol = Some(symbol);
      s.type_error = type_error.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
    }
    Ok(NativeHub { state })
  }

  /// Registers `res` under `id` (generated when absent) and returns the id.
  /// A response already registered is moved to `id` and its meta replaced.
  #[napi]
  pub fn register(
    &self,
    env: Env,
    res: Unknown,
    id: Option<String>,
    meta: Option<Unknown>,
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

    let (key, listener) = {
      let mut s = self.state.borrow_mut();
      let s = &mut *s;
      let conn = Conn {
        res: s.refs.hold(raw, res)?,
        transport: Transport::stream(raw, &mut s.refs, write)?,
        meta: meta.map(|m| s.refs.hold(raw, m)).transpose()?,
      };
      let key = s.registry.insert(&id, conn, Instant::now());
      let listener = s.on_close.as_ref().map(|l| l.value(raw)).transpose()?;
      let symbol = s.key_symbol.as_ref().map(|l| l.value(raw)).transpose()?;
      if let Some(symbol) = symbol {
        js::set_symbol_keyed(raw, res, symbol, key.to_f64())?;
      }
      (key, listener)
    };
    if let Some(listener) = listener {
      let name = js::string(raw, "close")?;
      let on = js::get(raw, res, c"on")?;
      if js::call(raw, res, on, &[name, listener]).is_err() {
        remove_conn(&self.state, raw, key, false);
        return Err(invalid(&self.state, raw, "res.on('close') threw"));
      }
    }
    Ok(id)
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
      Some(key) => remove_conn(&self.state, raw, key, true),
      None => false,
    })
  }

  /// Unregisters and ends every connection under `id`.
  #[napi]
  pub fn unregister_id(&self, env: Env, id: String) -> bool {
    let keys = self.state.borrow().registry.keys_for_id(&id).to_vec();
    let mut removed = false;
    for key in keys {
      removed |= remove_conn(&self.state, env.raw(), key, true);
    }
    removed
  }

  /// Frames `data` once and writes it to every connection under `id`.
  /// True when at least one connection was written.
  #[napi]
  pub fn send_to(&self, env: Env, id: String, data: String) -> bool {
    let keys = self.state.borrow().registry.keys_for_id(&id).to_vec();
    if keys.is_empty() {
      return false;
    }
    let bytes = frame::data_frame(&data);
    self.fan_out(env.raw(), &keys, &OutFrame::new(&bytes)) > 0
  }

  /// Writes one framed event to any response, registered or not.
  #[napi]
  pub fn send(&self, env: Env, res: Unknown, data: String) -> Result<bool> {
    let raw = env.raw();
    let res = res.raw();
    let write = response_write(&self.state, raw, res, "res")?;
    if let Some(key) = key_of(&self.state, raw, res) {
      let bytes = frame::data_frame(&data);
      return Ok(self.fan_out(raw, &[key], &OutFrame::new(&bytes)) == 1);
    }
    if js::get_truthy(raw, res, c"destroyed") {
      return Ok(false);
    }
    let bytes = frame::data_frame(&data);
    Ok(transport::write_stream(raw, res, write, &OutFrame::new(&bytes)) == WriteOutcome::Written)
  }

  /// Frames `data` once and writes it to every connection; returns how many
  /// were written.
  #[napi]
  pub fn broadcast(&self, env: Env, data: String) -> u32 {
    let keys = self.state.borrow().registry.keys();
    let bytes = frame::data_frame(&data);
    self.fan_out(env.raw(), &keys, &OutFrame::new(&bytes))
  }

  /// Broadcasts, then ends and unregisters every connection.
  #[napi]
  pub fn broadcast_and_close(&self, env: Env, data: String) -> u32 {
    let written = self.broadcast(env, data);
    self.close_all(env);
    written
  }

  /// Ends and unregisters every connection; returns how many there were.
  #[napi]
  pub fn close_all(&self, env: Env) -> u32 {
    let keys = self.state.borrow().registry.keys();
    let mut closed = 0;
    for key in keys {
      closed += u32::from(remove_conn(&self.state, env.raw(), key, true));
    }
    closed
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
      if (dead || too_old) && remove_conn(&self.state, raw, key, true) {
        removed += 1;
      }
    }
    Ok(removed)
  }

  /// napi references this hub holds right now (responses, their `write`,
  /// metas, its listener and symbol). For leak tests.
  #[napi(getter)]
  pub fn held_references(&self) -> u32 {
    self.state.borrow().refs.live() as u32
  }
}

impl NativeHub {
  /// Writes one frame to each key still registered, then removes those that
  /// had ended or whose write threw. Returns how many were written.
  fn fan_out(&self, env: RawEnv, keys: &[ConnKey], out: &OutFrame<'_>) -> u32 {
    // Resolve every handle first: a write runs JS, which may register or
    // remove clients, so no registry borrow is held across it.
    let targets: Vec<(ConnKey, RawValue, RawValue)> = {
      let s = self.state.borrow();
      keys
        .iter()
        .filter_map(|key| {
          let entry = s.registry.get(*key)?;
          let res = entry.handle.res.value(env).ok()?;
          let write = entry.handle.transport.resolve(env).ok()?;
          Some((*key, res, write))
        })
        .collect()
    };
    let mut written = 0;
    let mut dead = Vec::new();
    for (key, res, write) in targets {
      if !self.state.borrow().registry.contains(key) {
        continue;
      }
      match transport::write_stream(env, res, write, out) {
        WriteOutcome::Written => written += 1,
        WriteOutcome::Ended | WriteOutcome::Failed => dead.push(key),
      }
    }
    for key in dead {
      remove_conn(&self.state, env, key, true);
    }
    written
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

/// Unregisters `key`: detaches the `close` listener, ends the response when
/// asked and still open, releases every reference. False if not registered.
fn remove_conn(state: &Shared, env: RawEnv, key: ConnKey, end: bool) -> bool {
  let (entry, listener) = {
    let mut s = state.borrow_mut();
    let Some(entry) = s.registry.remove(key) else {
      return false;
    };
    let listener = s.on_close.as_ref().and_then(|l| l.value(env).ok());
    (entry, listener)
  };
  if let Ok(res) = entry.handle.res.value(env) {
    if let (Some(listener), Ok(name)) = (listener, js::string(env, "close")) {
      js::call_method_quietly(env, res, c"removeListener", &[name, listener]);
    }
    if end && !js::get_truthy(env, res, c"writableEnded") {
      js::call_method_quietly(env, res, c"end", &[]);
    }
  }
  let mut s = state.borrow_mut();
  let Conn {
    res,
    transport,
    meta,
  } = entry.handle;
  s.refs.release(env, res);
  transport.release(env, &mut s.refs);
  if let Some(meta) = meta {
    s.refs.release(env, meta);
  }
  true
}
