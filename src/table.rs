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

use napi::Result;

use crate::js::{self, JsRef, RawEnv, RawValue, Refs};
use crate::state::Shared;

/// The array and which of its slots are taken.
#[derive(Debug)]
pub struct ResponseTable {
  array: JsRef,
  free: Vec<u32>,
  next: u32,
  taken: u32,
}

impl ResponseTable {
  pub fn new(env: RawEnv, refs: &mut Refs) -> Result<Self> {
    let array = js::array(env, &[])?;
    Ok(Self {
      array: refs.hold(env, array)?,
      free: Vec::new(),
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
    self.free.push(slot);
    self.taken -= 1;
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

/// Puts `res` at `slot`, with nothing borrowed.
pub fn fill(state: &Shared, env: RawEnv, slot: u32, res: RawValue) -> Result<()> {
  let array = state.borrow().table.as_ref().and_then(|t| t.array(env));
  match array {
    Some(array) => js::set_element(env, array, slot, res),
    None => Ok(()),
  }
}

/// Clears `slot` (so the table keeps no response alive) and hands it back,
/// with nothing borrowed while the element is set.
pub fn clear(state: &Shared, env: RawEnv, slot: u32) {
  let array = state.borrow().table.as_ref().and_then(|t| t.array(env));
  if let Some(array) = array {
    if let Ok(undefined) = js::undefined(env) {
      if js::set_element(env, array, slot, undefined).is_err() {
        js::clear_exception(env);
      }
    }
  }
  if let Some(table) = state.borrow_mut().table.as_mut() {
    table.give_back(slot);
  }
}
