//! The stream transport's write path: a frame reaches a connection through
//! the response's own `write`, on the JS thread. (Socket connections get it
//! from the core's writer thread; see `sse_helper_core::writer`.)
//!
//! A broadcast to N stream connections costs, per connection, the `write`
//! call and three property reads; everything else is made once per frame:
//! the property names, the frame as a string, the frame as a `Buffer`.

use std::cell::Cell;

use sse_helper_core::hub::Frame;

use crate::js::{self, RawEnv, RawValue};

/// The JS values made of one frame: the body as a string and as a
/// `Buffer`, and its HTTP chunk as a `Buffer` (for `writeBatch`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameValues {
  pub text: Option<RawValue>,
  pub buffer: Option<RawValue>,
  pub chunk: Option<RawValue>,
}

/// One framed event's body, shared by every stream recipient of a send,
/// and the JS values made of it on first use, once. Socket connections got
/// the core's chunk of it already.
pub struct OutFrame<'a> {
  bytes: &'a [u8],
  text: Cell<Option<RawValue>>,
  buffer: Cell<Option<RawValue>>,
  chunk: Cell<Option<RawValue>>,
  /// The values it came with (a kept replay's).
  given: FrameValues,
}

impl<'a> OutFrame<'a> {
  pub fn new(bytes: &'a [u8]) -> Self {
    Self::with(bytes, FrameValues::default())
  }

  /// Its JS values made already (a shared replay's, kept by the binding).
  pub fn with(bytes: &'a [u8], given: FrameValues) -> Self {
    Self {
      bytes,
      text: Cell::new(given.text),
      buffer: Cell::new(given.buffer),
      chunk: Cell::new(given.chunk),
      given,
    }
  }

  /// Forgets the chunk made for a batch that wrote none with it, so it is
  /// not kept for a shared replay's next recipients.
  pub fn unused_chunk(&self) {
    self.chunk.set(self.given.chunk);
  }

  /// Its JS values made so far.
  pub fn made(&self) -> FrameValues {
    FrameValues {
      text: self.text.get(),
      buffer: self.buffer.get(),
      chunk: self.chunk.get(),
    }
  }

  /// `frame`'s HTTP chunk (whose payload is this body) as one `Buffer`:
  /// `writeBatch` writes it to a socket where that is what Node's `write`
  /// would do, and takes the body out of it as a view for the rest.
  pub fn chunk(&self, env: RawEnv, frame: &Frame) -> napi::Result<RawValue> {
    if let Some(value) = self.chunk.get() {
      return Ok(value);
    }
    let value = js::buffer(env, &frame.chunk())?;
    self.chunk.set(Some(value));
    Ok(value)
  }

  /// The frame as a JS string (a `Buffer` in the one case it is not UTF-8:
  /// a frame is built from JS strings, so never in practice): what the
  /// original helper writes, so a `write` of the app's own (a wrapper, a
  /// test double) sees the same argument.
  fn text(&self, env: RawEnv) -> napi::Result<RawValue> {
    if let Some(value) = self.text.get() {
      return Ok(value);
    }
    let value = match std::str::from_utf8(self.bytes) {
      Ok(text) => js::string(env, text)?,
      Err(_) => self.buffer(env)?,
    };
    self.text.set(Some(value));
    Ok(value)
  }

  /// The frame as one `Buffer`, for Node's own `write`: the bytes on the
  /// wire are the string's, but Node neither measures nor encodes a
  /// `Buffer` again for every connection, as it does a string.
  pub fn buffer(&self, env: RawEnv) -> napi::Result<RawValue> {
    if let Some(value) = self.buffer.get() {
      return Ok(value);
    }
    let value = js::buffer(env, self.bytes)?;
    self.buffer.set(Some(value));
    Ok(value)
  }
}

/// What a send reads on every stream connection, made once per send: the
/// property names (`napi_get_named_property` would make each string again
/// per read) and Node's own `write`, to know when a `Buffer` may stand in
/// for the string.
pub struct WriteKeys {
  writable_ended: RawValue,
  finished: RawValue,
  write: RawValue,
  node_write: Option<RawValue>,
}

impl WriteKeys {
  /// `node_write` is `http.ServerResponse.prototype.write` (the hub's
  /// hooks hold it), when known.
  pub fn new(env: RawEnv, node_write: Option<RawValue>) -> napi::Result<Self> {
    Ok(Self {
      writable_ended: js::string(env, "writableEnded")?,
      finished: js::string(env, "finished")?,
      write: js::string(env, "write")?,
      node_write,
    })
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
  keys: &WriteKeys,
  res: RawValue,
  flush: Option<RawValue>,
  frame: &OutFrame<'_>,
) -> WriteOutcome {
  let write = match js::get_by_key(env, res, keys.write) {
    Ok(write) if js::is_function(env, write) => write,
    _ => {
      js::clear_exception(env);
      // Ended responses are skipped before anything else, as the original
      // does; only a live one without a `write` fails.
      return match is_ended(env, res, keys.writable_ended) {
        true => WriteOutcome::Ended,
        false => WriteOutcome::Threw,
      };
    }
  };
  let node_write = keys
    .node_write
    .is_some_and(|node| js::strict_equals(env, write, node));
  // Node's `writableEnded` getter returns `finished`, a data property: read
  // that directly on a response with Node's own `write` (no getter call).
  let ended_key = match node_write {
    true => keys.finished,
    false => keys.writable_ended,
  };
  if is_ended(env, res, ended_key) {
    return WriteOutcome::Ended;
  }
  let value = match node_write {
    true => frame.buffer(env),
    false => frame.text(env),
  };
  let Ok(value) = value else {
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

/// `res[key]` is truthy; a throwing getter reads as false (and is cleared).
fn is_ended(env: RawEnv, res: RawValue, key: RawValue) -> bool {
  match js::get_by_key(env, res, key) {
    Ok(value) => js::truthy(env, value),
    Err(_) => {
      js::clear_exception(env);
      false
    }
  }
}

/// Bytes Node holds for `res` that the socket has not taken yet.
pub fn pending_bytes(env: RawEnv, res: RawValue) -> usize {
  js::get_number(env, res, c"writableLength")
    .filter(|n| n.is_finite() && *n > 0.0)
    .map_or(0, |n| n as usize)
}
