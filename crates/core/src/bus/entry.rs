//! One event as a Redis stream entry, and back.
//!
//! The encoding is public (the README documents it) so that other programs
//! can publish into the stream: an entry is a flat list of fields,
//!
//! | field | value |
//! |---|---|
//! | `kind` | `broadcast`, `channel` or `client` |
//! | `channel` | the channel (kind `channel` only) |
//! | `client` | the client id (kind `client` only) |
//! | `event` | the SSE event name (optional) |
//! | `retry` | the SSE reconnection time in ms (optional) |
//! | `data` | the text of the `data:` lines (JSON, as the hub sends it) |
//! | `origin` | optional: `<instance>:<sequence>` of the hub that wrote it |
//!
//! The SSE `id` of the event is the entry's stream id. Anything else is
//! ignored; an entry that breaks these rules is skipped and counted, never
//! delivered half-framed.

use std::fmt;
use std::sync::Arc;

use crate::frame::{self, EventFields};

/// A Redis stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryId {
  pub ms: u64,
  pub seq: u64,
}

impl EntryId {
  pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

  /// Parses `<ms>-<seq>` exactly (no spaces, no sign, no `*`). A
  /// `Last-Event-ID` is remote input: anything else is `None`.
  pub fn parse(text: &str) -> Option<EntryId> {
    let (ms, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
      return None;
    }
    Some(EntryId {
      ms: ms.parse().ok()?,
      seq: seq.parse().ok()?,
    })
  }
}

impl fmt::Display for EntryId {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{}-{}", self.ms, self.seq)
  }
}

/// Who an entry is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
  /// Every connection.
  All,
  /// The members of a channel.
  Channel(Arc<str>),
  /// The connections under a client id.
  Client(Arc<str>),
}

impl Route {
  /// Whether a connection with this client id and these channels is one of
  /// the recipients.
  pub fn matches<C: AsRef<str>>(&self, client: &str, channels: &[C]) -> bool {
    match self {
      Route::All => true,
      Route::Channel(c) => channels.iter().any(|m| m.as_ref() == &**c),
      Route::Client(id) => &**id == client,
    }
  }
}

/// One event as the bus carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
  pub route: Route,
  pub event: Option<String>,
  pub retry: Option<u64>,
  pub data: String,
  /// `<instance>:<sequence>` of the hub that appended it.
  pub origin: Option<String>,
}

/// Why an entry read from the stream was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Entry {
  /// The fields of its `XADD`, in order.
  pub fn fields(&self) -> Vec<(&'static str, &[u8])> {
    let mut out: Vec<(&'static str, &[u8])> = Vec::with_capacity(6);
    match &self.route {
      Route::All => out.push(("kind", b"broadcast")),
      Route::Channel(c) => {
        out.push(("kind", b"channel"));
        out.push(("channel", c.as_bytes()));
      }
      Route::Client(id) => {
        out.push(("kind", b"client"));
        out.push(("client", id.as_bytes()));
      }
    }
    if let Some(event) = &self.event {
      out.push(("event", event.as_bytes()));
    }
    out.push(("data", self.data.as_bytes()));
    if let Some(origin) = &self.origin {
      out.push(("origin", origin.as_bytes()));
    }
    out
  }

  /// The `retry` field's text, when set (kept apart: [`Entry::fields`]
  /// borrows, and a number has no bytes to borrow).
  pub fn retry_text(&self) -> Option<String> {
    self.retry.map(|r| r.to_string())
  }

  /// Reads an entry's fields. Every rule an SSE frame needs is checked
  /// here, so a frame built from the result is whole.
  pub fn decode<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
  ) -> Result<Entry, Malformed> {
    let (mut kind, mut channel, mut client, mut event, mut retry, mut data, mut origin) =
      (None, None, None, None, None, None, None);
    for (name, value) in fields {
      let slot = match name {
        b"kind" => &mut kind,
        b"channel" => &mut channel,
        b"client" => &mut client,
        b"event" => &mut event,
        b"retry" => &mut retry,
        b"data" => &mut data,
        b"origin" => &mut origin,
        _ => continue,
      };
      if slot.is_some() {
        return Err(Malformed("a field appears twice"));
      }
      let text = std::str::from_utf8(value).map_err(|_| Malformed("a field is not UTF-8"))?;
      *slot = Some(text);
    }
    let route = match kind {
      Some("broadcast") => Route::All,
      Some("channel") => Route::Channel(channel_of(channel)?.into()),
      // Any string is a client id (the empty one too), as in the registry.
      Some("client") => Route::Client(
        client
          .ok_or(Malformed("kind client without a client"))?
          .into(),
      ),
      Some(_) => return Err(Malformed("unknown kind")),
      None => return Err(Malformed("no kind")),
    };
    let data = data.ok_or(Malformed("no data"))?;
    let retry = match retry {
      None => None,
      Some(r) => Some(
        r.parse::<u64>()
          .ok()
          .filter(|_| r.bytes().all(|b| b.is_ascii_digit()))
          .ok_or(Malformed("retry is not a whole number"))?,
      ),
    };
    let fields = EventFields {
      event,
      id: None,
      retry,
    };
    fields
      .validate()
      .map_err(|_| Malformed("event has a line break"))?;
    Ok(Entry {
      route,
      event: event.map(str::to_string),
      retry,
      data: data.to_string(),
      origin: origin.map(str::to_string),
    })
  }

  /// The SSE frame, with `id` as its `id:` line (none for an event the hub
  /// delivered locally while Redis was down).
  pub fn frame(&self, id: Option<EntryId>) -> Vec<u8> {
    let id = id.map(|i| i.to_string());
    let fields = EventFields {
      event: self.event.as_deref(),
      id: id.as_deref(),
      retry: self.retry,
    };
    let mut out = Vec::with_capacity(self.data.len() + 48);
    frame::push_event(&mut out, &fields, &self.data);
    out
  }
}

/// A channel or client id from an entry: non-empty and with no lone
/// surrogate (impossible in UTF-8) or control line break.
fn channel_of(value: Option<&str>) -> Result<&str, Malformed> {
  value
    .filter(|v| !v.is_empty())
    .ok_or(Malformed("kind channel without a channel"))
}

/// The most a thread's framing buffer keeps between entries.
const SCRATCH_KEEP: usize = 1 << 20;

/// One entry, framed once, on its way to every connection it is for.
#[derive(Debug, Clone)]
pub struct BusFrame {
  /// `None` for an event delivered locally without Redis.
  pub id: Option<EntryId>,
  pub route: Route,
  /// The frame as one HTTP chunk (what the socket writer sends); the
  /// stream transport writes the frame inside it.
  pub chunk: Arc<[u8]>,
}

impl BusFrame {
  pub fn new(id: Option<EntryId>, entry: &Entry) -> BusFrame {
    // The frame is made in a buffer this thread keeps, then copied once
    // into the chunk (size line, frame, CRLF): one allocation per entry
    // (the bus reader frames thousands a batch).
    thread_local!(static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    let chunk = SCRATCH.with(|scratch| {
      let mut scratch = scratch.borrow_mut();
      let id = id.map(|i| i.to_string());
      let fields = EventFields {
        event: entry.event.as_deref(),
        id: id.as_deref(),
        retry: entry.retry,
      };
      let chunk = frame::chunk_with(&mut scratch, |body| {
        frame::push_event(body, &fields, &entry.data)
      });
      if scratch.capacity() > SCRATCH_KEEP {
        *scratch = Vec::new();
      }
      chunk
    });
    BusFrame {
      id,
      route: entry.route.clone(),
      chunk,
    }
  }

  /// The SSE frame inside the chunk.
  pub fn frame(&self) -> &[u8] {
    let start = frame::chunk_payload_start(&self.chunk);
    &self.chunk[start..self.chunk.len() - 2]
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn decode(fields: &[(&str, &str)]) -> Result<Entry, Malformed> {
    Entry::decode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
  }

  #[test]
  fn ids_parse_strictly_and_order_as_redis_does() {
    assert_eq!(
      EntryId::parse("1700000000000-3"),
      Some(EntryId {
        ms: 1_700_000_000_000,
        seq: 3
      })
    );
    for bad in [
      "", "1", "-1", "1-", "1-x", " 1-2", "1-2 ", "+1-2", "1-2-3", "*", "$",
    ] {
      assert_eq!(EntryId::parse(bad), None, "{bad:?}");
    }
    assert_eq!(EntryId::parse("99999999999999999999-0"), None, "past u64");
    assert!(EntryId::parse("5-10").unwrap() > EntryId::parse("5-9").unwrap());
    assert!(EntryId::parse("6-0").unwrap() > EntryId::parse("5-99").unwrap());
    assert_eq!(EntryId::parse("12-7").unwrap().to_string(), "12-7");
  }

  #[test]
  fn an_entry_round_trips_through_its_fields() {
    for route in [
      Route::All,
      Route::Channel("room:1".into()),
      Route::Client("user-7".into()),
    ] {
      let entry = Entry {
        route,
        event: Some("tick".into()),
        retry: Some(1500),
        data: "{\"a\":\"b\\nc\"}".into(),
        origin: Some("abc:1".into()),
      };
      let retry = entry.retry_text();
      let mut fields: Vec<(&[u8], &[u8])> = entry
        .fields()
        .into_iter()
        .map(|(n, v)| (n.as_bytes(), v))
        .collect();
      if let Some(r) = &retry {
        fields.push((b"retry", r.as_bytes()));
      }
      assert_eq!(Entry::decode(fields), Ok(entry));
    }
  }

  #[test]
  fn malformed_entries_are_refused_whole() {
    assert!(decode(&[("data", "1")]).is_err(), "no kind");
    assert!(decode(&[("kind", "everyone"), ("data", "1")]).is_err());
    assert!(decode(&[("kind", "broadcast")]).is_err(), "no data");
    assert!(decode(&[("kind", "channel"), ("data", "1")]).is_err());
    assert!(decode(&[("kind", "client"), ("data", "1")]).is_err());
    // The empty string is a client id like any other.
    assert!(decode(&[("kind", "client"), ("client", ""), ("data", "1")]).is_ok());
    assert!(decode(&[("kind", "broadcast"), ("event", "a\nb"), ("data", "1")]).is_err());
    assert!(decode(&[("kind", "broadcast"), ("retry", "-5"), ("data", "1")]).is_err());
    assert!(decode(&[("kind", "broadcast"), ("retry", "1e3"), ("data", "1")]).is_err());
    assert!(decode(&[("kind", "broadcast"), ("data", "1"), ("data", "2")]).is_err());
    let bad_utf8: [(&[u8], &[u8]); 2] = [(b"kind", b"broadcast"), (b"data", b"\xff")];
    assert!(Entry::decode(bad_utf8).is_err());
    // Unknown fields are ignored, so the encoding can grow.
    assert!(decode(&[("kind", "broadcast"), ("data", "1"), ("x", "y")]).is_ok());
  }

  #[test]
  fn frames_carry_the_stream_id_and_split_data_lines() {
    let entry = decode(&[("kind", "broadcast"), ("event", "e"), ("data", "a\nb")]).unwrap();
    let id = EntryId::parse("17-2");
    assert_eq!(entry.frame(id), b"event: e\nid: 17-2\ndata: a\ndata: b\n\n");
    assert_eq!(entry.frame(None), b"event: e\ndata: a\ndata: b\n\n");
    let framed = BusFrame::new(id, &entry);
    assert_eq!(framed.frame(), b"event: e\nid: 17-2\ndata: a\ndata: b\n\n");
    assert!(framed.chunk.starts_with(b"23\r\n"), "35 bytes, in hex");
  }

  #[test]
  fn routes_match_by_channel_and_client() {
    let channels = ["a", "b"];
    assert!(Route::All.matches("x", &channels));
    assert!(Route::Channel("b".into()).matches("x", &channels));
    assert!(!Route::Channel("c".into()).matches("x", &channels));
    assert!(Route::Client("x".into()).matches("x", &channels));
    assert!(!Route::Client("y".into()).matches("x", &channels));
  }
}
