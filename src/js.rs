//! Small, audited wrappers over raw Node-API calls for the paths that run once
//! per connection per send. napi-rs's typed wrappers add conversions and
//! allocations we do not want there; every raw call of the binding is here.
//!
//! The same contract holds for every function in this file, and the SAFETY
//! notes below refer to it:
//! - `env` is the `napi_env` of the current call into the addon, on the JS
//!   thread; no function here is called from any other thread.
//! - every `RawValue` passed in was obtained during that same call (so it is
//!   alive in the current handle scope) or from a [`JsRef`] just now.
//! - out-pointers point to locals of the right type that live across the
//!   call.
//!
//! A failed status never goes unnoticed: it is returned as an error, or the
//! function documents what a failure means for its caller; an exception a
//! call leaves pending is either returned to the caller or cleared here,
//! never left behind by accident.

use std::ffi::CStr;
use std::ptr;

use napi::{sys, threadsafe_function, Error, Result, Status};

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
    // SAFETY: see the module contract; `self.0` is a live reference (only
    // `Refs::release`, which consumes the `JsRef`, deletes it).
    let status = unsafe { sys::napi_get_reference_value(env, self.0, &mut value) };
    check(status, "napi_get_reference_value")?;
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
    // SAFETY: see the module contract.
    let status = unsafe { sys::napi_create_reference(env, value, 1, &mut raw) };
    check(status, "napi_create_reference")?;
    self.live += 1;
    Ok(JsRef(raw))
  }

  pub fn release(&mut self, env: RawEnv, reference: JsRef) {
    // SAFETY: see the module contract; the `JsRef` is consumed, so the
    // reference is deleted exactly once. Deleting can only fail while the
    // env is being torn down, when V8 frees every reference anyway.
    let _ = unsafe { sys::napi_delete_reference(env, reference.0) };
    self.live -= 1;
  }

  pub fn live(&self) -> usize {
    self.live
  }
}

/// The value's type; `napi_undefined` if it cannot be read.
pub fn type_of(env: RawEnv, value: RawValue) -> sys::napi_valuetype {
  let mut kind = sys::ValueType::napi_undefined;
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_typeof(env, value, &mut kind) };
  if status != sys::Status::napi_ok {
    return sys::ValueType::napi_undefined;
  }
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

/// `a === b`, without running JS.
pub fn strict_equals(env: RawEnv, a: RawValue, b: RawValue) -> bool {
  let mut equal = false;
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_strict_equals(env, a, b, &mut equal) };
  status == sys::Status::napi_ok && equal
}

/// `undefined`.
pub fn undefined(env: RawEnv) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_undefined(env, &mut value) };
  check(status, "napi_get_undefined")?;
  Ok(value)
}

pub fn boolean(env: RawEnv, value: bool) -> Result<RawValue> {
  let mut result = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_boolean(env, value, &mut result) };
  check(status, "napi_get_boolean")?;
  Ok(result)
}

pub fn double(env: RawEnv, value: f64) -> Result<RawValue> {
  let mut result = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_create_double(env, value, &mut result) };
  check(status, "napi_create_double")?;
  Ok(result)
}

/// `new ctor(...args)`; the thrown value when the constructor throws.
pub fn construct(
  env: RawEnv,
  ctor: RawValue,
  args: &[RawValue],
) -> std::result::Result<RawValue, RawValue> {
  let mut result = ptr::null_mut();
  // SAFETY: see the module contract; `ctor` is a constructor the JS
  // surface passed in, `args` a live slice of values of this call.
  let status = unsafe { sys::napi_new_instance(env, ctor, args.len(), args.as_ptr(), &mut result) };
  match status {
    sys::Status::napi_ok => Ok(result),
    _ => Err(clear_exception(env)),
  }
}

/// A new JS array holding `values`, in order. Its elements are defined, as
/// an array literal's are, so no setter on `Array.prototype` runs.
pub fn array(env: RawEnv, values: &[RawValue]) -> Result<RawValue> {
  let mut result = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_create_array_with_length(env, values.len(), &mut result) };
  check(status, "napi_create_array_with_length")?;
  for (index, value) in values.iter().enumerate() {
    let index =
      u32::try_from(index).map_err(|_| Error::from_reason("an array of over 2^32 values"))?;
    define_element(env, result, index, *value)?;
  }
  Ok(result)
}

/// `object[name]`. A getter or Proxy trap may run and throw; its exception
/// stays pending for the caller, which either propagates it (`?`) or clears
/// it.
pub fn get(env: RawEnv, object: RawValue, name: &CStr) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract; `name` is NUL-terminated.
  let status = unsafe { sys::napi_get_named_property(env, object, name.as_ptr(), &mut value) };
  check(status, "reading a property")?;
  Ok(value)
}

/// `object[key]`, `key` a JS value (a property name made once and read on
/// many objects: no string is made per read, as `get` makes one).
pub fn get_by_key(env: RawEnv, object: RawValue, key: RawValue) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_property(env, object, key, &mut value) };
  check(status, "reading a property")?;
  Ok(value)
}

/// `!!value`; false if it cannot be coerced (it always can for values).
pub fn truthy(env: RawEnv, value: RawValue) -> bool {
  let mut truthy = false;
  // SAFETY: see the module contract. A boolean (what `write` returns, what
  // `finished` holds) is read as it is, in one call; it fails, changing
  // nothing, for any other value.
  if unsafe { sys::napi_get_value_bool(env, value, &mut truthy) } == sys::Status::napi_ok {
    return truthy;
  }
  let mut coerced = ptr::null_mut();
  // SAFETY: see the module contract; ToBoolean runs no JS.
  let coerce = unsafe { sys::napi_coerce_to_bool(env, value, &mut coerced) };
  if coerce != sys::Status::napi_ok {
    return false;
  }
  // SAFETY: see the module contract; `coerced` was just made.
  let read = unsafe { sys::napi_get_value_bool(env, coerced, &mut truthy) };
  read == sys::Status::napi_ok && truthy
}

/// `object[name]` when it is a number; a getter that throws reads as
/// `None` and its exception is cleared, because the callers only probe.
pub fn get_number(env: RawEnv, object: RawValue, name: &CStr) -> Option<f64> {
  let Ok(value) = get(env, object, name) else {
    clear_exception(env);
    return None;
  };
  number(env, value)
}

fn number(env: RawEnv, value: RawValue) -> Option<f64> {
  let mut number = 0.0;
  // SAFETY: see the module contract; a non-number is reported by status.
  let status = unsafe { sys::napi_get_value_double(env, value, &mut number) };
  (status == sys::Status::napi_ok).then_some(number)
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

/// [`get_truthy`] with the name as a JS value (`get_by_key`).
pub fn get_truthy_by_key(env: RawEnv, object: RawValue, key: RawValue) -> bool {
  let Ok(value) = get_by_key(env, object, key) else {
    clear_exception(env);
    return false;
  };
  truthy(env, value)
}

/// `array[index]`, on an array this crate made (no getter runs).
pub fn element(env: RawEnv, array: RawValue, index: u32) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_element(env, array, index, &mut value) };
  check(status, "napi_get_element")?;
  Ok(value)
}

/// `object[key]` when it is a number; a throwing Proxy trap reads as
/// `None` and its exception is cleared.
pub fn get_symbol_keyed(env: RawEnv, object: RawValue, key: RawValue) -> Option<f64> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_property(env, object, key, &mut value) };
  if status != sys::Status::napi_ok {
    clear_exception(env);
    return None;
  }
  number(env, value)
}

/// `object[key] = number`. A Proxy trap may run and throw; the exception
/// stays pending for the caller.
pub fn set_symbol_keyed(env: RawEnv, object: RawValue, key: RawValue, number: f64) -> Result<()> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_create_double(env, number, &mut value) };
  check(status, "napi_create_double")?;
  // SAFETY: see the module contract; `value` was just made.
  let status = unsafe { sys::napi_set_property(env, object, key, value) };
  check(status, "tagging the response")
}

/// `delete object[key]`, ignoring failures (a sealed object keeps it).
pub fn delete_keyed(env: RawEnv, object: RawValue, key: RawValue) {
  let mut deleted = false;
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_delete_property(env, object, key, &mut deleted) };
  if status != sys::Status::napi_ok {
    clear_exception(env);
  }
}

/// `new WeakMap()`, with the realm's own constructor.
pub fn new_weak_map(env: RawEnv) -> Result<RawValue> {
  let mut global = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_get_global(env, &mut global) };
  check(status, "napi_get_global")?;
  let ctor = get(env, global, c"WeakMap")?;
  let mut map = ptr::null_mut();
  // SAFETY: see the module contract; no arguments (a null array of length 0).
  let status = unsafe { sys::napi_new_instance(env, ctor, 0, ptr::null(), &mut map) };
  check(status, "new WeakMap()")?;
  Ok(map)
}

/// `map.get(key)` when it is a number. A throw (a patched `WeakMap`) reads
/// as `None` and is cleared.
pub fn weak_map_get(env: RawEnv, map: RawValue, key: RawValue) -> Option<f64> {
  let get = get(env, map, c"get").ok().filter(|f| is_function(env, *f));
  let Some(get) = get else {
    clear_exception(env);
    return None;
  };
  number(env, call(env, map, get, &[key]).ok()?)
}

/// `map.set(key, number)`; false (the exception cleared) if it threw.
pub fn weak_map_set(env: RawEnv, map: RawValue, key: RawValue, number: f64) -> bool {
  let (Ok(set), Ok(value)) = (get(env, map, c"set"), double(env, number)) else {
    clear_exception(env);
    return false;
  };
  is_function(env, set) && call(env, map, set, &[key, value]).is_ok()
}

pub fn new_symbol(env: RawEnv, description: &str) -> Result<RawValue> {
  let text = string(env, description)?;
  let mut symbol = ptr::null_mut();
  // SAFETY: see the module contract; `text` was just made.
  let status = unsafe { sys::napi_create_symbol(env, text, &mut symbol) };
  check(status, "napi_create_symbol")?;
  Ok(symbol)
}

pub fn string(env: RawEnv, text: &str) -> Result<RawValue> {
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract; `text` is valid UTF-8 of the given
  // length (a `&str`), which napi copies.
  let status = unsafe {
    sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut value)
  };
  check(status, "napi_create_string_utf8")?;
  Ok(value)
}

/// A Node `Buffer` holding a copy of `bytes`; one per frame, shared by every
/// `res.write` of that frame.
pub fn buffer(env: RawEnv, bytes: &[u8]) -> Result<RawValue> {
  let mut data = ptr::null_mut();
  let mut value = ptr::null_mut();
  // SAFETY: see the module contract; `bytes` is valid for its length, and
  // napi copies it before returning.
  let status = unsafe {
    sys::napi_create_buffer_copy(
      env,
      bytes.len(),
      bytes.as_ptr().cast(),
      &mut data,
      &mut value,
    )
  };
  check(status, "napi_create_buffer_copy")?;
  Ok(value)
}

/// Defines `array[index]` as a plain data property holding `value`
/// (writable, enumerable, configurable, as an element assignment would
/// make it): unlike `array[index] = value`, defining runs no setter, not
/// even one an app put on `Array.prototype`, so no JS runs.
pub fn define_element(env: RawEnv, array: RawValue, index: u32, value: RawValue) -> Result<()> {
  // The index as a NUL-terminated decimal name: V8 treats a canonical
  // numeric name as the element.
  let mut name = [0u8; 11];
  let mut digits = [0u8; 10];
  let (mut n, mut len) = (index, 0);
  loop {
    digits[len] = b'0' + (n % 10) as u8;
    len += 1;
    n /= 10;
    if n == 0 {
      break;
    }
  }
  for (i, digit) in digits[..len].iter().rev().enumerate() {
    name[i] = *digit;
  }
  let descriptor = sys::napi_property_descriptor {
    utf8name: name.as_ptr().cast(),
    name: ptr::null_mut(),
    method: None,
    getter: None,
    setter: None,
    value,
    attributes: sys::PropertyAttributes::writable
      | sys::PropertyAttributes::enumerable
      | sys::PropertyAttributes::configurable,
    data: ptr::null_mut(),
  };
  // SAFETY: see the module contract; `descriptor` is one valid descriptor
  // whose `utf8name` points to `name`, NUL-terminated (at most 10 digits
  // in 11 bytes) and alive for the call.
  let status = unsafe { sys::napi_define_properties(env, array, 1, &descriptor) };
  check(status, "napi_define_properties")
}

/// A new `Uint32Array` holding `values`.
pub fn u32_array(env: RawEnv, values: &[u32]) -> Result<RawValue> {
  let bytes = std::mem::size_of_val(values);
  let mut data = ptr::null_mut();
  let mut buffer = ptr::null_mut();
  // SAFETY: see the module contract; napi allocates `bytes` bytes and
  // points `data` at them.
  let status = unsafe { sys::napi_create_arraybuffer(env, bytes, &mut data, &mut buffer) };
  check(status, "napi_create_arraybuffer")?;
  if bytes > 0 {
    // SAFETY: `data` points to the `bytes` bytes just allocated, which
    // nothing else refers to yet; `values` is a distinct Rust slice of
    // that many bytes. Copied as bytes, so nothing is assumed of `data`'s
    // alignment.
    unsafe { ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), data.cast::<u8>(), bytes) };
  }
  let mut array = ptr::null_mut();
  // SAFETY: see the module contract; the view covers the whole buffer.
  let status = unsafe {
    sys::napi_create_typedarray(
      env,
      sys::TypedarrayType::uint32_array,
      values.len(),
      buffer,
      0,
      &mut array,
    )
  };
  check(status, "napi_create_typedarray")?;
  Ok(array)
}

/// The values of a `Uint32Array` as they are now (copied out, so nothing
/// borrows JS memory afterwards); `None` if it is not one (or was detached).
pub fn u32_array_values(env: RawEnv, array: RawValue) -> Option<Vec<u32>> {
  let mut kind = sys::TypedarrayType::uint32_array;
  let mut len = 0usize;
  let mut data = ptr::null_mut();
  let mut buffer = ptr::null_mut();
  let mut offset = 0usize;
  // SAFETY: see the module contract; every out-pointer is a local.
  let status = unsafe {
    sys::napi_get_typedarray_info(
      env,
      array,
      &mut kind,
      &mut len,
      &mut data,
      &mut buffer,
      &mut offset,
    )
  };
  if status != sys::Status::napi_ok || kind != sys::TypedarrayType::uint32_array {
    return None;
  }
  if len == 0 {
    return Some(Vec::new());
  }
  if data.is_null() {
    return None;
  }
  // SAFETY: napi reported `len` elements of 4 bytes at `data` for this
  // live view, and no JS runs while they are copied. Read as bytes, so
  // nothing is assumed of `data`'s alignment.
  let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len * 4) };
  Some(
    bytes
      .chunks_exact(4)
      .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
      .collect(),
  )
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
  // SAFETY: see the module contract; `args` is a live slice of values of
  // this call, its length passed with it.
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

/// `object[name] = value`. A setter or Proxy trap may run and throw; the
/// exception stays pending for the caller.
pub fn set_named(env: RawEnv, object: RawValue, name: &CStr, value: RawValue) -> Result<()> {
  // SAFETY: see the module contract; `name` is NUL-terminated.
  let status = unsafe { sys::napi_set_named_property(env, object, name.as_ptr(), value) };
  check(status, "setting a property")
}

/// `delete object[name]`, ignoring failures (a frozen object keeps it).
pub fn delete_named(env: RawEnv, object: RawValue, name: &str) {
  if let Ok(key) = string(env, name) {
    delete_keyed(env, object, key);
  }
}

/// Clears the pending exception, if any, and returns it (null if none).
pub fn clear_exception(env: RawEnv) -> RawValue {
  let mut exception = ptr::null_mut();
  let mut pending = false;
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_is_exception_pending(env, &mut pending) };
  if status == sys::Status::napi_ok && pending {
    // SAFETY: see the module contract; an exception is pending.
    let status = unsafe { sys::napi_get_and_clear_last_exception(env, &mut exception) };
    if status != sys::Status::napi_ok {
      return ptr::null_mut();
    }
  }
  exception
}

/// Throws `exception` (one [`call`] returned or [`clear_exception`] took)
/// again, so it reaches the caller of the current entry point.
pub fn rethrow(env: RawEnv, exception: RawValue) {
  if exception.is_null() {
    return;
  }
  // SAFETY: see the module contract; no exception is pending (the callers
  // cleared it), so napi_throw can only fail while the env tears down.
  let _ = unsafe { sys::napi_throw(env, exception) };
}

/// Throws an `Error` carrying `code`.
pub fn throw_error(env: RawEnv, code: &CStr, message: &str) {
  if let Ok(error) = error(env, code, message) {
    rethrow(env, error);
  }
}

/// A new `Error` carrying `code`, not thrown (a promise's rejection).
pub fn error(env: RawEnv, code: &CStr, message: &str) -> Result<RawValue> {
  let code_value = cstr_string(env, code)?;
  let msg_value = string(env, message)?;
  let mut error = ptr::null_mut();
  // SAFETY: see the module contract; both strings were just made.
  let status = unsafe { sys::napi_create_error(env, code_value, msg_value, &mut error) };
  check(status, "napi_create_error")?;
  Ok(error)
}

/// How a promise made by [`promise`] is settled, later, on the JS thread.
/// Settling consumes it (Node-API frees it then); one never settled is a
/// small leak, so every one is kept until settled.
#[must_use = "a Deferred must be settled"]
#[derive(Debug)]
pub struct Deferred(sys::napi_deferred);

/// A new pending promise and what settles it.
pub fn promise(env: RawEnv) -> Result<(Deferred, RawValue)> {
  let mut deferred = ptr::null_mut();
  let mut promise = ptr::null_mut();
  // SAFETY: see the module contract.
  let status = unsafe { sys::napi_create_promise(env, &mut deferred, &mut promise) };
  check(status, "napi_create_promise")?;
  Ok((Deferred(deferred), promise))
}

impl Deferred {
  /// Resolves the promise with `value`. Its reactions run later, as
  /// microtasks: no JS runs during this call.
  pub fn resolve(self, env: RawEnv, value: RawValue) {
    // SAFETY: see the module contract; `self.0` was made by `promise` and
    // is consumed here, so it is settled exactly once. It fails only while
    // the env tears down, when the promise is gone anyway.
    let _ = unsafe { sys::napi_resolve_deferred(env, self.0, value) };
  }

  /// Rejects the promise with `reason` (no JS runs during this call).
  pub fn reject(self, env: RawEnv, reason: RawValue) {
    // SAFETY: as in `resolve`.
    let _ = unsafe { sys::napi_reject_deferred(env, self.0, reason) };
  }
}

/// Makes `tsfn` keep the event loop alive (`ref`) or not (`unref`), unless
/// it was aborted (the env is tearing down). Each is idempotent in Node.
pub fn keep_alive(env: RawEnv, tsfn: &threadsafe_function::ThreadsafeFunctionHandle, on: bool) {
  tsfn.with_read_aborted(|aborted| {
    let raw = tsfn.get_raw();
    if aborted || raw.is_null() {
      return;
    }
    // SAFETY: see the module contract; the read lock on `aborted` keeps
    // the function from being released while this runs, and it is not yet
    // released: its handle is alive (it releases on drop) and not aborted.
    let _ = unsafe {
      if on {
        sys::napi_ref_threadsafe_function(env, raw)
      } else {
        sys::napi_unref_threadsafe_function(env, raw)
      }
    };
  });
}

fn cstr_string(env: RawEnv, text: &CStr) -> Result<RawValue> {
  string(env, text.to_str().unwrap_or_default())
}

/// Throws a `TypeError` (made with `ctor` when given, so it belongs to the
/// caller's realm) carrying `code`, and returns the error napi-rs expects for
/// "an exception is already pending".
pub fn throw_type_error(env: RawEnv, ctor: Option<RawValue>, code: &CStr, message: &str) -> Error {
  let pending = Error::new(Status::PendingException, message.to_string());
  let (Ok(code_value), Ok(msg_value)) = (cstr_string(env, code), string(env, message)) else {
    return Error::new(Status::InvalidArg, message.to_string());
  };
  let mut error = ptr::null_mut();
  let made = ctor.is_some_and(|ctor| {
    // SAFETY: see the module contract; `ctor` is a constructor the JS
    // surface passed in, the argument array lives across the call.
    let status = unsafe { sys::napi_new_instance(env, ctor, 1, [msg_value].as_ptr(), &mut error) };
    status == sys::Status::napi_ok && set_named(env, error, c"code", code_value).is_ok()
  });
  if !made {
    clear_exception(env);
    // SAFETY: see the module contract; both strings were just made.
    let status = unsafe { sys::napi_create_type_error(env, code_value, msg_value, &mut error) };
    if status != sys::Status::napi_ok {
      return Error::new(Status::InvalidArg, message.to_string());
    }
  }
  rethrow(env, error);
  pending
}
