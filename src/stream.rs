//! The stream transport's write path: a frame reaches a connection through
//! the response's own `write`, on the JS thread. (Socket connections get it
//! from the core's writer thread; see `sse_helper_core::writer`.)

use std::cell::Cell;

use crate::js::{self, RawEnv, RawValue};

/// One framed event's body, shared by every stream recipient of a send,
/// and the JS string made of it on first use, once (what the original
/// helper writes, so a response's own `write` sees the same argument).
/// Socket connections got the core's chunk of it already.
pub struct OutFrame<'a> {
  bytes: &'a [u8],
  js_value: Cell<Option<RawValue>>,
}

impl<'a> OutFrame<'a> {
  pub fn new(bytes: &'a [u8]) -> Self {
    Self {
      bytes,
      js_value: Cell::new(None),
    }
  }

  /// The frame as a JS string (a `Buffer` in the one case it is not UTF-8:
  /// a frame is built from JS strings, so never in practice).
  fn js_value(&self, env: RawEnv) -> napi::Result<RawValue> {
    if let Some(value) = self.js_value.get() {
      return Ok(value);
    }
    let value = match std::str::from_utf8(self.bytes) {
      Ok(text) => js::string(env, text)?,
      Err(_) => js::buffer(env, self.bytes)?,
    };
    self.js_value.set(Some(value));
    Ok(value)
  }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
  /// Handed to the connection, and Node's buffer is below its high-water mark.
  Written,
  /// Handed to the connection, but `write` returned false: Node is buffering.
  Buffered,
  /// The response had already ended: nothing was written, nor will be.
  Ended,
  /// Its `write` threw (or is not a function): the connection is to be
  /// ended and removed, as the original helper does.
  Threw,
}

/// Writes `frame` to `res` through its current `write` (read now, not at
/// registration: an app or a test may have wrapped it since), as the
/// original helper does: a response whose `writableEnded` is true is
/// skipped. On Node's responses that getter reads `finished`, the data
/// property `res.end()` sets synchronously; writing after it would make
/// Node emit an `'error'` that crashes a process without an error listener.
pub fn write(
  env: RawEnv,
  res: RawValue,
  flush: Option<RawValue>,
  frame: &OutFrame<'_>,
) -> WriteOutcome {
  if js::get_truthy(env, res, c"writableEnded") {
    return WriteOutcome::Ended;
  }
  let write = match js::get(env, res, c"write") {
    Ok(write) if js::is_function(env, write) => write,
    _ => {
      js::clear_exception(env);
      return WriteOutcome::Threw;
    }
  };
  let Ok(value) = frame.js_value(env) else {
    js::clear_exception(env);
    return WriteOutcome::Threw;
  };
  let accepted = match js::call(env, res, write, &[value]) {
    Ok(returned) => js::truthy(env, returned),
    Err(_) => return WriteOutcome::Threw,
  };
  if let Some(flush) = flush {
    // A compressing wrapper holds bytes back until flushed.
    let _ = js::call(env, res, flush, &[]);
  }
  if accepted {
    WriteOutcome::Written
  } else {
    WriteOutcome::Buffered
  }
}

/// Bytes Node holds for `res` that the socket has not taken yet.
pub fn pending_bytes(env: RawEnv, res: RawValue) -> usize {
  js::get_number(env, res, c"writableLength")
    .filter(|n| n.is_finite() && *n > 0.0)
    .map_or(0, |n| n as usize)
}
