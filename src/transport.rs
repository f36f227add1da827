//! How a frame reaches one connection. Every write goes through
//! [`Transport::write`], the one seam where a second transport (a native
//! writer thread on the socket) plugs in later.

use std::cell::Cell;

use crate::js::{self, JsRef, RawEnv, RawValue, Refs};

/// One framed event, shared by every recipient of a send. The JS `Buffer` is
/// made on first use and then written to every stream connection.
pub struct OutFrame<'a> {
  bytes: &'a [u8],
  js_buffer: Cell<Option<RawValue>>,
}

impl<'a> OutFrame<'a> {
  pub fn new(bytes: &'a [u8]) -> Self {
    Self {
      bytes,
      js_buffer: Cell::new(None),
    }
  }

  fn js_buffer(&self, env: RawEnv) -> napi::Result<RawValue> {
    if let Some(buffer) = self.js_buffer.get() {
      return Ok(buffer);
    }
    let buffer = js::buffer(env, self.bytes)?;
    self.js_buffer.set(Some(buffer));
    Ok(buffer)
  }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
  /// Handed to the connection (it may still be buffered by Node).
  Written,
  /// The response had already ended: nothing was written.
  Ended,
  /// The write threw: nothing more should be written to this connection.
  Failed,
}

/// Per-connection transport state.
#[derive(Debug)]
pub enum Transport {
  /// Writes through the response's own `write`, on the JS thread. The
  /// function is captured at registration, so a broadcast does no prototype
  /// lookups on Express's re-prototyped responses.
  Stream { write: JsRef },
}

impl Transport {
  pub fn stream(env: RawEnv, refs: &mut Refs, write_fn: RawValue) -> napi::Result<Self> {
    Ok(Transport::Stream {
      write: refs.hold(env, write_fn)?,
    })
  }

  /// The function this transport calls, resolved once per send so a loop over
  /// many connections does not hold registry borrows while JS runs.
  pub fn resolve(&self, env: RawEnv) -> napi::Result<RawValue> {
    match self {
      Transport::Stream { write } => write.value(env),
    }
  }

  pub fn release(self, env: RawEnv, refs: &mut Refs) {
    match self {
      Transport::Stream { write } => refs.release(env, write),
    }
  }
}

/// Writes `frame` to `res` with its resolved `write`. `finished` is Node's own
/// data property set synchronously by `res.end()`: writing after it would make
/// Node emit an `'error'` that crashes a process without an error listener,
/// and no event tells us in time, so it is read here (an own property, not
/// the slow `writableEnded` getter).
pub fn write_stream(
  env: RawEnv,
  res: RawValue,
  write: RawValue,
  frame: &OutFrame<'_>,
) -> WriteOutcome {
  if js::get_truthy(env, res, c"finished") {
    return WriteOutcome::Ended;
  }
  let Ok(buffer) = frame.js_buffer(env) else {
    js::clear_exception(env);
    return WriteOutcome::Failed;
  };
  match js::call(env, res, write, &[buffer]) {
    Ok(_) => WriteOutcome::Written,
    Err(_) => WriteOutcome::Failed,
  }
}
