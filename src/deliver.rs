//! Executing a [`Dispatch`] on the JS thread: each stream-transport target
//! is written through its response's own `write`, with nothing borrowed (a
//! write runs JS that may call back into the hub), and the outcomes go
//! back to the core, whose effects are then executed. The socket
//! connections were handed the frame by the core already.

use sse_helper_core::backpressure::Admit;
use sse_helper_core::hub::{Dispatch, Outcome};

use crate::effects::execute;
use crate::js::{self, RawEnv, RawValue};
use crate::replays;
use crate::state::Shared;
use crate::stream::{self, OutFrame, WriteKeys, WriteOutcome};

/// Writes `dispatch`'s stream targets, settles it with the core and
/// executes what follows; returns the call's value as the core made it.
pub fn run(state: &Shared, env: RawEnv, dispatch: Dispatch) -> u32 {
  let outcomes = if dispatch.targets.is_empty() {
    Vec::new()
  } else {
    write_targets(state, env, &dispatch)
  };
  let settled = state.borrow_mut().core.settle(&dispatch, &outcomes);
  execute(state, env, settled.effects);
  // What this dispatch recorded may have ended a shared replay.
  replays::prune(state, env);
  settled.count
}

/// A target with its response and, on the stream transport, a wrapper's
/// `flush`, read under one borrow before any JS runs.
struct Resolved {
  key: sse_helper_core::registry::ConnKey,
  res: RawValue,
  flush: Option<RawValue>,
  congested: bool,
}

fn write_targets(
  state: &Shared,
  env: RawEnv,
  dispatch: &Dispatch,
) -> Vec<(sse_helper_core::registry::ConnKey, Outcome)> {
  let (resolved, node_write): (Vec<Resolved>, Option<RawValue>) = {
    let s = state.borrow();
    let node_write = s.hooks.as_ref().and_then(|h| h.node_write.value(env).ok());
    let resolved = dispatch
      .targets
      .iter()
      .filter_map(|t| {
        let conn = &s.core.entry(t.key)?.handle.handle;
        Some(Resolved {
          key: t.key,
          res: conn.res.value(env).ok()?,
          flush: conn.flush.as_ref().and_then(|f| f.value(env).ok()),
          congested: t.congested,
        })
      })
      .collect();
    (resolved, node_write)
  };
  let Ok(keys) = WriteKeys::new(env, node_write) else {
    // Only while the env is torn down: nothing is written.
    js::clear_exception(env);
    return Vec::new();
  };
  let replay = dispatch.frame.replay_id();
  let out = match replay {
    Some(id) => {
      let (text, buffer) = replays::kept(state, env, id);
      OutFrame::with(dispatch.frame.body(), text, buffer)
    }
    None => OutFrame::new(dispatch.frame.body()),
  };
  let mut outcomes = Vec::with_capacity(resolved.len());
  for t in resolved {
    // An earlier write's JS may have removed this one.
    if !state.borrow().core.contains(t.key) {
      continue;
    }
    let mut buffering = false;
    if t.congested {
      // Node has been buffering for this one: look at how much.
      let pending = stream::pending_bytes(env, t.res);
      match dispatch.admit(pending) {
        Admit::Queue => buffering = pending > 0,
        Admit::Drop => {
          outcomes.push((t.key, Outcome::Dropped));
          continue;
        }
        Admit::Disconnect => {
          outcomes.push((t.key, Outcome::Slow));
          continue;
        }
      }
    }
    let outcome = match stream::write(env, &keys, t.res, t.flush, &out) {
      WriteOutcome::Written => Outcome::Written { buffering },
      WriteOutcome::Buffered => Outcome::Buffered,
      WriteOutcome::Ended => Outcome::Failed,
      WriteOutcome::Threw => Outcome::Threw,
    };
    outcomes.push((t.key, outcome));
  }
  if let Some(id) = replay {
    replays::keep(state, env, id, &out);
  }
  outcomes
}
