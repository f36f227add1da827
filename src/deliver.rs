//! Executing a [`Dispatch`] on the JS thread: each stream-transport target
//! is written through its response's own `write`, with nothing borrowed (a
//! write runs JS that may call back into the hub), and the outcomes go
//! back to the core, whose effects are then executed. The socket
//! connections were handed the frame by the core already.
//!
//! The targets on Node's own `write` (nearly all) are written by one call
//! into JS (`writeBatch`, lib/socket.js), where the per-response property
//! reads and the call are JIT-compiled; it finds them in the hub's response
//! table by their slots, so nothing is made or read per target on this
//! side. The rest (an app's own `write`, a response Node buffers for) are
//! written one by one from here, as the slow-client rule and the app's JS
//! need.

use sse_helper_core::backpressure::Admit;
use sse_helper_core::hub::{Dispatch, Frame, Outcome, Planned};
use sse_helper_core::registry::ConnKey;

use crate::effects::execute;
use crate::js::{self, RawEnv, RawValue};
use crate::replays;
use crate::state::Shared;
use crate::stream::{self, OutFrame, WriteKeys, WriteOutcome};
use crate::table::ResponseTable;

/// `writeBatch`'s codes (`BATCH` in lib/socket.js).
mod batch {
  pub const WRITTEN: u8 = 0;
  pub const BUFFERED: u8 = 1;
  pub const ENDED: u8 = 2;
  pub const THREW: u8 = 3;
  /// Not Node's `write` (or not reached): written from here instead.
  pub const NATIVE: u8 = 4;
  /// Set on a place `writeBatch` reached, over its code; a place it did
  /// not reach (an exception escaped before it) still holds its slot.
  const DONE: u32 = 0x8000_0000;

  /// The code `writeBatch` left in a place of its array.
  pub fn code(place: u32) -> u8 {
    match place & DONE {
      0 => NATIVE,
      _ => u8::try_from(place & !DONE).unwrap_or(NATIVE).min(NATIVE),
    }
  }
}

/// Runs what the core planned for a send: its dispatch, or each of its
/// dispatches in turn; the sum of their values. A frame for one response
/// ([`Planned::Write`]) and a filter's candidates ([`Planned::Filter`]) are
/// the caller's to handle, who asked for them: they write nothing here.
pub fn planned(state: &Shared, env: RawEnv, planned: Planned) -> u32 {
  match planned {
    Planned::Ready(dispatch) => run(state, env, dispatch),
    Planned::Several(dispatches) => dispatches
      .into_iter()
      .map(|dispatch| run(state, env, dispatch))
      .sum(),
    Planned::Write(_) | Planned::Filter { .. } => 0,
  }
}

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

/// A target as read under one borrow before any JS runs: its slot in the
/// response table and, on the stream transport, whether it has a wrapper's
/// `flush`. Its response is read only if it is written from here.
struct Resolved {
  key: ConnKey,
  slot: Option<u32>,
  has_flush: bool,
  congested: bool,
}

/// What every write of one send shares: the frame's JS values, the batch
/// hook and the response table.
struct Send<'a> {
  out: OutFrame<'a>,
  /// The core's frame, whose HTTP chunk `writeBatch` is given.
  frame: &'a Frame,
  write_batch: Option<(RawValue, RawValue)>,
}

fn write_targets(state: &Shared, env: RawEnv, dispatch: &Dispatch) -> Vec<(ConnKey, Outcome)> {
  let (resolved, write_batch) = {
    let s = state.borrow();
    let hooks = s.hooks.as_ref();
    let hook = hooks.and_then(|h| h.write_batch.value(env).ok());
    let table = s.table.as_ref().and_then(|t| t.array(env));
    let resolved: Vec<Resolved> = dispatch
      .targets
      .iter()
      .filter_map(|t| {
        let conn = &s.core.connections().get(t.key)?.handle.handle;
        Some(Resolved {
          key: t.key,
          slot: conn.slot,
          has_flush: conn.flush.is_some(),
          congested: t.congested,
        })
      })
      .collect();
    (resolved, hook.zip(table))
  };
  let replay = dispatch.frame.replay_id();
  let out = match replay {
    Some(id) => OutFrame::with(dispatch.frame.body(), replays::kept(state, env, id)),
    None => OutFrame::new(dispatch.frame.body()),
  };
  let send = Send {
    out,
    frame: &dispatch.frame,
    write_batch,
  };
  // A response Node buffers for (congested) or that has a wrapper's
  // `flush` is written from here; the rest go to the batch first.
  let (one_by_one, batched): (Vec<Resolved>, Vec<Resolved>) = resolved
    .into_iter()
    .partition(|t| t.congested || t.has_flush || t.slot.is_none() || send.write_batch.is_none());
  let mut outcomes = Vec::with_capacity(one_by_one.len() + batched.len());
  let codes = run_batch(state, env, &send, &batched);
  let mut rest = one_by_one;
  for (t, code) in batched.into_iter().zip(codes) {
    let outcome = match code {
      batch::WRITTEN => Outcome::Written { buffering: false },
      batch::BUFFERED => Outcome::Buffered,
      batch::ENDED => Outcome::Failed,
      batch::THREW => Outcome::Threw,
      _ => {
        rest.push(t);
        continue;
      }
    };
    outcomes.push((t.key, outcome));
  }
  if !rest.is_empty() {
    write_rest(state, env, dispatch, &send, rest, &mut outcomes);
  }
  // The JS values a shared replay's frame got, for its next recipients.
  if let Some(id) = replay {
    replays::keep(state, env, id, &send.out);
  }
  outcomes
}

/// The targets written from here, one by one: the property names and
/// Node's `write` are read only now (no target needs them on most sends).
fn write_rest(
  state: &Shared,
  env: RawEnv,
  dispatch: &Dispatch,
  send: &Send<'_>,
  rest: Vec<Resolved>,
  outcomes: &mut Vec<(ConnKey, Outcome)>,
) {
  let node_write = {
    let s = state.borrow();
    let hooks = s.hooks.as_ref();
    hooks.and_then(|h| h.node_write.value(env).ok())
  };
  let Ok(keys) = WriteKeys::new(env, node_write) else {
    // Only while the env is torn down: nothing is written.
    js::clear_exception(env);
    return;
  };
  for t in rest {
    // Read now: an earlier write's JS may have removed this one.
    let target = {
      let s = state.borrow();
      s.core.connections().get(t.key).and_then(|e| {
        let conn = &e.handle.handle;
        let res = conn.res.value(env).ok()?;
        Some((res, conn.flush.as_ref().and_then(|f| f.value(env).ok())))
      })
    };
    let Some((res, flush)) = target else {
      continue;
    };
    if let Some(outcome) = write_one(env, dispatch, send, &keys, res, flush, t.congested) {
      outcomes.push((t.key, outcome));
    }
  }
}

/// `writeBatch` over `targets`: one code per target, `NATIVE` for those it
/// did not write (all of them if the call could not be made).
fn run_batch(state: &Shared, env: RawEnv, send: &Send<'_>, targets: &[Resolved]) -> Vec<u8> {
  let not_written = || vec![batch::NATIVE; targets.len()];
  let Some((hook, table)) = send.write_batch.filter(|_| !targets.is_empty()) else {
    return not_written();
  };
  // Only targets with a slot are batched (all of them: see the caller).
  // Each slot's place in the array gets its target's code back.
  let slots: Vec<u32> = targets.iter().filter_map(|t| t.slot).collect();
  let made = (|| {
    let batch = js::u32_array(env, &slots)?;
    let chunk = send.out.chunk(env, send.frame)?;
    let body_start = js::double(env, send.frame.body_start() as f64)?;
    Ok::<_, napi::Error>((batch, chunk, body_start))
  })();
  let Ok((batch, chunk, body_start)) = made else {
    js::clear_exception(env);
    return not_written();
  };
  let undefined = js::undefined(env).unwrap_or(table);
  // No slot given back while it runs is reused before it returns (see
  // `table`): app JS it reaches may remove a target and add a client.
  let running = RunningBatch::start(state);
  // It catches every write's exception itself; one escaping (a getter on
  // a response) leaves the places it did not reach holding their slots,
  // which read as NATIVE.
  let _ = js::call(env, undefined, hook, &[table, batch, chunk, body_start]);
  drop(running);
  let codes = match js::u32_array_values(env, batch) {
    Some(places) if places.len() == targets.len() => places.into_iter().map(batch::code).collect(),
    _ => not_written(),
  };
  if codes.iter().all(|&code| code == batch::NATIVE) {
    send.out.unused_chunk();
  }
  codes
}

/// A `writeBatch` call running: the table reuses no slot given back until
/// it ends, on every way out of the call.
struct RunningBatch<'a>(&'a Shared);

impl<'a> RunningBatch<'a> {
  fn start(state: &'a Shared) -> Self {
    with_table(state, ResponseTable::batch_started);
    Self(state)
  }
}

impl Drop for RunningBatch<'_> {
  fn drop(&mut self) {
    with_table(self.0, ResponseTable::batch_ended);
  }
}

fn with_table(state: &Shared, f: impl FnOnce(&mut ResponseTable)) {
  if let Some(table) = state.borrow_mut().table.as_mut() {
    f(table);
  }
}

/// One target written from here: the slow-client rule first when Node has
/// been buffering for it, then its own `write`. `None`: nothing to report.
fn write_one(
  env: RawEnv,
  dispatch: &Dispatch,
  send: &Send<'_>,
  keys: &WriteKeys,
  res: RawValue,
  flush: Option<RawValue>,
  congested: bool,
) -> Option<Outcome> {
  let mut buffering = false;
  if congested {
    // Node has been buffering for this one: look at how much.
    let pending = stream::pending_bytes(env, res);
    match dispatch.admit(pending) {
      Admit::Queue => buffering = pending > 0,
      Admit::Drop => return Some(Outcome::Dropped),
      Admit::Disconnect => return Some(Outcome::Slow),
    }
  }
  Some(match stream::write(env, keys, res, flush, &send.out) {
    WriteOutcome::Written => Outcome::Written { buffering },
    WriteOutcome::Buffered => Outcome::Buffered,
    WriteOutcome::Ended => Outcome::Failed,
    WriteOutcome::Threw => Outcome::Threw,
  })
}
