//! The binding's side of the Redis bus: `NativeHub`'s bus methods (its
//! options, its start, the requests JS makes of it as native promises),
//! starting it with a thread-safe function that brings its events to the
//! JS thread, and executing what the core decides of each (live entries
//! and replays for stream-transport connections, link changes, answers).

use std::time::Instant;

use napi::bindgen_prelude::{This, Unknown};
use napi::{Env, Error, JsValue, Result};
use napi_derive::napi;
use sse_helper_core::bus::link::Notice;
use sse_helper_core::bus::BusError;
use sse_helper_core::bus::{BusConfig, Mark};
use sse_helper_core::hub::{options, BusAsk, BusStep, CoreError};

use crate::deliver;
use crate::effects::key_of;
use crate::effects::{emit, notifier};
use crate::error;
use crate::hub::NativeHub;
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

/// The promise of a numbered bus request (`BusAsk::Count`, `Flush`,
/// `Ready`), settled at once when the core answers at once.
fn request(state: &Shared, env: RawEnv, hub: RawValue, ask: fn(u32) -> BusAsk) -> Result<RawValue> {
  waiting::request(state, env, hub, |state, request| {
    state.borrow_mut().core.ask_bus(ask(request))
  })
}

/// The failure of a request the bus can no longer answer.
fn closed() -> CoreError {
  CoreError::Bus(BusError::Closed.to_string())
}

/// The bus's part of the JS class: its options, its start, and the
/// requests JS makes of it.
#[napi]
impl NativeHub {
  /// Checks `configure({ redis })`'s options without starting anything
  /// (`configure` applies nothing unless every option is valid).
  #[napi(catch_unwind)]
  pub fn check_bus(&self, env: Env, options: BusOptions) -> Result<()> {
    check(&self.state, env.raw(), &options).map(|_| ())
  }

  /// Starts the Redis bus (once per hub): from now on broadcasts, publishes
  /// and `sendTo` go through the stream and every instance delivers them.
  #[napi(catch_unwind)]
  pub fn start_bus(&self, env: Env, options: BusOptions) -> Result<()> {
    start(&self.state, &env, &options)
  }

  /// Asks the bus for `res`'s replay if `register` held it for one (from
  /// its `Last-Event-ID`, or from the mark its headers were flushed at);
  /// called on the tick after `addClient`, so channels the route joined
  /// right away count. False when nothing was waiting.
  #[napi(catch_unwind)]
  pub fn request_replay(&self, env: Env, res: Unknown) -> bool {
    match key_of(&self.state, env.raw(), res.raw()) {
      Some(key) => {
        let asked = self.state.borrow_mut().core.ask_bus(BusAsk::Replay(key));
        matches!(asked, Some(Ok(n)) if n > 0.0)
      }
      None => false,
    }
  }

  /// Where the bus's live delivery is now (`""` before it knows), for a
  /// response whose headers are flushed: `register` gets it back as `mark`,
  /// and a connection that missed entries since is replayed them. `None`
  /// without a running bus.
  #[napi(catch_unwind)]
  pub fn bus_mark(&self) -> Option<String> {
    self.state.borrow().core.bus_mark().map(Mark::to_text)
  }

  /// Every live instance's client count, from the bus: a promise that
  /// rejects (code `ERR_SSE_BUS`) when the bus cannot answer. Node stays
  /// alive while it waits.
  #[napi(catch_unwind, ts_return_type = "Promise<number>")]
  pub fn bus_count<'env>(&self, env: &'env Env, this: This<'env>) -> Result<Unknown<'env>> {
    self.promise(env, &this, BusAsk::Count)
  }

  /// A promise resolved once everything this instance appended to the bus
  /// has been read back and delivered (at once without a running bus).
  /// Node stays alive while it waits.
  #[napi(catch_unwind, ts_return_type = "Promise<number>")]
  pub fn bus_flush<'env>(&self, env: &'env Env, this: This<'env>) -> Result<Unknown<'env>> {
    self.promise(env, &this, BusAsk::Flush)
  }

  /// `ready()`: a promise resolved at once without a bus or while it is
  /// connected, else once it connects; rejected (`ERR_SSE_CLOSED`) once the
  /// bus has stopped. Node stays alive while it waits.
  #[napi(catch_unwind, ts_return_type = "Promise<number>")]
  pub fn bus_ready<'env>(&self, env: &'env Env, this: This<'env>) -> Result<Unknown<'env>> {
    self.promise(env, &this, BusAsk::Ready)
  }
}

impl NativeHub {
  /// The promise of the numbered request `ask` makes.
  fn promise<'env>(
    &self,
    env: &'env Env,
    this: &This<'env>,
    ask: fn(u32) -> BusAsk,
  ) -> Result<Unknown<'env>> {
    let promise = request(&self.state, env.raw(), this.object.raw(), ask)?;
    // SAFETY: `promise` was just made in this call's env.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), promise) })
  }
}

/// Carries out what the bus reported, in order.
fn execute(state: &Shared, env: RawEnv) {
  let events = state.borrow_mut().core.bus_events();
  for event in events {
    // Each is decided when its turn comes, after the JS of the ones before.
    let step = state.borrow_mut().core.bus_step(event, Instant::now());
    match step {
      BusStep::Link { notice, ready } => {
        for request in ready {
          waiting::answer(state, env, request, Ok(0.0));
        }
        match notice {
          Notice::Connected => emit(state, env, "bus", "connected", ""),
          Notice::Disconnected(error) => emit(state, env, "bus", "disconnected", &error),
        }
      }
      BusStep::Deliver(dispatches) => {
        for dispatch in dispatches {
          deliver::run(state, env, dispatch);
        }
      }
      BusStep::Answer { request, result } => waiting::answer(state, env, request, result),
      BusStep::Stopped { ready } => {
        // Stopped before the link came (back) up: those `ready()` calls refuse.
        for request in ready {
          waiting::answer(state, env, request, Err(CoreError::Closed));
        }
        emit(state, env, "busStopped", "", "");
        // Nothing more will be answered.
        waiting::fail_all(state, env, &closed());
      }
    }
  }
}
