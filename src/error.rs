//! Every error the binding throws, made in one place: the core's refusals
//! ([`CoreError`]) and the JS-side type checks. A bad argument is a
//! `TypeError` (from the caller's realm) whose message starts with the
//! argument's name; a refusal of the hub's state is an `Error`; both carry
//! a `code`.

use std::ffi::CString;

use napi::{Error, Status};
use sse_helper_core::hub::CoreError;

use crate::js::{self, RawEnv};
use crate::state::Shared;

/// Throws `error` as JS sees it, and returns the pending exception.
pub fn throw(state: &Shared, env: RawEnv, error: CoreError) -> Error {
  let message = error.to_string();
  if let CoreError::Capacity(max) = error {
    return throw_capacity(state, env, max, message);
  }
  // The codes are fixed ASCII names: never an inner NUL.
  let code = CString::new(error.code()).unwrap_or_default();
  if error.is_type_error() {
    let ctor = state
      .borrow()
      .type_error
      .as_ref()
      .and_then(|c| c.value(env).ok());
    js::throw_type_error(env, ctor, &code, &message)
  } else {
    js::throw_error(env, &code, &message);
    Error::new(Status::PendingException, message)
  }
}

/// `new SseCapacityError(max)`, the JS surface's class (its `code`,
/// `statusCode` and `maxClients` are set there); a plain `Error` with the
/// same message and code without one.
fn throw_capacity(state: &Shared, env: RawEnv, max: usize, message: String) -> Error {
  let ctor = state
    .borrow()
    .capacity_error
    .as_ref()
    .and_then(|c| c.value(env).ok());
  let made = ctor.and_then(|ctor| {
    let max = js::double(env, max as f64).ok()?;
    js::construct(env, ctor, &[max]).ok()
  });
  match made {
    Some(error) => js::rethrow(env, error),
    None => js::throw_error(env, c"ERR_SSE_CAPACITY", &message),
  }
  Error::new(Status::PendingException, message)
}

/// A `TypeError` with code `ERR_INVALID_ARG_TYPE`: a JS value of the wrong
/// kind, which only the binding sees.
pub fn invalid_type(state: &Shared, env: RawEnv, message: &str) -> Error {
  let ctor = state
    .borrow()
    .type_error
    .as_ref()
    .and_then(|c| c.value(env).ok());
  js::throw_type_error(env, ctor, c"ERR_INVALID_ARG_TYPE", message)
}

/// A `TypeError` with code `ERR_INVALID_ARG_VALUE`, for a check the
/// binding makes on a JS value.
pub fn invalid(state: &Shared, env: RawEnv, message: &str) -> Error {
  throw(state, env, CoreError::invalid(message))
}

/// Maps a core result to a napi one, throwing its error.
pub fn check<T>(state: &Shared, env: RawEnv, result: Result<T, CoreError>) -> napi::Result<T> {
  result.map_err(|e| throw(state, env, e))
}
