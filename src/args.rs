//! JS arguments into core types, and every error the binding throws: bad
//! input leaves through here as a `TypeError` whose message starts with the
//! argument's name and whose `code` is `ERR_INVALID_ARG_VALUE` or
//! `ERR_INVALID_ARG_TYPE`.

use std::ffi::CStr;
use std::time::Duration;

use napi::{Error, Result, Status};
use napi_derive::napi;
use sse_helper_core::backpressure::SlowPolicy;
use sse_helper_core::frame::{self, EventFields};
use sse_helper_core::hub::{Settings, TransportMode};
use sse_helper_core::shards::MAX_WRITER_THREADS;

use crate::js::{self, RawEnv};
use crate::state::Shared;

/// Options of one event, as JS passes them.
#[napi(object)]
pub struct EventOptions {
  pub event: Option<String>,
  pub id: Option<String>,
  pub retry: Option<f64>,
}

fn invalid_arg(state: &Shared, env: RawEnv, code: &CStr, message: &str) -> Error {
  let ctor = state
    .borrow()
    .type_error
    .as_ref()
    .and_then(|c| c.value(env).ok());
  js::throw_type_error(env, ctor, code, message)
}

/// A `TypeError` with code `ERR_INVALID_ARG_VALUE`.
pub fn invalid(state: &Shared, env: RawEnv, message: &str) -> Error {
  invalid_arg(state, env, c"ERR_INVALID_ARG_VALUE", message)
}

/// A `TypeError` with code `ERR_INVALID_ARG_TYPE`.
pub fn invalid_type(state: &Shared, env: RawEnv, message: &str) -> Error {
  invalid_arg(state, env, c"ERR_INVALID_ARG_TYPE", message)
}

/// An `Error` with `code` (not a bad argument: the hub's state refuses).
pub fn state_error(env: RawEnv, code: &CStr, message: &str) -> Error {
  js::throw_error(env, code, message);
  Error::new(Status::PendingException, message.to_string())
}

/// The error `addClient` throws once `close()` was called.
pub fn closed(env: RawEnv) -> Error {
  js::throw_error(env, c"ERR_SSE_CLOSED", "the SSE hub was closed");
  Error::new(Status::PendingException, "the SSE hub was closed")
}

/// Runs `f`, turning a panic into a JS error instead of letting it unwind
/// into Node-API (which aborts the process). The `#[napi]` methods get the
/// same from `catch_unwind`; this is for the closures the binding makes.
pub fn guard_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
  std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    .map_err(napi::bindgen_prelude::panic_to_error)
    .and_then(|r| r)
}

/// An optional setting: `None` stays `None`, a value `parse` rejects is a
/// TypeError carrying `message`.
fn parse_option<V, T>(
  state: &Shared,
  env: RawEnv,
  value: Option<V>,
  parse: impl FnOnce(V) -> Option<T>,
  message: &str,
) -> Result<Option<T>> {
  match value {
    None => Ok(None),
    Some(v) => parse(v)
      .map(Some)
      .ok_or_else(|| invalid(state, env, message)),
  }
}

/// 2^53 - 1, JavaScript's `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// 2^31 - 1: the longest delay Node's timers take (longer ones fire at once).
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// `n` when it is a whole number within `min..=max`.
fn whole_number(n: f64, min: f64, max: f64) -> Option<u64> {
  (n.is_finite() && n.fract() == 0.0 && n >= min && n <= max).then_some(n as u64)
}

pub use sse_helper_core::hub::millis;

/// A `maxAgeMs`: any finite non-negative number.
pub fn max_age(state: &Shared, env: RawEnv, ms: f64) -> Result<Duration> {
  if !(ms.is_finite() && ms >= 0.0) {
    return Err(invalid(
      state,
      env,
      "maxAgeMs must be a non-negative finite number of milliseconds",
    ));
  }
  Ok(millis(ms))
}

/// Frames one event: checks the fields (a TypeError before anything is
/// written), then `event:`/`id:`/`retry:` lines and the data lines.
pub fn build_frame(
  state: &Shared,
  env: RawEnv,
  data: &str,
  options: Option<&EventOptions>,
) -> Result<Vec<u8>> {
  let Some(options) = options else {
    return Ok(frame::data_frame(data));
  };
  let retry = parse_option(
    state,
    env,
    options.retry,
    |r| whole_number(r, 0.0, MAX_SAFE_INTEGER),
    "options.retry must be a non-negative integer (milliseconds)",
  )?;
  let fields = EventFields {
    event: options.event.as_deref(),
    id: options.id.as_deref(),
    retry,
  };
  fields
    .validate()
    .map_err(|e| invalid(state, env, &format!("options.{e}")))?;
  let mut out = Vec::with_capacity(data.len() + 32);
  frame::push_event(&mut out, &fields, data);
  Ok(out)
}

/// `configure()`'s options as JS passes them (already checked for
/// unknown keys and types by the JS surface).
#[napi(object)]
pub struct HubOptions {
  pub transport: Option<String>,
  pub max_buffered_bytes: Option<f64>,
  pub slow_client_policy: Option<String>,
  pub history_size: Option<f64>,
  pub end_timeout_ms: Option<f64>,
  pub writer_threads: Option<f64>,
}

/// `configure()`'s options, checked; nothing is applied unless all are valid.
pub fn settings(state: &Shared, env: RawEnv, options: &HubOptions) -> Result<Settings> {
  let transport = options.transport.as_deref();
  let slow_client_policy = options.slow_client_policy.as_deref();
  let HubOptions {
    max_buffered_bytes,
    history_size,
    end_timeout_ms,
    writer_threads,
    ..
  } = *options;
  Ok(Settings {
    mode: parse_option(
      state,
      env,
      transport,
      |t| match t {
        "auto" => Some(TransportMode::Auto),
        "stream" => Some(TransportMode::Stream),
        _ => None,
      },
      "options.transport must be 'auto' or 'stream'",
    )?,
    max_buffered_bytes: parse_option(
      state,
      env,
      max_buffered_bytes,
      |b| whole_number(b, 1.0, MAX_SAFE_INTEGER).map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
      "options.maxBufferedBytes must be a positive integer",
    )?,
    slow_policy: parse_option(
      state,
      env,
      slow_client_policy,
      |p| match p {
        "disconnect" => Some(SlowPolicy::Disconnect),
        "drop" => Some(SlowPolicy::Drop),
        _ => None,
      },
      "options.slowClientPolicy must be 'disconnect' or 'drop'",
    )?,
    history_size: parse_option(
      state,
      env,
      history_size,
      |n| whole_number(n, 0.0, 1.0e6).map(|n| n as usize),
      "options.historySize must be an integer from 0 to 1000000",
    )?,
    end_timeout: parse_option(
      state,
      env,
      end_timeout_ms,
      |n| whole_number(n, 1.0, MAX_TIMER_MS).map(Duration::from_millis),
      "options.endTimeoutMs must be an integer from 1 to 2147483647",
    )?,
    writer_threads: parse_option(
      state,
      env,
      writer_threads,
      |n| whole_number(n, 1.0, MAX_WRITER_THREADS as f64).map(|n| n as usize),
      "options.writerThreads must be an integer from 1 to 64",
    )?,
  })
}
