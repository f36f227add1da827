//! Small, audited wrappers over raw Node-API calls for the paths that run once
//! per connection per send. napi-rs's typed wrappers add conversions and
//! allocations we do not want there; everything unsafe stays in this file.

use std::ffi::CStr;
use std::ptr;

use napi::{sys, Error, Result, Status};

pub type RawEnv = sys::napi_env;
pub type RawValue = sys::napi_value;

fn check(status: sys::napi_status, what: &str) -> Result<()> {
  if status == sys::Status::napi_ok {
    Ok(())
  } else {
    Err(Error::new(Status::GenericFailure, format!("{what} failed")))
  }
}

/// A strong reference that keeps a JS value alive across calls. It is not
/// released on drop (that needs the env): hand it back to [`Refs::release`].
#[must_use = "a JsRef must be released with Refs::release"]
#[derive(Debug)]
pub struct JsRef(sys::napi_ref);

impl JsRef {
  pub fn value(&self, env: RawEnv) -> Result<RawValue> {
    let mut value = ptr::null_mut();
    check(
      unsafe { sys::napi_get_reference_value(env, self.0, &mut value) },
      "napi_get_reference_value",
    )?;
    Ok(value)
  }
}

/// Creates and releases references and counts those alive, so tests can
/// assert that every reference taken was given back.
#[derive(Debug, Default)]
pub struct Refs {
  live: usize,
}

impl Refs {
  pub fn hold(&mut self, env: RawEnv, value: RawValue) -> Result<JsRef> {
    let mut raw = ptr::null_mut();
    check(
      unsafe { sys::napi_create_reference(env, value, 1, &mut raw) },
      "napi_create_reference",
    )?;
    self.live += 1;
    Ok(JsRef(raw))
  }

  pub fn release(&mut self, env: RawEnv, reference: JsRef) {
    // Deleting can only fail while the env is being torn down, when V8 frees
    // every reference anyway.
    unsafe { sys::napi_delete_reference(env, reference.0) };
    self.live -= 1;
  }

  pub fn live(&self) -> usize {
    self.live
  }
}

pub fn type_of(env: RawEnv, value: RawValue) -> sys::napi_valuetype {
  let mut kind = 0;
  unsafe { sys::napi_typeof(env, value, &mut kind) };
  kind
}

pub fn is_object(env: RawEnv, value: RawValue) -> bool {
  matches!(
    type_of(env, value),
    sys::ValueType::napi_object | sys::ValueType::napi_function
  )
}

pub fn is_function(env: RawEnv, value: RawValue) -> bool {
  type_of(env, value) == sys::ValueType::napi_function
}

pub fn get(env: RawEnv, object: RawValue, name: &CStr) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  check(
    unsafe { sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) },
    "reading a property",
  )?;
  Ok(value)
}

pub fn truthy(env: RawEnv, value: RawValue) -> bool {
  let mut coerced = ptr::null_mut();
  let mut truthy = false;
  unsafe {
    sys::napi_coerce_to_bool(env, value, &mut coerced);
    sys::napi_get_value_bool(env, coerced, &mut truthy);
  }
  truthy
}

/// `object[name]` when it is a number.
pub fn get_number(env: RawEnv, object: RawValue, name: &CStr) -> Option<f64> {
  let Ok(value) = get(env, object, name) else {
    clear_exception(env);
    return None;
  };
  let mut number = 0.0;
  (unsafe { sys::napi_get_value_double(env, value, &mut number) } == sys::Status::napi_ok)
    .then_some(number)
}

/// `!!object[name]`; a getter that throws reads as false and its exception
/// is cleared, because the callers only probe state.
pub fn get_truthy(env: RawEnv, object: RawValue, name: &CStr) -> bool {
  let Ok(value) = get(env, object, name) else {
    clear_exception(env);
    return false;
  };
  truthy(env, value)
}

pub fn get_symbol_keyed(env: RawEnv, object: RawValue, key: RawValue) -> Option<f64> {
  let mut value = ptr::null_mut();
  if unsafe { sys::napi_get_property(env, object, key, &mut value) } != sys::Status::napi_ok {
    clear_exception(env);
    return None;
  }
  let mut number = 0.0;
  if unsafe { sys::napi_get_value_double(env, value, &mut number) } != sys::Status::napi_ok {
    return None;
  }
  Some(number)
}

pub fn set_symbol_keyed(env: RawEnv, object: RawValue, key: RawValue, number: f64) -> Result<()> {
  let mut value = ptr::null_mut();
  check(
    unsafe { sys::napi_create_double(env, number, &mut value) },
    "napi_create_double",
  )?;
  check(
    unsafe { sys::napi_set_property(env, object, key, value) },
    "tagging the response",
  )
}

pub fn new_symbol(env: RawEnv, description: &str) -> Result<RawValue> {
  let mut text = ptr::null_mut();
  check(
    unsafe {
      sys::napi_create_string_utf8(
        env,
        description.as_ptr().cast(),
        description.len() as isize,
        &mut text,
      )
    },
    "napi_create_string_utf8",
  )?;
  let mut symbol = ptr::null_mut();
  check(
    unsafe { sys::napi_create_symbol(env, text, &mut symbol) },
    "napi_create_symbol",
  )?;
  Ok(symbol)
}

pub fn string(env: RawEnv, text: &str) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  check(
    unsafe {
      sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut value)
    },
    "napi_create_string_utf8",
  )?;
  Ok(value)
}

/// A Node `Buffer` holding a copy of `bytes`; one per frame, shared by every
/// `res.write` of that frame.
pub fn buffer(env: RawEnv, bytes: &[u8]) -> Result<RawValue> {
  let mut data = ptr::null_mut();
  let mut value = ptr::null_mut();
  check(
    unsafe {
      sys::napi_create_buffer_copy(
        env,
        bytes.len(),
        bytes.as_ptr().cast(),
        &mut data,
        &mut value,
      )
    },
    "napi_create_buffer_copy",
  )?;
  Ok(value)
}

/// Calls `func` with `this = recv`. A JS exception is caught, cleared and
/// returned, so one failing response never aborts a loop over many.
pub fn call(
  env: RawEnv,
  recv: RawValue,
  func: RawValue,
  args: &[RawValue],
) -> std::result::Result<RawValue, RawValue> {
  let mut result = ptr::null_mut();
  let status =
    unsafe { sys::napi_call_function(env, recv, func, args.len(), args.as_ptr(), &mut result) };
  if status == sys::Status::napi_ok {
    Ok(result)
  } else {
    Err(clear_exception(env))
  }
}

/// Calls `object[method](...args)`, swallowing a missing method or a throw.
pub fn call_method_quietly(env: RawEnv, object: RawValue, method: &CStr, args: &[RawValue]) {
  match get(env, object, method) {
    Ok(func) if is_function(env, func) => {
      let _ = call(env, object, func, args);
    }
    _ => {
      clear_exception(env);
    }
  }
}

pub fn set_named(env: RawEnv, object: RawValue, name: &CStr, value: RawValue) -> Result<()> {
  check(
    unsafe { sys::napi_set_named_property(env, object, name.as_ptr(), value) },
    "setting a property",
  )
}

/// `delete object[name]`, ignoring failures (a frozen object keeps it).
pub fn delete_named(env: RawEnv, object: RawValue, name: &str) {
  if let Ok(key) = string(env, name) {
    let mut deleted = false;
    if unsafe { sys::napi_delete_property(env, object, key, &mut deleted) } != sys::Status::napi_ok
    {
      clear_exception(env);
    }
  }
}

pub fn clear_exception(env: RawEnv) -> RawValue {
  let mut exception = ptr::null_mut();
  let mut pending = false;
  unsafe {
    sys::napi_is_exception_pending(env, &mut pending);
    if pending {
      sys::napi_get_and_clear_last_exception(env, &mut exception);
    }
  }
  exception
}

/// Throws a `TypeError` (made with `ctor` when given, so it belongs to the
/// caller's realm) carrying `code`, and returns the error napi-rs expects for
/// "an exception is already pending".
pub fn throw_type_error(env: RawEnv, ctor: Option<RawValue>, code: &CStr, message: &str) -> Error {
  let mut code_value = ptr::null_mut();
  let mut msg_value = ptr::null_mut();
  let mut error = ptr::null_mut();
  unsafe {
    sys::napi_create_string_utf8(
      env,
      code.as_ptr(),
      code.count_bytes() as isize,
      &mut code_value,
    );
    sys::napi_create_string_utf8(
      env,
      message.as_ptr().cast(),
      message.len() as isize,
      &mut msg_value,
    );
    let made = match ctor {
      Some(ctor) => {
        sys::napi_new_instance(env, ctor, 1, [msg_value].as_ptr(), &mut error)
          == sys::Status::napi_ok
          && sys::napi_set_named_property(env, error, c"code".as_ptr(), code_value)
            == sys::Status::napi_ok
      }
      None => false,
    };
    if !made {
      clear_exception(env);
      sys::napi_create_type_error(env, code_value, msg_value, &mut error);
    }
    sys::napi_throw(env, error);
  }
  Error::new(Status::PendingException, message.to_string())
}
