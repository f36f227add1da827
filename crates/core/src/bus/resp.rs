//! Reading Redis replies: stream entries, `XINFO` fields, and the glob
//! escaping of `SCAN MATCH`.

use redis::Value;

use super::entry::{Entry, EntryId, Malformed};

/// The data bytes of entries read (a malformed one counts nothing).
pub(super) fn data_bytes(entries: &[(EntryId, Result<Entry, Malformed>)]) -> usize {
  entries
    .iter()
    .map(|(_, e)| e.as_ref().map_or(0, |e| e.data.len()))
    .sum()
}

/// The entries of an `XREAD` reply (one stream): `[[key, [[id, fields]...]]]`.
pub(super) fn parse_read(reply: &Value) -> Vec<(EntryId, Result<Entry, Malformed>)> {
  match reply {
    Value::Array(streams) => streams
      .iter()
      .flat_map(|s| match s {
        Value::Array(pair) if pair.len() == 2 => parse_range(&pair[1]),
        _ => Vec::new(),
      })
      .collect(),
    Value::Map(streams) => streams
      .iter()
      .flat_map(|(_, entries)| parse_range(entries))
      .collect(),
    _ => Vec::new(),
  }
}

/// The entries of an `XRANGE` reply: `[[id, [field, value, ...]], ...]`.
/// An entry whose fields are not pairs of strings is malformed.
pub(super) fn parse_range(reply: &Value) -> Vec<(EntryId, Result<Entry, Malformed>)> {
  let Value::Array(entries) = reply else {
    return Vec::new();
  };
  entries
    .iter()
    .filter_map(|entry| {
      let Value::Array(parts) = entry else {
        return None;
      };
      let id = parts.first().and_then(value_id)?;
      let entry = match parts.get(1) {
        Some(Value::Array(fields)) if fields.len() % 2 == 0 => {
          let pairs: Option<Vec<(&[u8], &[u8])>> = fields
            .chunks(2)
            .map(|pair| Some((bytes_of(&pair[0])?, bytes_of(&pair[1])?)))
            .collect();
          match pairs {
            Some(pairs) => Entry::decode(pairs),
            None => Err(Malformed("a field is not a string")),
          }
        }
        _ => Err(Malformed("fields are not pairs")),
      };
      Some((id, entry))
    })
    .collect()
}

pub(super) fn bytes_of(value: &Value) -> Option<&[u8]> {
  match value {
    Value::BulkString(b) => Some(b),
    Value::SimpleString(s) => Some(s.as_bytes()),
    _ => None,
  }
}

pub(super) fn value_id(value: &Value) -> Option<EntryId> {
  EntryId::parse(std::str::from_utf8(bytes_of(value)?).ok()?)
}

/// An entry-id field of an `XINFO STREAM` reply.
pub(super) fn info_id(info: &Value, field: &[u8]) -> Option<EntryId> {
  info_field(info, field).and_then(value_id)
}

/// A number field of an `XINFO STREAM` reply.
pub(super) fn info_number(info: &Value, field: &[u8]) -> Option<u64> {
  info_field(info, field).and_then(|v| match v {
    Value::Int(n) => u64::try_from(*n).ok(),
    other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
  })
}

pub(super) fn info_field<'a>(info: &'a Value, field: &[u8]) -> Option<&'a Value> {
  let pairs: Vec<(&Value, &Value)> = match info {
    Value::Array(items) => items
      .chunks(2)
      .filter_map(|p| Some((p.first()?, p.get(1)?)))
      .collect(),
    Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
    _ => return None,
  };
  pairs
    .into_iter()
    .find(|(k, _)| bytes_of(k) == Some(field))
    .map(|(_, v)| v)
}

/// `stream` with the glob characters `SCAN MATCH` reads escaped.
pub(super) fn glob_escape(stream: &str) -> String {
  let mut out = String::with_capacity(stream.len());
  for c in stream.chars() {
    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
      out.push('\\');
    }
    out.push(c);
  }
  out
}

/// A bulk-string reply, as Redis sends `s`: for the bus's tests that build
/// replies by hand.
#[cfg(test)]
pub(super) fn bulk(s: &str) -> Value {
  Value::BulkString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
  use super::*;

  fn entry_value(id: &str, fields: &[&str]) -> Value {
    Value::Array(vec![
      bulk(id),
      Value::Array(fields.iter().map(|f| bulk(f)).collect()),
    ])
  }

  #[test]
  fn an_xread_reply_parses_into_entries_and_malformed_ones_are_marked() {
    let reply = Value::Array(vec![Value::Array(vec![
      bulk("sse"),
      Value::Array(vec![
        entry_value("1-0", &["kind", "broadcast", "data", "{}"]),
        entry_value("2-0", &["kind", "broadcast"]),
        entry_value("3-0", &["kind", "broadcast", "data"]),
        entry_value("4-0", &["kind", "channel", "channel", "c", "data", "1"]),
      ]),
    ])]);
    let entries = parse_read(&reply);
    let ids: Vec<String> = entries.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
      ids,
      ["1-0", "2-0", "3-0", "4-0"],
      "malformed ones still move the position"
    );
    let ok: Vec<bool> = entries.iter().map(|(_, e)| e.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true]);
    assert!(parse_read(&Value::Nil).is_empty(), "a timed-out read");
  }

  #[test]
  fn numbers_are_read_from_xinfo() {
    let info = Value::Array(vec![
      bulk("length"),
      Value::Int(3),
      bulk("entries-added"),
      Value::Int(300),
      bulk("max-deleted-entry-id"),
      bulk("7-1"),
    ]);
    assert_eq!(
      info_id(&info, b"max-deleted-entry-id"),
      EntryId::parse("7-1")
    );
    assert_eq!(info_number(&info, b"length"), Some(3));
    assert_eq!(info_number(&info, b"entries-added"), Some(300));
    assert_eq!(info_number(&info, b"nope"), None);
  }

  #[test]
  fn stream_names_are_escaped_for_scan_match() {
    assert_eq!(glob_escape("app*[1]?"), "app\\*\\[1\\]\\?");
    assert_eq!(glob_escape("sse"), "sse");
  }
}
