//! The binding's side of the Redis bus: starting it with a thread-safe
//! function that brings its events to the JS thread, turning a broadcast
//! into a stream entry, and executing what the bus reports (live entries
//! and replays for stream-transport connections, link changes, answers).

use napi::{Env, Error, Result};
use napi_derive::napi;
use sse_helper_core::bus::entry::{BusFrame, Entry, Route};
use sse_helper_core::bus::link::Notice;
use sse_helper_core::bus::{self, BusConfig, BusEvent};
use sse_helper_core::frame::{self, EventFields};

use crate::args::{self, invalid, EventOptions};
use crate::effects::{emit, notifier};
use crate::hub::deliver;
use crate::js::RawEnv;
use crate::state::Shared;
use crate::stream::OutFrame;

/// `configure({ redis })`, as the JS surface passes it (URL string already
/// turned into `{ url }`, defaults filled in).
#[napi(object)]
pub struct BusOptions {
  pub url: String,
  pub stream: String,
  pub max_len: f64,
  pub replay_limit: f64,
  /// PEM certificates to trust for `rediss://` (a private CA).
  pub ca: Option<String>,
}

/// Checks the options and starts the bus thread.
pub fn start(state: &Shared, env: &Env, options: &BusOptions) -> Result<()> {
  let config = check(state, env.raw(), options)?;
  let notify = notifier(state, env, "sseHelperBusEvents", execute)?;
  state
    .borrow_mut()
    .core
    .start_bus(config, notify)
    .map_err(|e| Error::from_reason(format!("starting the Redis bus failed: {e}")))
}

/// Checks the options (a TypeError naming the one that is wrong) without
/// starting anything, so `configure()` applies nothing unless all are valid.
pub fn check(state: &Shared, raw: RawEnv, options: &BusOptions) -> Result<BusConfig> {
  if state.borrow().core.has_bus() {
    return Err(args::state_error(
      raw,
      c"ERR_SSE_BUS_RUNNING",
      "options.redis is already set: a hub's Redis bus is configured once",
    ));
  }
  bus::check_url(&options.url, options.ca.as_deref()).map_err(|e| {
    invalid(
      state,
      raw,
      &format!("options.redis.url is not a usable Redis URL: {e}"),
    )
  })?;
  if options.stream.is_empty() || options.stream.len() > 1024 {
    return Err(invalid(
      state,
      raw,
      "options.redis.stream must be a non-empty string of at most 1024 bytes",
    ));
  }
  let whole = |n: f64, max: f64| {
    (n.is_finite() && n.fract() == 0.0 && n >= 1.0 && n <= max).then_some(n as usize)
  };
  let max_len = whole(options.max_len, 1.0e9).ok_or_else(|| {
    invalid(
      state,
      raw,
      "options.redis.maxLen must be an integer from 1 to 1000000000",
    )
  })?;
  let replay_limit = whole(options.replay_limit, 1.0e6).ok_or_else(|| {
    invalid(
      state,
      raw,
      "options.redis.replayLimit must be an integer from 1 to 1000000",
    )
  })?;
  Ok(BusConfig {
    url: options.url.clone(),
    stream: options.stream.clone(),
    max_len,
    replay_limit,
    max_replay_bytes: state.borrow().core.max_buffered_bytes(),
    ca: options.ca.clone(),
  })
}

/// A broadcast, publish or `sendToClient` as a stream entry. With a bus,
/// the stream id is every event's id, so an `options.id` is refused.
pub fn entry(
  state: &Shared,
  env: RawEnv,
  route: Route,
  data: String,
  options: Option<&EventOptions>,
) -> Result<Entry> {
  let event = options.and_then(|o| o.event.clone());
  if options.is_some_and(|o| o.id.is_some()) {
    return Err(invalid(
      state,
      env,
      "options.id cannot be set on a hub with a Redis bus: every event's id is its stream entry id",
    ));
  }
  let retry = match options.and_then(|o| o.retry) {
    None => None,
    Some(r)
      if r.is_finite() && r.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&r) =>
    {
      Some(r as u64)
    }
    Some(_) => {
      return Err(invalid(
        state,
        env,
        "options.retry must be a non-negative integer (milliseconds)",
      ))
    }
  };
  let fields = EventFields {
    event: event.as_deref(),
    id: None,
    retry,
  };
  fields
    .validate()
    .map_err(|e| invalid(state, env, &format!("options.{e}")))?;
  Ok(Entry {
    route,
    event,
    retry,
    data,
    origin: None,
  })
}

/// What became of a broadcast handed to the bus.
pub enum Appended {
  /// In the queue to Redis: every instance delivers it once read back.
  Queued,
  /// Redis is away: delivered to this instance's connections, without an
  /// id (counted in `localFallbacks`).
  Local(u32),
}

/// Hands `entry` to the bus; while Redis is away it is delivered here at
/// once, through the same replay gates as the bus's entries. Throws
/// `ERR_SSE_CLOSED` once the bus was told to stop: nothing can reach the
/// other instances any more, and dropping it silently would hide that.
pub fn append(state: &Shared, env: RawEnv, entry: Entry) -> Result<Appended> {
  {
    let mut s = state.borrow_mut();
    if s.core.bus_stopping() {
      drop(s);
      return Err(args::state_error(
        env,
        c"ERR_SSE_CLOSED",
        "the SSE hub was closed: its Redis bus takes no more events",
      ));
    }
    if let Some(bus) = s.core.bus_mut() {
      if bus.accepts_appends() {
        bus.append(entry);
        return Ok(Appended::Queued);
      }
      bus.note_local_fallback();
    }
  }
  let frame = BusFrame::new(None, &entry);
  let keys = state.borrow_mut().core.deliver_locally(frame.clone());
  let sockets = state.borrow().core.socket_targets(&frame.route);
  let out = OutFrame::with_chunk(frame.frame(), frame.chunk.clone());
  let written = if keys.is_empty() {
    0
  } else {
    deliver(state, env, Some(&keys), &out)
  };
  Ok(Appended::Local(written + sockets))
}

/// Carries out what the bus reported, in order.
fn execute(state: &Shared, env: RawEnv) {
  let events = state.borrow_mut().core.bus_events();
  for event in events {
    match event {
      BusEvent::Link(Notice::Connected) => emit(state, env, "bus", "connected", ""),
      BusEvent::Link(Notice::Disconnected(error)) => {
        emit(state, env, "bus", "disconnected", &error)
      }
      BusEvent::Frames(frames) => {
        for frame in frames.iter() {
          let keys = state.borrow_mut().core.bus_recipients(frame);
          if !keys.is_empty() {
            let out = OutFrame::with_chunk(frame.frame(), frame.chunk.clone());
            deliver(state, env, Some(&keys), &out);
          }
        }
      }
      BusEvent::Replayed {
        key,
        frames,
        cursor,
      } => {
        let held = state.borrow_mut().core.replayed(key, cursor);
        if let Some(held) = held.filter(|h| !frames.is_empty() || !h.is_empty()) {
          let bytes: Vec<u8> = frames
            .iter()
            .chain(held.iter())
            .flat_map(|chunk| {
              let start = frame::chunk_payload_start(chunk);
              chunk[start..chunk.len() - 2].iter().copied()
            })
            .collect();
          deliver(state, env, Some(&[key]), &OutFrame::new(&bytes));
        }
      }
      BusEvent::Reply { request, result } => {
        let answer = match result {
          Ok(n) => format!("ok:{n}"),
          Err(e) => format!("error:{e}"),
        };
        emit(state, env, "reply", &request.to_string(), &answer);
      }
      BusEvent::Stopped => {
        state.borrow_mut().core.bus_stopped();
        emit(state, env, "busStopped", "", "");
      }
    }
  }
}
