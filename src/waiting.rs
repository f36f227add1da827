//! What JS awaits from the hub's threads (the socket writer, the Redis
//! bus), and what keeps Node alive meanwhile.
//!
//! Those threads report through weak thread-safe functions, which never
//! keep the process alive by themselves: a server with nothing else to do
//! exits even though a bus is connected. While a promise waits for one of
//! them (a bus request, `ready()`, `close()`), they are ref'd, so a script
//! whose last statement is `await hub.close()` still runs what follows;
//! once nothing waits they are weak again. No timer is involved.
//!
//! Bus requests (`globalClientCount()`, the flush before `close()` and
//! `drain()`) are native promises: each is settled here when the bus's
//! answer reaches the JS thread, with a number or a `CoreError::Bus`.
//! While one waits, the JS hub is held strongly: an app may drop the hub
//! and keep only the promise, and a hub collected meanwhile would stop its
//! bus and leave that promise pending for ever.

use std::collections::BTreeMap;
use std::sync::Arc;

use napi::threadsafe_function::ThreadsafeFunctionHandle;
use napi::Result;
use sse_helper_core::hub::CoreError;

use crate::error;
use crate::js::{self, Deferred, JsRef, RawEnv, RawValue};
use crate::state::Shared;

/// Promises in flight and the thread-safe functions their answers come by.
#[derive(Default)]
pub struct Waiting {
  /// Bus requests not yet answered, by request number.
  requests: BTreeMap<u32, Deferred>,
  /// The number the next request gets (1 to 0xffff_fffe, wrapping).
  next: u32,
  /// How many things wait: one per pending request, one per JS hold.
  holds: u32,
  /// The hub's thread-safe functions: ref'd while `holds > 0`.
  notifiers: Vec<Arc<ThreadsafeFunctionHandle>>,
  /// The JS hub, held while a request waits (so it is not collected
  /// before the request is answered).
  keep: Option<JsRef>,
}

impl Waiting {
  /// A thread-safe function of this hub, ref'd now if something waits.
  pub fn add_notifier(&mut self, env: RawEnv, notifier: Arc<ThreadsafeFunctionHandle>) {
    if self.holds > 0 {
      js::keep_alive(env, &notifier, true);
    }
    self.notifiers.push(notifier);
  }

  /// One more thing waits: Node stays alive until it is released.
  pub fn hold(&mut self, env: RawEnv) {
    self.holds += 1;
    if self.holds == 1 {
      self.set_alive(env, true);
    }
  }

  /// One thing less waits; with none left, the threads are weak again.
  pub fn release(&mut self, env: RawEnv) {
    if self.holds == 0 {
      return;
    }
    self.holds -= 1;
    if self.holds == 0 {
      self.set_alive(env, false);
    }
  }

  /// The hub is let go of (GC): nothing it held may keep Node alive. The
  /// reference that kept it, if any, is the caller's to release.
  pub fn let_go(&mut self, env: RawEnv) -> Option<JsRef> {
    if self.holds > 0 {
      self.holds = 0;
      self.set_alive(env, false);
    }
    self.notifiers.clear();
    self.keep.take()
  }

  fn set_alive(&self, env: RawEnv, on: bool) {
    for notifier in &self.notifiers {
      js::keep_alive(env, notifier, on);
    }
  }

  /// A new request: its number, to hand the bus, and the promise's settler.
  fn open(&mut self, env: RawEnv, deferred: Deferred) -> u32 {
    let request = self.next.max(1);
    self.next = if request >= 0xffff_fffe {
      1
    } else {
      request + 1
    };
    self.requests.insert(request, deferred);
    self.hold(env);
    request
  }

  /// Takes the request `request` (if still waiting), releasing its hold;
  /// with the last one, the reference that kept the hub too.
  fn take(&mut self, env: RawEnv, request: u32) -> Option<(Deferred, Option<JsRef>)> {
    let deferred = self.requests.remove(&request)?;
    self.release(env);
    let keep = match self.requests.is_empty() {
      true => self.keep.take(),
      false => None,
    };
    Some((deferred, keep))
  }
}

/// A promise for a bus request: `ask` hands the request its number and
/// returns the answer when there is one now (the promise is then settled at
/// once), `None` when it comes later (`answer`). `hub` is the JS hub, held
/// until the last request is answered.
pub fn request(
  state: &Shared,
  env: RawEnv,
  hub: RawValue,
  ask: impl FnOnce(&Shared, u32) -> Option<std::result::Result<f64, CoreError>>,
) -> Result<RawValue> {
  let (deferred, promise) = js::promise(env)?;
  let request = {
    let mut s = state.borrow_mut();
    let s = &mut *s;
    if s.waiting.keep.is_none() {
      match s.refs.hold(env, hub) {
        Ok(keep) => s.waiting.keep = Some(keep),
        Err(e) => {
          reject_quietly(env, deferred);
          return Err(e);
        }
      }
    }
    s.waiting.open(env, deferred)
  };
  if let Some(now) = ask(state, request) {
    answer(state, env, request, now);
  }
  Ok(promise)
}

/// Settles request `request` with the bus's answer (nothing if it is no
/// longer waiting). Settling runs no JS: the promise's reactions are
/// microtasks.
pub fn answer(
  state: &Shared,
  env: RawEnv,
  request: u32,
  result: std::result::Result<f64, CoreError>,
) {
  let Some((deferred, keep)) = state.borrow_mut().waiting.take(env, request) else {
    return;
  };
  settle(env, deferred, result);
  if let Some(keep) = keep {
    state.borrow_mut().refs.release(env, keep);
  }
}

/// The bus stopped: every request still waiting fails with `error`,
/// oldest first.
pub fn fail_all(state: &Shared, env: RawEnv, error: &CoreError) {
  let waiting: Vec<u32> = state.borrow().waiting.requests.keys().copied().collect();
  for request in waiting {
    answer(state, env, request, Err(error.clone()));
  }
}

fn settle(env: RawEnv, deferred: Deferred, result: std::result::Result<f64, CoreError>) {
  match result {
    Ok(n) => match js::double(env, n) {
      Ok(value) => deferred.resolve(env, value),
      Err(_) => reject_quietly(env, deferred),
    },
    Err(e) => match error::value(env, &e) {
      Ok(reason) => deferred.reject(env, reason),
      Err(_) => reject_quietly(env, deferred),
    },
  }
}

/// Settles `deferred` with `undefined` when no value could be made (the
/// env is tearing down), so it is not left pending.
fn reject_quietly(env: RawEnv, deferred: Deferred) {
  js::clear_exception(env);
  if let Ok(undefined) = js::undefined(env) {
    deferred.reject(env, undefined);
  }
}
