//! The framing promise, as a property: any `data`, `event`, `id` and
//! `retry` the API accepts reach a client exactly as given (line endings
//! aside: CR, LF and CRLF are one line break to every client), and what it
//! refuses is exactly what could not (a CR, LF or NUL in `event` or `id`, a
//! field over 1,024 bytes, a `retry` that is not a whole number of
//! milliseconds). Checked against a parser written here from the spec
//! (WHATWG HTML, 9.2.6 "Interpreting an event stream"), not against the
//! framing code, over thousands of generated cases: single events, streams
//! of several (the last event id carries over), comments between them, the
//! HTTP chunk around each, and the Redis bus's entry frames.

use sse_helper_core::bus::entry::{BusFrame, Entry, EntryId, Route};
use sse_helper_core::frame::{data_frame, http_chunk, push_comment, Framing};
use sse_helper_core::hub::options::{event_frame, EventOptions};

/// What a client's `EventSource` dispatches: type, data, `lastEventId`,
/// plus the reconnection time it was last told (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dispatched {
  event: String,
  data: String,
  last_event_id: String,
  retry: Option<u64>,
}

/// The spec's event stream interpretation, step by step: a leading BOM is
/// dropped; lines end at CRLF, LF or CR; an empty line dispatches; a line
/// starting with `:` is a comment; the field name is up to the first colon
/// (the whole line without one, with an empty value), and one space after
/// the colon is dropped; `data` appends the value and LF; `id` without NUL
/// sets the last event id buffer (kept across events); `retry` of ASCII
/// digits only sets the reconnection time; other fields are ignored. A
/// dispatch with an empty data buffer dispatches nothing; otherwise one
/// trailing LF is dropped and an empty type is `message`. An event not ended
/// by an empty line when the stream ends is not dispatched.
fn parse(stream: &str) -> Vec<Dispatched> {
  let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
  let mut out = Vec::new();
  let (mut event, mut data, mut last_id) = (String::new(), String::new(), String::new());
  let mut retry = None;
  let mut rest = stream;
  // Each line with its end; what follows the last line end is unfinished.
  while let Some(end) = rest.find(['\r', '\n']) {
    let line = &rest[..end];
    let after = if rest[end..].starts_with("\r\n") {
      end + 2
    } else {
      end + 1
    };
    rest = &rest[after..];
    if line.is_empty() {
      if !data.is_empty() {
        data.pop();
        let kind = if event.is_empty() { "message" } else { &event };
        out.push(Dispatched {
          event: kind.to_string(),
          data: data.clone(),
          last_event_id: last_id.clone(),
          retry,
        });
      }
      event.clear();
      data.clear();
      continue;
    }
    if line.starts_with(':') {
      continue;
    }
    let (field, value) = match line.split_once(':') {
      Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
      None => (line, ""),
    };
    match field {
      "event" => event = value.to_string(),
      "data" => {
        data.push_str(value);
        data.push('\n');
      }
      "id" if !value.contains('\0') => last_id = value.to_string(),
      "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
        retry = value.parse().ok();
      }
      _ => {}
    }
  }
  out
}

/// xorshift64*: deterministic, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
  fn next(&mut self) -> u64 {
    self.0 ^= self.0 >> 12;
    self.0 ^= self.0 << 25;
    self.0 ^= self.0 >> 27;
    self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
  }

  fn below(&mut self, n: u64) -> u64 {
    self.next() % n
  }

  fn chance(&mut self, one_in: u64) -> bool {
    self.below(one_in) == 0
  }

  /// A string rich in what matters to a parser: line ends of every kind,
  /// colons, spaces, NUL, a BOM, field names, and any other character now
  /// and then; sometimes longer than a field may be.
  fn text(&mut self) -> String {
    const PARTS: &[&str] = &[
      "a", "b", " ", "  ", ":", ": ", "\n", "\r", "\r\n", "\n\n", "\0", "\u{feff}", "é", "😀",
      "\u{2028}", "\t", "data", "data:", "id:", "event:", "retry:", "x", "0", "9",
    ];
    if self.chance(60) {
      let len = 1020 + self.below(10) as usize;
      return "x".repeat(len);
    }
    let mut s = String::new();
    for _ in 0..self.below(16) {
      if self.chance(12) {
        s.push(char::from_u32(self.below(0x11_0000) as u32).unwrap_or('?'));
      } else {
        s.push_str(PARTS[self.below(PARTS.len() as u64) as usize]);
      }
    }
    s
  }

  /// `Some(text)` or `None`, each about half the time.
  fn maybe_text(&mut self) -> Option<String> {
    self.chance(2).then(|| self.text())
  }

  /// A `retry` option as JS may pass it, valid or not.
  fn retry(&mut self) -> Option<f64> {
    const VALUES: &[f64] = &[
      0.0,
      1.0,
      1500.0,
      9_007_199_254_740_991.0,
      9_007_199_254_740_992.0,
      -1.0,
      1.5,
      f64::NAN,
      f64::INFINITY,
    ];
    self
      .chance(3)
      .then(|| VALUES[self.below(VALUES.len() as u64) as usize])
  }
}

/// Whether the API must accept `event` or `id` as a field value.
fn single_line(value: Option<&str>) -> bool {
  value.is_none_or(|v| v.len() <= 1024 && !v.contains(['\r', '\n', '\0']))
}

fn whole_ms(retry: Option<f64>) -> bool {
  retry.is_none_or(|r| {
    r.is_finite() && r.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&r)
  })
}

/// What a client reads for `data`: every line end is LF.
fn lines(data: &str) -> String {
  data.replace("\r\n", "\n").replace('\r', "\n")
}

const CASES: usize = 20_000;

#[test]
fn every_accepted_event_reaches_a_client_as_given_and_only_unsafe_fields_are_refused() {
  let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
  let (mut accepted, mut refused) = (0, 0);
  for case in 0..CASES {
    let (data, event, id, retry) = (rng.text(), rng.maybe_text(), rng.maybe_text(), rng.retry());
    let options = EventOptions {
      event: event.as_deref(),
      id: id.as_deref(),
      retry,
    };
    let fields = options.fields();
    let acceptable = single_line(event.as_deref()) && single_line(id.as_deref()) && whole_ms(retry);
    assert_eq!(
      fields.is_ok(),
      acceptable,
      "case {case}: {options:?} -> {fields:?}"
    );
    let Ok(fields) = fields else {
      refused += 1;
      continue;
    };
    accepted += 1;
    let frame = String::from_utf8(event_frame(&fields, &data)).expect("a frame is UTF-8");
    let expected = Dispatched {
      event: event
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "message".into()),
      data: lines(&data),
      last_event_id: id.unwrap_or_default(),
      retry: retry.map(|r| r as u64),
    };
    assert_eq!(parse(&frame), vec![expected], "case {case}: {frame:?}");
  }
  // Both sides of the property were exercised.
  assert!(
    accepted > CASES / 4 && refused > CASES / 10,
    "{accepted} / {refused}"
  );
}

#[test]
fn a_stream_of_events_comments_and_chunks_dispatches_each_event_in_order() {
  let mut rng = Rng(0x0123_4567_89ab_cdef);
  for case in 0..CASES / 10 {
    let mut chunks = Vec::new();
    let mut expected = Vec::new();
    let (mut last_id, mut last_retry) = (String::new(), None);
    for _ in 0..1 + rng.below(6) {
      if rng.chance(3) {
        let mut comment = Vec::new();
        push_comment(&mut comment, &rng.text());
        chunks.push(http_chunk(&comment));
      }
      let (data, event, id, retry) = (rng.text(), rng.maybe_text(), rng.maybe_text(), rng.retry());
      let options = EventOptions {
        event: event.as_deref(),
        id: id.as_deref(),
        retry,
      };
      let Ok(fields) = options.fields() else {
        continue;
      };
      chunks.push(http_chunk(&event_frame(&fields, &data)));
      // An event without an id keeps the last one (the spec's buffer).
      if let Some(id) = id {
        last_id = id;
      }
      if let Some(retry) = retry {
        last_retry = Some(retry as u64);
      }
      expected.push(Dispatched {
        event: event
          .filter(|e| !e.is_empty())
          .unwrap_or_else(|| "message".into()),
        data: lines(&data),
        last_event_id: last_id.clone(),
        retry: last_retry,
      });
    }
    // What a client reads under the chunked coding: each chunk's payload.
    let body: Vec<u8> = chunks
      .iter()
      .flat_map(|c| Framing::Identity.wire(c).iter().copied())
      .collect();
    let body = String::from_utf8(body).expect("UTF-8");
    assert_eq!(parse(&body), expected, "case {case}: {body:?}");
  }
}

#[test]
fn a_bus_entry_reaches_a_client_with_its_stream_id() {
  let mut rng = Rng(0xdead_beef_cafe_f00d);
  for case in 0..CASES / 4 {
    let (data, event, retry) = (rng.text(), rng.maybe_text(), rng.retry());
    let options = EventOptions {
      event: event.as_deref(),
      id: None,
      retry,
    };
    let Ok(fields) = options.bus_fields() else {
      continue;
    };
    let entry = Entry {
      route: Route::All,
      event: fields.event.map(str::to_string),
      retry: fields.retry,
      data: data.clone(),
      origin: None,
    };
    let id = EntryId {
      ms: rng.next() >> 20,
      seq: rng.below(1000),
    };
    let frame = BusFrame::new(Some(id), &entry);
    let text = std::str::from_utf8(frame.frame()).expect("UTF-8");
    let expected = Dispatched {
      event: event
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "message".into()),
      data: lines(&data),
      last_event_id: id.to_string(),
      retry: retry.map(|r| r as u64),
    };
    assert_eq!(parse(text), vec![expected], "case {case}: {text:?}");
  }
}

#[test]
fn any_json_text_is_one_data_line_and_round_trips() {
  // What the drop-in sends: `data: <JSON.stringify(payload)>`. JSON escapes
  // CR and LF, so every payload is one data line, whatever its strings hold.
  let samples = [
    serde_json::json!({"text": "line\nbreak\r\nand\rcr", "n": 1}),
    serde_json::json!("\u{2028}\u{2029}\u{0}"),
    serde_json::json!([null, true, 1.5, "é✓😀"]),
  ];
  for value in samples {
    let text = serde_json::to_string(&value).unwrap();
    let frame = String::from_utf8(data_frame(&text)).unwrap();
    assert_eq!(frame.matches("data:").count(), 1, "{frame:?}");
    let parsed = parse(&frame);
    assert_eq!(parsed.len(), 1);
    let back: serde_json::Value = serde_json::from_str(&parsed[0].data).unwrap();
    assert_eq!(back, value);
  }
}
