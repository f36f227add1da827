//! How a frame reaches one connection. There are two transports behind one
//! enum: `Stream` writes through the response's own `write` on the JS thread;
//! `Socket` hands the bytes to the native writer thread ([`crate::writer`]),
//! which writes them to a duplicate of the connection's socket fd.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::frame;
use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::writer::{ConnGauge, WireId};

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
  /// The response had already ended: nothing was written.
  Ended,
  /// The write threw: nothing more should be written to this connection.
  Failed,
}

/// Per-connection transport state.
#[derive(Debug)]
pub enum Transport {
  /// Writes through the response's own `write`, on the JS thread. The
  /// functions are captured at registration, so a broadcast does no
  /// prototype lookups on Express's re-prototyped responses. `flush` is the
  /// `res.flush()` a wrapper such as `compression` provides. `congested` is
  /// set when `write` returned false: only then is `writableLength` read,
  /// to apply the slow-client policy.
  Stream {
    write: JsRef,
    flush: Option<JsRef>,
    congested: bool,
  },
  /// Written by the native writer thread; the JS thread only sends it
  /// messages, and reads its backlog from the gauge it shares with it.
  Socket { wire: WireId, gauge: Arc<ConnGauge> },
}

impl Transport {
  /// A stream transport over `write_fn` (and `flush`, when the response
  /// has one), both read from the response beforehand: holding them runs
  /// no JS.
  pub fn stream(
    env: RawEnv,
    refs: &mut Refs,
    write_fn: RawValue,
    flush: Option<RawValue>,
  ) -> napi::Result<Self> {
    let flush = flush.map(|f| refs.hold(env, f)).transpose()?;
    Ok(Transport::Stream {
      write: refs.hold(env, write_fn)?,
      flush,
      congested: false,
    })
  }

  pub fn wire(&self) -> Option<WireId> {
    match self {
      Transport::Stream { .. } => None,
      Transport::Socket { wire, .. } => Some(*wire),
    }
  }

  pub fn release(self, env: RawEnv, refs: &mut Refs) {
    match self {
      Transport::Stream { write, flush, .. } => {
        refs.release(env, write);
        if let Some(flush) = flush {
          refs.release(env, flush);
        }
      }
      Transport::Socket { .. } => {}
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
  flush: Option<RawValue>,
  frame: &OutFrame<'_>,
) -> WriteOutcome {
  if js::get_truthy(env, res, c"finished") {
    return WriteOutcome::Ended;
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
