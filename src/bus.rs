//! The binding's side of the Redis bus: starting it with a thread-safe
//! function that brings its events to the JS thread, and executing what the bus reports (live entries
//! and replays for stream-transport connections, link changes, answers).

use std::time::Instant;

use napi::{Env, Error, Result};
use napi_derive::napi;
use sse_helper_core::bus::link::Notice;
use sse_helper_core::bus::BusConfig;
use sse_helper_core::bus::BusError;
use sse_helper_core::hub::{options, BusAsk, BusStep, CoreError};

use crate::deliver;
use crate::effects::{emit, notifier};
use crate::error;
use crate::js::{RawEnv, RawValue};
use crate::state::Shared;
use crate::waiting;

/// `configure({ redis })`, as the JS surface passes it (URL string already
/// turned into `{ url }`, defaults filled in).
#[napi(object)]
pub struct BusOptions {
  pub url: String,
  pub stream: String,
  pub max_len: f64,
  pub replay_limit: f64,
  /// PEM certificates to trust for `rediss://` (a private CA).
  pub ca: Option<String>,
}

impl BusOptions {
  /// The core's view of them.
  fn view(&self) -> options::BusOptions<'_> {
    options::BusOptions {
      url: &self.url,
      stream: &self.stream,
      max_len: self.max_len,
      replay_limit: self.replay_limit,
      ca: self.ca.as_deref(),
    }
  }
}

/// Checks the options and starts the bus thread.
pub fn start(state: &Shared, env: &Env, options: &BusOptions) -> Result<()> {
  let config = check(state, env.raw(), options)?;
  let notify = notifier(state, env, "sseHelperBusEvents", execute)?;
  state
    .borrow_mut()
    .core
    .start_bus(config, notify)
    .map_err(|e| Error::from_reason(format!("starting the Redis bus failed: {e}")))
}

/// Checks the options (a TypeError naming the one that is wrong) without
/// starting anything, so `configure()` applies nothing unless all are valid.
pub fn check(state: &Shared, raw: RawEnv, options: &BusOptions) -> Result<BusConfig> {
  let checked = state.borrow().core.check_bus(&options.view());
  error::check(state, raw, checked)
}

/// A bus request's promise: `globalClientCount()`'s count, rejected with
/// `ERR_SSE_BUS` without a running bus.
pub fn count(state: &Shared, env: RawEnv, hub: RawValue) -> Result<RawValue> {
  waiting::request(
    state,
    env,
    hub,
    |state, request| state.borrow_mut().core.ask_bus(BusAsk::Count(request)),
    Err(closed()),
  )
}

/// A bus request's promise, resolved once everything this instance
/// appended has been read back and delivered (at once without a running
/// bus: there is nothing to wait for).
pub fn flush(state: &Shared, env: RawEnv, hub: RawValue) -> Result<RawValue> {
  waiting::request(
    state,
    env,
    hub,
    |state, request| state.borrow_mut().core.ask_bus(BusAsk::Flush(request)),
    Ok(0.0),
  )
}

/// The failure of a request the bus can no longer answer.
fn closed() -> CoreError {
  CoreError::Bus(BusError::Closed.to_string())
}

/// Carries out what the bus reported, in order.
fn execute(state: &Shared, env: RawEnv) {
  let events = state.borrow_mut().core.bus_events();
  for event in events {
    // Each is decided when its turn comes, after the JS of the ones before.
    let step = state.borrow_mut().core.bus_step(event, Instant::now());
    match step {
      BusStep::Link(Notice::Connected) => emit(state, env, "bus", "connected", ""),
      BusStep::Link(Notice::Disconnected(error)) => emit(state, env, "bus", "disconnected", &error),
      BusStep::Deliver(dispatches) => {
        for dispatch in dispatches {
          deliver::run(state, env, dispatch);
        }
      }
      BusStep::Answer { request, result } => waiting::answer(state, env, request, result),
      BusStep::Stopped => {
        emit(state, env, "busStopped", "", "");
        // Nothing more will be answered.
        waiting::fail_all(state, env, &closed());
      }
    }
  }
}
