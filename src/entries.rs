//! `_clients` as the original helper's `Map` shows it, read from the core.

use napi::Result;

use crate::js::{self, RawEnv, RawValue};
use crate::state::Shared;

/// A flat array `[id, res, meta, createdAt, …]`, four values per connection
/// (only those under `id` when given), in registration order.
pub fn entries(state: &Shared, env: RawEnv, id: Option<&str>) -> Result<RawValue> {
  let mut values = Vec::new();
  {
    let s = state.borrow();
    let undefined = js::undefined(env)?;
    let mut listed: Vec<_> = match id {
      Some(id) => s
        .core
        .connections()
        .keys_for_id(id)
        .iter()
        .filter_map(|k| s.core.connections().get(*k))
        .collect(),
      None => s.core.connections().iter().collect(),
    };
    listed.sort_by_key(|e| e.handle.handle.order);
    values.reserve(listed.len() * 4);
    for e in listed {
      let conn = &e.handle.handle;
      values.push(js::string(env, &e.id)?);
      values.push(conn.res.value(env)?);
      values.push(match &conn.meta {
        Some(meta) => meta.value(env)?,
        None => undefined,
      });
      values.push(js::double(env, conn.created_at_ms)?);
    }
  }
  js::array(env, &values)
}
