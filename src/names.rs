//! The property names a registration reads on every response, made once
//! per hub. A name passed to Node-API as a C string is made into a JS
//! string, and looked up in V8's string table, on every read; Node-API 8
//! cannot reference a string, so the names are kept in one array the hub
//! references, and a registration reads them out of it.

use napi::Result;

use crate::js::{self, JsRef, RawEnv, RawValue, Refs};

/// A name [`Names`] holds.
#[derive(Debug, Clone, Copy)]
pub enum Name {
  Destroyed,
  WritableEnded,
  Closed,
  Flush,
  Once,
  Close,
}

/// In [`Name`]'s order.
const NAMES: [&str; 6] = [
  "destroyed",
  "writableEnded",
  "closed",
  "flush",
  "once",
  "close",
];

/// The array of [`NAMES`], referenced by the hub.
pub struct Names(JsRef);

impl Names {
  pub fn new(env: RawEnv, refs: &mut Refs) -> Result<Self> {
    let mut values = Vec::with_capacity(NAMES.len());
    for name in NAMES {
      values.push(js::string(env, name)?);
    }
    let array = js::array(env, &values)?;
    Ok(Self(refs.hold(env, array)?))
  }

  /// The names as values of this call; `None` only while the env is torn
  /// down.
  pub fn values(&self, env: RawEnv) -> Option<NameValues> {
    let array = self.0.value(env).ok()?;
    let mut values = [std::ptr::null_mut(); NAMES.len()];
    for (index, value) in values.iter_mut().enumerate() {
      // At most six: the index fits.
      *value = js::element(env, array, index as u32).ok()?;
    }
    Some(NameValues(values))
  }

  /// Gives the array's reference back (the hub is let go of).
  pub fn release(self, env: RawEnv, refs: &mut Refs) {
    refs.release(env, self.0);
  }
}

/// [`Names`] read out for one call.
#[derive(Clone, Copy)]
pub struct NameValues([RawValue; NAMES.len()]);

impl NameValues {
  pub fn get(&self, name: Name) -> RawValue {
    self.0[name as usize]
  }
}
