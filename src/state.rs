//! What one hub holds on the JS side: the core, the napi references, and
//! the functions the JS surface handed it.
//!
//! The rule that keeps re-entrant JS from aborting the process: the state
//! is borrowed only for plain Rust (the core's decisions, taking or
//! releasing references), never across a call that can run JS. Every
//! method reads what it needs from JS first, then borrows to decide, then
//! runs JS again with nothing borrowed.

use std::cell::RefCell;
use std::rc::Rc;

use sse_helper_core::hub::HubCore;

use crate::js::{JsRef, RawEnv, RawValue, Refs};
use crate::names::Names;
use crate::replays::{self, ReplayValues};
use crate::table::ResponseTable;
use crate::waiting::Waiting;

/// What the binding keeps per connection: the response, on the stream
/// transport a wrapper's `flush` (read once at registration), the app's
/// meta, and when it was registered (wall-clock ms, the `createdAt` that
/// `_clients` shows). The response's `write` is read at each write, as the
/// original helper does, so a wrapper installed later is honoured.
#[derive(Debug)]
pub struct JsConn {
  pub res: JsRef,
  pub flush: Option<JsRef>,
  pub meta: Option<JsRef>,
  pub created_at_ms: f64,
  /// Where the hub's response table keeps `res` (see `table`); `None`
  /// without a table, and then the connection is written one by one.
  pub slot: Option<u32>,
  /// Registration order (renewed when moved to another id), so `_clients`
  /// lists in the order the original's `Map` would.
  pub order: u64,
}

impl JsConn {
  /// Releases every reference but the response's, which is returned.
  pub fn release_all_but_res(self, env: RawEnv, refs: &mut Refs) -> JsRef {
    for reference in [self.flush, self.meta].into_iter().flatten() {
      refs.release(env, reference);
    }
    self.res
  }
}

/// Functions the JS surface installs on responses handed to the socket
/// writer, and on responses the hub has ended.
pub struct Hooks {
  /// Replaces `res.write` on a socket-transport response.
  pub write: JsRef,
  /// Replaces `res.end` on a socket-transport response.
  pub end: JsRef,
  /// Replace `res.destroy` and `res.socket.destroy` on a socket-transport
  /// response, so the writer forgets it before anything else is sent.
  pub destroy: JsRef,
  pub socket_destroy: JsRef,
  /// Replaces `res.write` on a Node response the hub ended: returns false
  /// and never makes Node emit `'error'`.
  pub write_after_end: JsRef,
  /// Node's own `ServerResponse.prototype.write`: only a response still
  /// using it gets `write_after_end` (a test double keeps its own `write`).
  pub node_write: JsRef,
  /// `writeBatch(table, batch, chunk, bodyStart)`: a stream-transport
  /// send's writes to the responses on Node's own `write`, in one call.
  pub write_batch: JsRef,
}

pub struct HubState {
  pub core: HubCore<JsConn>,
  pub refs: Refs,
  /// The one `close` listener attached to every registered response.
  pub on_close: Option<JsRef>,
  /// Private symbol under which a response carries its registry key, so a
  /// `close` event or `removeClient(res)` finds it without a scan.
  pub key_symbol: Option<JsRef>,
  /// A `WeakMap` res → key for the responses that cannot carry the symbol
  /// (frozen, sealed, non-extensible, a Proxy that drops the write), looked
  /// in only once one was registered, so other lookups stay one property
  /// read.
  pub key_map: Option<JsRef>,
  /// The property names every registration reads (`names`).
  pub names: Option<Names>,
  pub key_map_used: bool,
  /// The caller's `TypeError`, so bad-input errors belong to the caller's
  /// realm (`instanceof TypeError` holds under Jest's vm contexts too).
  pub type_error: Option<JsRef>,
  /// The JS surface's `SseCapacityError`, for [`CoreError::Capacity`].
  ///
  /// [`CoreError::Capacity`]: sse_helper_core::hub::CoreError::Capacity
  pub capacity_error: Option<JsRef>,
  /// The JS surface's `SseKeyCapacityError`, for [`CoreError::KeyCapacity`].
  ///
  /// [`CoreError::KeyCapacity`]: sse_helper_core::hub::CoreError::KeyCapacity
  pub key_capacity_error: Option<JsRef>,
  pub hooks: Option<Hooks>,
  /// `lifecycle(kind, a, b)` in JS, for the hub's events.
  pub lifecycle: Option<JsRef>,
  /// Responses in the middle of `register`, so a getter that registers the
  /// same response again is refused instead of registering it twice.
  pub registering: Vec<RawValue>,
  /// The next [`JsConn::order`].
  pub next_order: u64,
  /// Bus requests in flight, and what keeps Node alive while JS waits.
  pub waiting: Waiting,
  /// The JS values of the replays the core shares now (`replays`).
  pub replays: Vec<ReplayValues>,
  /// Every registered response at its slot (`table`).
  pub table: Option<ResponseTable>,
}

impl HubState {
  pub fn new() -> Self {
    Self {
      core: HubCore::default(),
      refs: Refs::default(),
      on_close: None,
      key_symbol: None,
      key_map: None,
      names: None,
      key_map_used: false,
      type_error: None,
      capacity_error: None,
      key_capacity_error: None,
      hooks: None,
      lifecycle: None,
      registering: Vec::new(),
      next_order: 0,
      waiting: Waiting::default(),
      replays: Vec::new(),
      table: None,
    }
  }

  /// Lets go of the hub's own references (the JS hub is gone and nothing
  /// is registered or ending).
  pub fn release_own(&mut self, env: RawEnv) {
    if let Some(keep) = self.waiting.let_go(env) {
      self.refs.release(env, keep);
    }
    replays::release_all(&mut self.replays, env, &mut self.refs);
    if let Some(table) = self.table.take() {
      table.release(env, &mut self.refs);
    }
    if let Some(names) = self.names.take() {
      names.release(env, &mut self.refs);
    }
    let hooks = self.hooks.take().map(|h| {
      [
        h.write,
        h.end,
        h.destroy,
        h.socket_destroy,
        h.write_after_end,
        h.node_write,
        h.write_batch,
      ]
    });
    let own = [
      self.on_close.take(),
      self.key_symbol.take(),
      self.key_map.take(),
      self.type_error.take(),
      self.capacity_error.take(),
      self.key_capacity_error.take(),
      self.lifecycle.take(),
    ];
    for reference in own.into_iter().flatten().chain(hooks.into_iter().flatten()) {
      self.refs.release(env, reference);
    }
  }
}

pub type Shared = Rc<RefCell<HubState>>;
