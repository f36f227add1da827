//! The stream transport's write path: a frame reaches a connection through
//! the response's own `write`, on the JS thread. (Socket connections get it
//! from the core's writer thread; see `sse_helper_core::writer`.)

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use sse_helper_core::frame;

use crate::js::{self, RawEnv, RawValue};

/// One framed event, shared by every recipient of a send. Each transport's
/// form of it is made on first use, once: a JS `Buffer` for stream
/// connections, an HTTP chunk for socket connections.
pub struct OutFrame<'a> {
  bytes: &'a [u8],
  js_buffer: Cell<Option<RawValue>>,
  http_chunk: RefCell<Option<Arc<[u8]>>>,
}

impl<'a> OutFrame<'a> {
  pub fn new(bytes: &'a [u8]) -> Self {
    Self {
      bytes,
      js_buffer: Cell::new(None),
      http_chunk: RefCell::new(None),
    }
  }

  /// A frame whose HTTP chunk was already made (kept in history too).
  pub fn with_chunk(bytes: &'a [u8], chunk: Arc<[u8]>) -> Self {
    Self {
      bytes,
      js_buffer: Cell::new(None),
      http_chunk: RefCell::new(Some(chunk)),
    }
  }

  pub fn len(&self) -> usize {
    self.bytes.len()
  }

  fn js_buffer(&self, env: RawEnv) -> napi::Result<RawValue> {
    if let Some(buffer) = self.js_buffer.get() {
      return Ok(buffer);
    }
    let buffer = js::buffer(env, self.bytes)?;
    self.js_buffer.set(Some(buffer));
    Ok(buffer)
  }

  /// The frame in HTTP/1.1 chunked coding, shared by every socket recipient.
  pub fn http_chunk(&self) -> Arc<[u8]> {
    self
      .http_chunk
      .borrow_mut()
      .get_or_insert_with(|| frame::http_chunk(self.bytes).into())
      .clone()
  }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
  /// Handed to the connection, and Node's buffer is below its high-water mark.
  Written,
  /// Handed to the connection, but `write` returned false: Node is buffering.
  Buffered,
  /// The response had already ended, or its `write` threw: nothing more
  /// should be written to this connection.
  Failed,
}

/// Writes `frame` to `res` with its resolved `write`. `finished` is Node's own
/// data property set synchronously by `res.end()`: writing after it would make
/// Node emit an `'error'` that crashes a process without an error listener,
/// and no event tells us in time, so it is read here (an own property, not
/// the slow `writableEnded` getter).
pub fn write(
  env: RawEnv,
  res: RawValue,
  write: RawValue,
  flush: Option<RawValue>,
  frame: &OutFrame<'_>,
) -> WriteOutcome {
  if js::get_truthy(env, res, c"finished") {
    return WriteOutcome::Failed;
  }
  let Ok(buffer) = frame.js_buffer(env) else {
    js::clear_exception(env);
    return WriteOutcome::Failed;
  };
  let accepted = match js::call(env, res, write, &[buffer]) {
    Ok(returned) => js::truthy(env, returned),
    Err(_) => return WriteOutcome::Failed,
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
