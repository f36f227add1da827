//! Taking connections out of the hub, as the core decides, and executing
//! what it answers.

use std::collections::HashSet;
use std::time::Instant;

use napi::Result;
use sse_helper_core::hub::{options, Leave, Reason, Removal};
use sse_helper_core::registry::ConnKey;

use crate::effects::execute;
use crate::error;
use crate::js::{self, RawEnv};
use crate::state::Shared;

/// Removes `key` and executes the result; false if it was not registered.
pub fn remove(state: &Shared, env: RawEnv, key: ConnKey, removal: Removal) -> bool {
  let (registered, effects) = {
    let mut s = state.borrow_mut();
    (
      s.core.connections().contains(key),
      s.core.leave(Leave::Remove {
        key,
        removal,
        reason: Reason::Removed,
      }),
    )
  };
  execute(state, env, effects);
  registered
}

/// Removes each of `keys`; returns how many were registered.
pub fn remove_all(state: &Shared, env: RawEnv, keys: Vec<ConnKey>, removal: Removal) -> u32 {
  let removed = keys.into_iter().filter(|k| remove(state, env, *k, removal));
  removed.count() as u32
}

/// Removes every connection under `id`.
pub fn remove_id(state: &Shared, env: RawEnv, id: &str, removal: Removal) -> bool {
  let keys = state.borrow().core.connections().keys_for_id(id).to_vec();
  remove_all(state, env, keys, removal) > 0
}

/// `cleanupStaleClients`: ends and removes the connections whose response
/// is over (ended, errored or destroyed, read from JS with nothing
/// borrowed, each just before its turn, as a removal's listener may end
/// another) and those older than `max_age_ms`.
pub fn cleanup_stale(state: &Shared, env: RawEnv, max_age_ms: f64) -> Result<u32> {
  let max_age = error::check(state, env, options::max_age(max_age_ms))?;
  let (too_old, candidates) = {
    let s = state.borrow();
    let too_old: HashSet<ConnKey> = s
      .core
      .connections()
      .older_than(Instant::now(), max_age)
      .into_iter()
      .collect();
    let mut candidates = Vec::with_capacity(s.core.connections().len());
    for entry in s.core.connections().iter() {
      candidates.push((entry.key, entry.handle.handle.res.value(env)?));
    }
    (too_old, candidates)
  };
  let mut removed = 0;
  for (key, res) in candidates {
    let dead = js::get_truthy(env, res, c"writableEnded")
      || js::get_truthy(env, res, c"destroyed")
      || js::get_truthy(env, res, c"errored");
    if (dead || too_old.contains(&key)) && remove(state, env, key, Removal::End) {
      removed += 1;
    }
  }
  Ok(removed)
}
