//! The JS values of shared replays (a reconnect storm): the core reads the
//! history once per distinct replay and hands every stream client replayed
//! the same the same bytes, naming them ([`Frame::replay_id`]); the
//! binding makes the JS string or `Buffer`s of those bytes once and keeps
//! it under a reference while the core keeps the replay, so a storm makes
//! one JS value per distinct replay rather than one per client. A value is
//! let go of as soon as the core no longer keeps its replay (the history
//! changed, the replay was pushed out, the hub closed), at the end of the
//! next dispatch, `configure()` or `close()`, and with the hub's own
//! references.
//!
//! [`Frame::replay_id`]: sse_helper_core::hub::Frame::replay_id

use crate::js::{JsRef, RawEnv, Refs};
use crate::state::Shared;
use crate::stream::{FrameValues, OutFrame};

/// One shared replay's JS values, made on first need.
#[derive(Debug)]
pub struct ReplayValues {
  pub id: u64,
  pub text: Option<JsRef>,
  pub buffer: Option<JsRef>,
  pub chunk: Option<JsRef>,
}

impl ReplayValues {
  fn release(self, env: RawEnv, refs: &mut Refs) {
    for reference in [self.text, self.buffer, self.chunk].into_iter().flatten() {
      refs.release(env, reference);
    }
  }
}

/// The values kept for replay `id`.
pub fn kept(state: &Shared, env: RawEnv, id: u64) -> FrameValues {
  let s = state.borrow();
  let Some(values) = s.replays.iter().find(|v| v.id == id) else {
    return FrameValues::default();
  };
  let value = |r: &Option<JsRef>| r.as_ref().and_then(|r| r.value(env).ok());
  FrameValues {
    text: value(&values.text),
    buffer: value(&values.buffer),
    chunk: value(&values.chunk),
  }
}

/// Keeps the values `out` made for replay `id` that were not kept yet,
/// while the core still keeps the replay (a write's JS may have changed
/// the history meanwhile).
pub fn keep(state: &Shared, env: RawEnv, id: u64, out: &OutFrame<'_>) {
  let made = out.made();
  if made.text.is_none() && made.buffer.is_none() && made.chunk.is_none() {
    return;
  }
  let mut s = state.borrow_mut();
  let s = &mut *s;
  if !s.core.replay_shared_live(id) {
    return;
  }
  let at = match s.replays.iter().position(|v| v.id == id) {
    Some(at) => at,
    None => {
      s.replays.push(ReplayValues {
        id,
        text: None,
        buffer: None,
        chunk: None,
      });
      s.replays.len() - 1
    }
  };
  let values = &mut s.replays[at];
  for (kept, made) in [
    (&mut values.text, made.text),
    (&mut values.buffer, made.buffer),
    (&mut values.chunk, made.chunk),
  ] {
    if let (None, Some(value)) = (&kept, made) {
      *kept = s.refs.hold(env, value).ok();
    }
  }
}

/// Lets go of the values of replays the core no longer keeps.
pub fn prune(state: &Shared, env: RawEnv) {
  let mut s = state.borrow_mut();
  if s.replays.is_empty() {
    return;
  }
  let s = &mut *s;
  let (live, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut s.replays)
    .into_iter()
    .partition(|v| s.core.replay_shared_live(v.id));
  s.replays = live;
  for values in gone {
    values.release(env, &mut s.refs);
  }
}

/// Lets go of every kept value (the hub lets go of its own references).
pub fn release_all(replays: &mut Vec<ReplayValues>, env: RawEnv, refs: &mut Refs) {
  for values in replays.drain(..) {
    values.release(env, refs);
  }
}
