//! The hub's response table: one JS array holding every registered
//! response at its connection's slot, filled once at registration and
//! cleared once at removal. A stream-transport send then hands
//! `writeBatch` its targets' slots as one `Uint32Array`, instead of an
//! array of responses built with two napi calls per target on every send
//! (a reference read and an element set, which together cost about as much
//! as 7 % of the send here: the gap to the JS helper).
//!
//! The slots are the binding's, not a fact of the core's: the core knows
//! connections by `ConnKey`; a slot only says where this hub's JS array
//! keeps that connection's response. Slots are reused (a free list), so the
//! array is as long as the most connections held at once.
//!
//! A slot given back while a `writeBatch` runs is not reused until the
//! outermost batch has returned: app JS a batch reaches (a getter on a
//! response) may remove one client and add another, and the new one must
//! not take a slot the batch is still to write, or it would get the frame
//! meant for the one removed.
//!
//! A hub collected by the GC gives its slots back without clearing their
//! elements (no JS may run in a finalizer); the array and what it holds go
//! when the hub lets go of its own references (`ReleaseHub`).

use napi::Result;

use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::state::Shared;

/// The array and which of its slots are taken.
#[derive(Debug)]
pub struct ResponseTable {
  array: JsRef,
  free: Vec<u32>,
  /// Given back during a batch: free once the outermost batch returns.
  deferred: Vec<u32>,
  /// How many `writeBatch` calls are running (one may reach app JS that
  /// broadcasts again).
  batches: u32,
  next: u32,
  taken: u32,
}

impl ResponseTable {
  pub fn new(env: RawEnv, refs: &mut Refs) -> Result<Self> {
    let array = js::array(env, &[])?;
    Ok(Self {
      array: refs.hold(env, array)?,
      free: Vec::new(),
      deferred: Vec::new(),
      batches: 0,
      next: 0,
      taken: 0,
    })
  }

  /// A slot for a new connection (plain Rust: [`fill`] puts the response
  /// there once no borrow is held). `None` past `u32::MAX` slots, which
  /// the fd limits keep far away: that connection is written one by one.
  pub fn take(&mut self) -> Option<u32> {
    let slot = match self.free.pop() {
      Some(slot) => slot,
      None => {
        let slot = self.next;
        self.next = self.next.checked_add(1)?;
        slot
      }
    };
    self.taken += 1;
    Some(slot)
  }

  /// Hands `slot` back once its element was cleared (or, where no JS may
  /// run, once the hub is letting go).
  pub fn give_back(&mut self, slot: u32) {
    if self.batches > 0 {
      self.deferred.push(slot);
    } else {
      self.free.push(slot);
    }
    self.taken -= 1;
  }

  /// A `writeBatch` over some slots is about to run.
  pub fn batch_started(&mut self) {
    self.batches += 1;
  }

  /// A `writeBatch` returned: once none runs, the slots given back during
  /// it may be reused.
  pub fn batch_ended(&mut self) {
    self.batches = self.batches.saturating_sub(1);
    if self.batches == 0 {
      self.free.append(&mut self.deferred);
    }
  }

  /// Slots holding a connection's response now (for the leak count).
  pub fn taken(&self) -> u32 {
    self.taken
  }

  pub fn array(&self, env: RawEnv) -> Option<RawValue> {
    self.array.value(env).ok()
  }

  pub fn release(self, env: RawEnv, refs: &mut Refs) {
    refs.release(env, self.array);
  }
}

/// Puts `res` at `slot`, with nothing borrowed. An error leaves the slot
/// taken; the caller's rollback gives it back through [`clear`].
pub fn fill(state: &Shared, env: RawEnv, slot: u32, res: RawValue) -> Result<()> {
  let array = table_array(state, env)?;
  js::define_element(env, array, slot, res)
}

/// Clears `slot` (so the table keeps no response alive) and hands it back,
/// with nothing borrowed while the element is defined. An exception
/// pending meanwhile (Node-API refuses to define anything then) is set
/// aside and thrown again after. If it still cannot be cleared (only while
/// the env is torn down), the slot stays taken: reused, it would still
/// hold the old response until overwritten, and a batch could reach it.
pub fn clear(state: &Shared, env: RawEnv, slot: u32) {
  let pending = js::clear_exception(env);
  let cleared = table_array(state, env)
    .and_then(|array| js::define_element(env, array, slot, js::undefined(env)?))
    .is_ok();
  if !cleared {
    js::clear_exception(env);
  }
  js::rethrow(env, pending);
  if cleared {
    if let Some(table) = state.borrow_mut().table.as_mut() {
      table.give_back(slot);
    }
  }
}

fn table_array(state: &Shared, env: RawEnv) -> Result<RawValue> {
  let s = state.borrow();
  let table = s
    .table
    .as_ref()
    .ok_or_else(|| napi::Error::from_reason("the hub has no response table"))?;
  table.array.value(env)
}
