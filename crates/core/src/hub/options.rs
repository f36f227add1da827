//! Arguments as JS passes them (strings and plain numbers, types already
//! checked by the JS surface), checked and turned into the core's values,
//! each in one place: an event's options, `configure()`'s settings, the
//! Redis bus's options, a channel name and a maximum age.

use std::time::Duration;

use super::{millis, CoreError, Settings, TransportMode};
use crate::backpressure::SlowPolicy;
use crate::bus::{self, BusConfig};
use crate::frame::{self, EventFields};
use crate::registry;
use crate::shards::MAX_WRITER_THREADS;

/// 2^53 - 1, JavaScript's `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// 2^31 - 1: the longest delay Node's timers take (longer ones fire at once).
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// `n` when it is a whole number within `min..=max`.
fn whole_number(n: f64, min: f64, max: f64) -> Option<u64> {
  (n.is_finite() && n.fract() == 0.0 && n >= min && n <= max).then_some(n as u64)
}

/// An optional setting: `None` stays `None`, a value `parse` rejects is
/// refused with `message`.
fn parse_option<V, T>(
  value: Option<V>,
  parse: impl FnOnce(V) -> Option<T>,
  message: &str,
) -> Result<Option<T>, CoreError> {
  match value {
    None => Ok(None),
    Some(v) => parse(v)
      .map(Some)
      .ok_or_else(|| CoreError::invalid(message)),
  }
}

/// The options of one event (`event`, `id`, `retry`), unchecked.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventOptions<'a> {
  pub event: Option<&'a str>,
  pub id: Option<&'a str>,
  /// Milliseconds, as the JS number it was.
  pub retry: Option<f64>,
}

impl<'a> EventOptions<'a> {
  /// The event's fields, checked: `retry` a whole number of milliseconds,
  /// `event` and `id` single lines of at most 1024 bytes.
  pub fn fields(&self) -> Result<EventFields<'a>, CoreError> {
    let retry = parse_option(
      self.retry,
      |r| whole_number(r, 0.0, MAX_SAFE_INTEGER),
      "options.retry must be a non-negative integer (milliseconds)",
    )?;
    let fields = EventFields {
      event: self.event,
      id: self.id,
      retry,
    };
    fields
      .validate()
      .map_err(|e| CoreError::invalid(format_args!("options.{e}")))?;
    Ok(fields)
  }

  /// [`EventOptions::fields`] for an event that goes through the Redis
  /// bus, where the stream entry's id is every event's id: an `id` is
  /// refused.
  pub fn bus_fields(&self) -> Result<EventFields<'a>, CoreError> {
    if self.id.is_some() {
      return Err(CoreError::invalid(
        "options.id cannot be set on a hub with a Redis bus: every event's id is its stream entry id",
      ));
    }
    self.fields()
  }
}

/// Frames one event with checked fields (`data:` lines only without).
pub fn event_frame(fields: &EventFields<'_>, data: &str) -> Vec<u8> {
  let mut out = Vec::with_capacity(data.len() + 32);
  frame::push_event(&mut out, fields, data);
  out
}

/// A channel name; `what` is how the message names the argument.
pub fn check_channel(channel: &str, what: &str) -> Result<(), CoreError> {
  registry::validate_channel(channel).map_err(|e| CoreError::invalid(format_args!("{what} {e}")))
}

/// A `maxAgeMs`: any finite non-negative number (a huge one saturates).
pub fn max_age(ms: f64) -> Result<Duration, CoreError> {
  if !(ms.is_finite() && ms >= 0.0) {
    return Err(CoreError::invalid(
      "maxAgeMs must be a non-negative finite number of milliseconds",
    ));
  }
  Ok(millis(ms))
}

/// `configure()`'s options, unchecked.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubOptions<'a> {
  pub transport: Option<&'a str>,
  pub max_buffered_bytes: Option<f64>,
  pub slow_client_policy: Option<&'a str>,
  pub history_size: Option<f64>,
  pub channel_history_size: Option<f64>,
  pub end_timeout_ms: Option<f64>,
  pub writer_threads: Option<f64>,
  pub max_clients: Option<f64>,
}

impl HubOptions<'_> {
  /// The settings, checked; nothing is applied unless all are valid.
  pub fn settings(&self) -> Result<Settings, CoreError> {
    Ok(Settings {
      mode: parse_option(
        self.transport,
        |t| match t {
          "auto" => Some(TransportMode::Auto),
          "stream" => Some(TransportMode::Stream),
          _ => None,
        },
        "options.transport must be 'auto' or 'stream'",
      )?,
      max_buffered_bytes: parse_option(
        self.max_buffered_bytes,
        |b| {
          whole_number(b, 1.0, MAX_SAFE_INTEGER).map(|b| usize::try_from(b).unwrap_or(usize::MAX))
        },
        "options.maxBufferedBytes must be a positive integer",
      )?,
      slow_policy: parse_option(
        self.slow_client_policy,
        |p| match p {
          "disconnect" => Some(SlowPolicy::Disconnect),
          "drop" => Some(SlowPolicy::Drop),
          _ => None,
        },
        "options.slowClientPolicy must be 'disconnect' or 'drop'",
      )?,
      history_size: parse_option(
        self.history_size,
        |n| whole_number(n, 0.0, 1.0e6).map(|n| n as usize),
        "options.historySize must be an integer from 0 to 1000000",
      )?,
      channel_history_size: parse_option(
        self.channel_history_size,
        |n| whole_number(n, 0.0, 1.0e5).map(|n| n as usize),
        "options.channelHistorySize must be an integer from 0 to 100000",
      )?,
      end_timeout: parse_option(
        self.end_timeout_ms,
        |n| whole_number(n, 1.0, MAX_TIMER_MS).map(Duration::from_millis),
        "options.endTimeoutMs must be an integer from 1 to 2147483647",
      )?,
      writer_threads: parse_option(
        self.writer_threads,
        |n| whole_number(n, 1.0, MAX_WRITER_THREADS as f64).map(|n| n as usize),
        "options.writerThreads must be an integer from 1 to 64",
      )?,
      max_clients: parse_option(
        self.max_clients,
        |n| (n >= 0.0 && n.fract() == 0.0).then(|| n.min(usize::MAX as f64) as usize),
        "options.maxClients must be a non-negative integer (0 means no limit)",
      )?,
    })
  }
}

/// `configure({ redis })`'s options, unchecked (defaults filled in by JS).
#[derive(Debug, Clone, Copy)]
pub struct BusOptions<'a> {
  pub url: &'a str,
  pub stream: &'a str,
  pub max_len: f64,
  pub replay_limit: f64,
  /// PEM certificates to trust for `rediss://` (a private CA).
  pub ca: Option<&'a str>,
}

impl BusOptions<'_> {
  /// The bus's configuration, checked; a replay sends at most
  /// `max_replay_bytes` (the hub's slow-client bound).
  pub fn config(&self, max_replay_bytes: usize) -> Result<BusConfig, CoreError> {
    bus::check_url(self.url, self.ca).map_err(|e| {
      CoreError::invalid(format_args!(
        "options.redis.url is not a usable Redis URL: {e}"
      ))
    })?;
    if self.stream.is_empty() || self.stream.len() > 1024 {
      return Err(CoreError::invalid(
        "options.redis.stream must be a non-empty string of at most 1024 bytes",
      ));
    }
    let whole = |n: f64, max: f64| whole_number(n, 1.0, max).map(|n| n as usize);
    let max_len = whole(self.max_len, 1.0e9).ok_or_else(|| {
      CoreError::invalid("options.redis.maxLen must be an integer from 1 to 1000000000")
    })?;
    let replay_limit = whole(self.replay_limit, 1.0e6).ok_or_else(|| {
      CoreError::invalid("options.redis.replayLimit must be an integer from 1 to 1000000")
    })?;
    Ok(BusConfig {
      url: self.url.to_string(),
      stream: self.stream.to_string(),
      max_len,
      replay_limit,
      max_replay_bytes,
      ca: self.ca.map(str::to_string),
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn retry_is_parsed_once_for_both_paths() {
    let bad = EventOptions {
      retry: Some(1.5),
      ..Default::default()
    };
    let message = "options.retry must be a non-negative integer (milliseconds)";
    assert_eq!(bad.fields(), Err(CoreError::invalid(message)));
    assert_eq!(bad.bus_fields(), Err(CoreError::invalid(message)));
    let good = EventOptions {
      retry: Some(3000.0),
      event: Some("tick"),
      ..Default::default()
    };
    assert_eq!(good.fields().unwrap().retry, Some(3000));
    assert_eq!(good.bus_fields().unwrap().retry, Some(3000));
  }

  #[test]
  fn a_bus_refuses_an_id_before_anything_else() {
    let options = EventOptions {
      id: Some("7"),
      retry: Some(-1.0),
      ..Default::default()
    };
    assert!(options.fields().is_err());
    let err = options.bus_fields().unwrap_err();
    assert!(err.to_string().starts_with("options.id cannot be set"));
    assert_eq!(err.code(), "ERR_INVALID_ARG_VALUE");
  }

  #[test]
  fn fields_name_the_option() {
    let options = EventOptions {
      event: Some("a\nb"),
      ..Default::default()
    };
    assert_eq!(
      options.fields().unwrap_err().to_string(),
      "options.event must not contain CR, LF or NUL"
    );
  }

  #[test]
  fn settings_are_all_checked_before_any_applies() {
    let options = HubOptions {
      history_size: Some(10.0),
      writer_threads: Some(65.0),
      ..Default::default()
    };
    assert_eq!(
      options.settings().unwrap_err().to_string(),
      "options.writerThreads must be an integer from 1 to 64"
    );
    let ok = HubOptions {
      transport: Some("stream"),
      end_timeout_ms: Some(5.0),
      ..Default::default()
    };
    let settings = ok.settings().unwrap();
    assert_eq!(settings.mode, Some(TransportMode::Stream));
    assert_eq!(settings.end_timeout, Some(Duration::from_millis(5)));
  }
}
