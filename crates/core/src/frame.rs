//! SSE wire framing (WHATWG HTML, "Server-sent events", 9.2.6 "Interpreting an event stream").
//!
//! Pure Rust: no napi types, so every rule here is unit-tested by `cargo test`.
//! A frame is built once per send and shared by every recipient.

use std::fmt;

/// Longest event name or id we accept. The spec sets no limit; an unbounded
/// field would let one caller make every recipient buffer an arbitrary line.
pub const MAX_FIELD_LEN: usize = 1024;

/// Why a field value was refused. The binding turns it into a `TypeError`
/// that names the argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
  pub field: &'static str,
  pub reason: &'static str,
}

impl fmt::Display for FieldError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{} {}", self.field, self.reason)
  }
}

impl std::error::Error for FieldError {}

/// Optional fields of one event. Values are checked by [`EventFields::validate`]
/// before anything is framed, so a bad field never produces half a frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventFields<'a> {
  pub event: Option<&'a str>,
  pub id: Option<&'a str>,
  pub retry: Option<u64>,
}

impl EventFields<'_> {
  /// A CR, LF or NUL in `event` or `id` would end the field early and let the
  /// rest of the value become a field of its own (field injection). NUL in an
  /// id makes a conforming client ignore the whole field.
  pub fn validate(&self) -> Result<(), FieldError> {
    if let Some(event) = self.event {
      check_single_line("event", event)?;
    }
    if let Some(id) = self.id {
      check_single_line("id", id)?;
    }
    Ok(())
  }
}

fn check_single_line(field: &'static str, value: &str) -> Result<(), FieldError> {
  if value.len() > MAX_FIELD_LEN {
    return Err(FieldError {
      field,
      reason: "must be at most 1024 bytes",
    });
  }
  if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
    return Err(FieldError {
      field,
      reason: "must not contain CR, LF or NUL",
    });
  }
  Ok(())
}

/// Appends one complete event: optional `event:`, `id:`, `retry:` fields, then
/// the data, one `data:` line per line of `data` (CR, LF and CRLF all end a
/// line, as the client's parser sees them), then the blank line that
/// dispatches it. Fields must have passed [`EventFields::validate`].
pub fn push_event(out: &mut Vec<u8>, fields: &EventFields<'_>, data: &str) {
  debug_assert!(fields.validate().is_ok());
  out.reserve(data.len() + 8);
  if let Some(event) = fields.event {
    push_field(out, b"event", event);
  }
  if let Some(id) = fields.id {
    push_field(out, b"id", id);
  }
  if let Some(retry) = fields.retry {
    out.extend_from_slice(b"retry: ");
    out.extend_from_slice(retry.to_string().as_bytes());
    out.push(b'\n');
  }
  push_lines(out, b"data", data);
  out.push(b'\n');
}

/// Appends a comment: `: text` per line. Clients ignore comments; proxies see
/// traffic, which is what heartbeats rely on.
pub fn push_comment(out: &mut Vec<u8>, text: &str) {
  push_lines(out, b"", text);
}

/// The frame a broadcast sends: `data: <text>\n\n`.
pub fn data_frame(text: &str) -> Vec<u8> {
  let mut out = Vec::with_capacity(text.len() + 8);
  push_event(&mut out, &EventFields::default(), text);
  out
}

/// The frame a reconnecting client gets when the events it missed are no
/// longer in history: `event: reset`, carrying the newest id (if any) so its
/// next reconnection starts from there, and `null` data so it dispatches.
pub fn reset_frame(newest_id: Option<&str>) -> Vec<u8> {
  let fields = EventFields {
    event: Some("reset"),
    id: newest_id.filter(|id| check_single_line("id", id).is_ok()),
    retry: None,
  };
  let mut out = Vec::new();
  push_event(&mut out, &fields, "null");
  out
}

/// `event: reset` without an id, as an HTTP chunk: what a connection gets
/// where entries it should have had are gone (the bus's frames are chunks).
pub fn reset_chunk() -> std::sync::Arc<[u8]> {
  http_chunk(&reset_frame(None)).into()
}

/// Room before a chunk's payload for its size line: 16 hex digits, CRLF.
const SIZE_LINE_ROOM: usize = 18;

/// An HTTP chunk ([`http_chunk`]) as shared bytes, allocated once: `fill`
/// appends the payload to `scratch` (cleared first) after room for the size
/// line, which is then written just before the payload, and the chunk is
/// copied into the `Arc` in one `memcpy`. `scratch` is the caller's buffer,
/// reused from one chunk to the next (the bus reader frames thousands a
/// batch).
pub fn chunk_with(scratch: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) -> std::sync::Arc<[u8]> {
  scratch.clear();
  scratch.resize(SIZE_LINE_ROOM, 0);
  fill(scratch);
  let len = (scratch.len() - SIZE_LINE_ROOM) as u64;
  scratch.extend_from_slice(b"\r\n");
  let mut digits = 1;
  while digits < 16 && len >> (4 * digits) != 0 {
    digits += 1;
  }
  let start = SIZE_LINE_ROOM - 2 - digits;
  for (i, byte) in scratch[start..start + digits].iter_mut().enumerate() {
    *byte = b"0123456789abcdef"[((len >> (4 * (digits - 1 - i))) & 15) as usize];
  }
  scratch[SIZE_LINE_ROOM - 2..SIZE_LINE_ROOM].copy_from_slice(b"\r\n");
  std::sync::Arc::from(&scratch[start..])
}

/// Wraps `frame` in HTTP/1.1 chunked transfer coding (`<hex size>\r\n`,
/// the bytes, `\r\n`), as Node would write it. The socket transport writes
/// to the socket under Node's HTTP layer, so it frames chunks itself.
pub fn http_chunk(frame: &[u8]) -> Vec<u8> {
  let size = format!("{:x}\r\n", frame.len());
  let mut out = Vec::with_capacity(size.len() + frame.len() + 2);
  out.extend_from_slice(size.as_bytes());
  out.extend_from_slice(frame);
  out.extend_from_slice(b"\r\n");
  out
}

/// How a connection's body is delimited on the wire. Every buffer handed to
/// the writer is an HTTP chunk ([`http_chunk`]); a connection Node does not
/// chunk (an HTTP/1.0 client, such as nginx's default `proxy_pass`) gets
/// the chunk's payload only, its body delimited by closing the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
  /// `Transfer-Encoding: chunked`: the chunk as it is.
  #[default]
  Chunked,
  /// A close-delimited body: the payload inside the chunk.
  Identity,
}

impl Framing {
  /// The bytes of `chunk` that go on this connection's wire.
  pub fn wire<'a>(&self, chunk: &'a [u8]) -> &'a [u8] {
    match self {
      Framing::Chunked => chunk,
      Framing::Identity => {
        let start = chunk_payload_start(chunk);
        if start == 0 {
          return chunk;
        }
        &chunk[start..chunk.len().saturating_sub(2).max(start)]
      }
    }
  }
}

/// Where the payload of a chunk made by [`http_chunk`] starts (after the
/// size line); 0 for bytes that are not such a chunk.
pub fn chunk_payload_start(chunk: &[u8]) -> usize {
  chunk
    .windows(2)
    .take(18)
    .position(|w| w == b"\r\n")
    .map_or(0, |i| i + 2)
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &str) {
  out.extend_from_slice(name);
  out.extend_from_slice(b": ");
  out.extend_from_slice(value.as_bytes());
  out.push(b'\n');
}

/// One `name: line` per line of `text`; an empty text is one empty line, so
/// `data: ""`-less events still dispatch with empty data.
fn push_lines(out: &mut Vec<u8>, name: &[u8], text: &str) {
  let bytes = text.as_bytes();
  let mut start = 0;
  while let Some(at) = next_line_break(bytes, start) {
    push_line(out, name, &bytes[start..at]);
    start = match (bytes[at], bytes.get(at + 1)) {
      (b'\r', Some(b'\n')) => at + 2,
      _ => at + 1,
    };
  }
  push_line(out, name, &bytes[start..]);
}

/// Where the first CR or LF at or after `from` is: eight bytes at a time
/// (a payload is mostly one long line of JSON), then byte by byte within
/// the word that has one.
fn next_line_break(bytes: &[u8], from: usize) -> Option<usize> {
  const ONES: u64 = u64::from_ne_bytes([1; 8]);
  const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
  // Nonzero exactly when some byte of `word` is zero.
  let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGH != 0;
  let mut at = from;
  while let Some(word) = bytes.get(at..at + 8) {
    let word = u64::from_ne_bytes([
      word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
    ]);
    if has_zero(word ^ (ONES * u64::from(b'\n'))) || has_zero(word ^ (ONES * u64::from(b'\r'))) {
      break;
    }
    at += 8;
  }
  bytes
    .get(at..)?
    .iter()
    .position(|&b| b == b'\n' || b == b'\r')
    .map(|i| at + i)
}

fn push_line(out: &mut Vec<u8>, name: &[u8], line: &[u8]) {
  out.extend_from_slice(name);
  out.push(b':');
  if !line.is_empty() || name.is_empty() {
    out.push(b' ');
  }
  out.extend_from_slice(line);
  out.push(b'\n');
}

#[cfg(test)]
mod tests {
  use super::*;

  fn event(fields: EventFields<'_>, data: &str) -> String {
    let mut out = Vec::new();
    push_event(&mut out, &fields, data);
    String::from_utf8(out).unwrap()
  }

  #[test]
  fn data_frame_is_the_documented_wire_format() {
    assert_eq!(data_frame(r#"{"a":1}"#), b"data: {\"a\":1}\n\n");
    assert_eq!(data_frame("\"hi\""), b"data: \"hi\"\n\n");
  }

  /// The lines a client's parser sees (CR, LF and CRLF each end one),
  /// found one byte at a time: what `push_lines` must agree with.
  fn lines_one_by_one(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let (bytes, mut start, mut i) = (text.as_bytes(), 0, 0);
    while i < bytes.len() {
      if bytes[i] == b'\n' || bytes[i] == b'\r' {
        lines.push(&text[start..i]);
        i += if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
          2
        } else {
          1
        };
        start = i;
      } else {
        i += 1;
      }
    }
    lines.push(&text[start..]);
    lines
  }

  #[test]
  fn line_breaks_are_found_at_every_offset_of_a_word() {
    for len in 0..40 {
      for at in 0..len {
        for brk in ["\n", "\r", "\r\n", "\n\r", "\r\r"] {
          let mut text = "é".repeat(len / 2) + &"x".repeat(len % 2);
          let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap();
          text.insert_str(at, brk);
          let mut out = Vec::new();
          push_lines(&mut out, b"data", &text);
          let expected: String = lines_one_by_one(&text)
            .iter()
            .map(|line| format!("data: {line}\n").replace("data: \n", "data:\n"))
            .collect();
          assert_eq!(String::from_utf8(out).unwrap(), expected, "{text:?}");
        }
      }
    }
  }

  #[test]
  fn http_chunks_carry_the_hex_size() {
    assert_eq!(
      http_chunk(b"data: \"hi\"\n\n"),
      b"c\r\ndata: \"hi\"\n\n\r\n"
    );
    assert_eq!(http_chunk(&[b'x'; 255])[..4], *b"ff\r\n");
    // The shared form is the same bytes, at every size-line width, with
    // a scratch buffer reused from a longer chunk.
    let mut scratch = vec![b'z'; 100_000];
    for len in [0, 1, 15, 16, 255, 256, 4095, 4096, 70_000, 1 << 20] {
      let frame = vec![b'y'; len];
      assert_eq!(
        &chunk_with(&mut scratch, |out| out.extend_from_slice(&frame))[..],
        http_chunk(&frame).as_slice(),
        "{len}"
      );
    }
  }

  #[test]
  fn identity_framing_sends_the_payload_of_each_chunk() {
    let chunk = http_chunk(b"data: 1\n\n");
    assert_eq!(Framing::Chunked.wire(&chunk), chunk.as_slice());
    assert_eq!(Framing::Identity.wire(&chunk), b"data: 1\n\n");
    let big = http_chunk(&[b'x'; 70_000]);
    assert_eq!(Framing::Identity.wire(&big).len(), 70_000);
  }

  #[test]
  fn fields_come_before_data_in_a_fixed_order() {
    let fields = EventFields {
      event: Some("tick"),
      id: Some("7"),
      retry: Some(1500),
    };
    assert_eq!(
      event(fields, "x"),
      "event: tick\nid: 7\nretry: 1500\ndata: x\n\n"
    );
  }

  #[test]
  fn every_line_ending_splits_data() {
    assert_eq!(
      event(EventFields::default(), "a\nb\r\nc\rd"),
      "data: a\ndata: b\ndata: c\ndata: d\n\n"
    );
    assert_eq!(event(EventFields::default(), ""), "data:\n\n");
    assert_eq!(event(EventFields::default(), "a\n"), "data: a\ndata:\n\n");
  }

  #[test]
  fn comments_are_prefixed_per_line() {
    let mut out = Vec::new();
    push_comment(&mut out, "ping\nagain");
    assert_eq!(out, b": ping\n: again\n");
    out.clear();
    push_comment(&mut out, "");
    assert_eq!(out, b": \n");
  }

  #[test]
  fn field_injection_is_refused() {
    for bad in ["a\nb", "a\rb", "a\0b", "x\n\ndata: evil"] {
      let f = EventFields {
        event: Some(bad),
        ..Default::default()
      };
      assert_eq!(f.validate().unwrap_err().field, "event");
      let f = EventFields {
        id: Some(bad),
        ..Default::default()
      };
      assert_eq!(f.validate().unwrap_err().field, "id");
    }
    let long = "x".repeat(MAX_FIELD_LEN + 1);
    let f = EventFields {
      id: Some(&long),
      ..Default::default()
    };
    assert!(f.validate().is_err());
  }
}
