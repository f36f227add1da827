//! Making a hub's JS-side state: the `close` listener every response gets,
//! the key symbol and WeakMap, and the functions the JS surface handed in.

use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

use napi::bindgen_prelude::*;
use napi::{Env, JsValue};

use crate::args::guard_panics;
use crate::effects;
use crate::js::{self, RawEnv, RawValue};
use crate::names::Names;
use crate::state::{Hooks, HubState, Shared};
use crate::table::ResponseTable;

/// A new hub's state, holding `type_error`, `hooks` (all seven or none),
/// `lifecycle` and the two capacity errors' classes (see `NativeHub::new`).
pub fn new_state(
  env: &Env,
  type_error: Option<Function<'_>>,
  hooks: Option<Object<'_>>,
  lifecycle: Option<Function<'_>>,
  capacity_error: Option<Function<'_>>,
  key_capacity_error: Option<Function<'_>>,
) -> Result<Shared> {
  let raw = env.raw();
  let state: Shared = Rc::new(RefCell::new(HubState::new()));
  let on_close = close_listener(env, &state)?;
  let symbol = js::new_symbol(raw, "sse-helper-native connection")?;
  let key_map = js::new_weak_map(raw)?;
  let hook_values = hook_values(raw, hooks.as_ref())?;
  {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    s.on_close = Some(s.refs.hold(raw, on_close.raw())?);
    s.key_symbol = Some(s.refs.hold(raw, symbol)?);
    s.key_map = Some(s.refs.hold(raw, key_map)?);
    s.table = Some(ResponseTable::new(raw, &mut s.refs)?);
    s.names = Some(Names::new(raw, &mut s.refs)?);
    s.type_error = type_error.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
    s.lifecycle = lifecycle.map(|f| s.refs.hold(raw, f.raw())).transpose()?;
    s.capacity_error = capacity_error
      .map(|f| s.refs.hold(raw, f.raw()))
      .transpose()?;
    s.key_capacity_error = key_capacity_error
      .map(|f| s.refs.hold(raw, f.raw()))
      .transpose()?;
    if let Some([write, end, destroy, socket_destroy, write_after_end, node_write, write_batch]) =
      hook_values
    {
      s.hooks = Some(Hooks {
        write: s.refs.hold(raw, write)?,
        end: s.refs.hold(raw, end)?,
        destroy: s.refs.hold(raw, destroy)?,
        socket_destroy: s.refs.hold(raw, socket_destroy)?,
        write_after_end: s.refs.hold(raw, write_after_end)?,
        node_write: s.refs.hold(raw, node_write)?,
        write_batch: s.refs.hold(raw, write_batch)?,
      });
    }
  }
  Ok(state)
}

/// The one `close` listener attached to every registered response.
fn close_listener<'env>(env: &'env Env, state: &Shared) -> Result<Function<'env, (), ()>> {
  let state = state.clone();
  env.create_function_from_closure::<(), (), _>("sseHelperOnClose", move |ctx| {
    let env = ctx.env.raw();
    let res = ctx.this::<Unknown>()?.raw();
    guard_panics(|| {
      effects::closed(&state, env, res);
      Ok(())
    })
  })
}

/// `write`, `end`, `destroy`, `socketDestroy`, `writeAfterEnd`, `nodeWrite`
/// and `writeBatch` from `hooks`, when every one is a function; without
/// them the hub uses the stream transport only, each write made natively.
fn hook_values(env: RawEnv, hooks: Option<&Object<'_>>) -> Result<Option<[RawValue; 7]>> {
  let Some(hooks) = hooks else {
    return Ok(None);
  };
  let hook = |name: &CStr| -> Result<Option<RawValue>> {
    let value = js::get(env, hooks.raw(), name)?;
    Ok(js::is_function(env, value).then_some(value))
  };
  let values = [
    hook(c"write")?,
    hook(c"end")?,
    hook(c"destroy")?,
    hook(c"socketDestroy")?,
    hook(c"writeAfterEnd")?,
    hook(c"nodeWrite")?,
    hook(c"writeBatch")?,
  ];
  Ok(match values {
    [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f), Some(g)] => Some([a, b, c, d, e, f, g]),
    _ => None,
  })
}
