//! Writing to one response the app names (registered or not), and running
//! a broadcast's `filter` over the candidates the core chose.

use std::sync::Arc;
use std::time::Instant;

use napi::bindgen_prelude::*;
use sse_helper_core::hub::{Frame, Outgoing, Placement};
use sse_helper_core::registry::ConnKey;

use crate::deliver;
use crate::effects::{self, key_of};
use crate::js::{self, RawEnv, RawValue};
use crate::state::Shared;
use crate::stream::{self, OutFrame, WriteKeys, WriteOutcome};

/// Sends `frame` to one response: through the registry when registered
/// (so its transport and policy apply), else straight to its `write`.
///
/// As in the original helper, a response whose `write` throws is ended
/// (quietly), and removed when registered.
pub fn write_to_response(state: &Shared, env: RawEnv, res: RawValue, frame: Frame) -> bool {
  if let Some(key) = key_of(state, env, res) {
    let planned = state
      .borrow_mut()
      .core
      .send(Outgoing::ToConnection { key, frame }, Instant::now());
    // A ready frame to a registered connection is never refused.
    return planned.is_ok_and(|planned| deliver::planned(state, env, planned) == 1);
  }
  let ending = effects::raw_key_of(state, env, res)
    .is_some_and(|k| state.borrow().core.placement(k) == Placement::Ending);
  if ending || js::get_truthy(env, res, c"destroyed") {
    return false;
  }
  // What the original helper writes, whatever `write` is: a string.
  let Ok(keys) = WriteKeys::new(env, None) else {
    js::clear_exception(env);
    return false;
  };
  match stream::write(env, &keys, res, None, &OutFrame::new(frame.body())) {
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
pub fn filtered_keys(
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
      .filter_map(|k| s.core.connections().get(*k))
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
