//! The sending calls, each a decision that comes back as a [`Dispatch`]:
//! `broadcast` (history ids and recording, or the bus), `sendToClient`,
//! the final broadcast of `broadcastAndClose`, comments, heartbeats and
//! retry hints; and the app's own writes on socket connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dispatch::{Count, Dispatch, Frame};
use super::options::{check_channel, event_frame, EventOptions};
use super::{AppWrite, CoreError, HubCore, Transport};
use crate::bus::entry::Route;
use crate::frame;
use crate::registry::ConnKey;

/// Most distinct delays a jittered retry hint sends (each one frame).
pub const RETRY_BUCKETS: u32 = 16;

/// The delays a jittered retry hint draws from: `ms` to `ms + jitter`
/// (saturating) in at most [`RETRY_BUCKETS`] even steps, both ends included.
pub fn retry_buckets(ms: u32, jitter: u32) -> Vec<u32> {
  let top = ms.saturating_add(jitter);
  let span = top - ms;
  let steps = span.min(RETRY_BUCKETS - 1);
  if steps == 0 {
    return vec![ms];
  }
  (0..=steps)
    .map(|i| ms + (u64::from(span) * u64::from(i) / u64::from(steps)) as u32)
    .collect()
}

/// Node's default `highWaterMark`, for an app write that names none.
const DEFAULT_HIGH_WATER_MARK: usize = 16 * 1024;

/// A `broadcast` or `publish`, as JS passes it (`data` already serialized).
#[derive(Debug, Clone, Copy)]
pub struct Broadcast<'a> {
  pub data: &'a str,
  pub options: EventOptions<'a>,
  /// Only the members of this channel (`publish`).
  pub channel: Option<&'a str>,
  /// A JS filter picks the recipients: the core names the candidates,
  /// the binding runs the filter, then [`super::Outgoing::Chosen`] sends.
  pub filtered: bool,
}

/// What a send needs next ([`HubCore::send`]).
#[derive(Debug)]
pub enum Planned {
  /// Ready: execute it.
  Ready(Dispatch),
  /// Several frames, each to its own connections (a jittered retry hint):
  /// execute each; the call's value is their sum.
  Several(Vec<Dispatch>),
  /// The frame for one response the binding writes itself, registered or
  /// not (`send(res)`, `comment(res)`).
  Write(Frame),
  /// The filter decides first: run it over `candidates` (in registration
  /// order), then send the frame to the chosen keys ([`super::Outgoing::Chosen`]).
  Filter {
    frame: Frame,
    candidates: Vec<ConnKey>,
  },
}

impl<H> HubCore<H> {
  /// Decides one broadcast. With a bus (and no filter) it is a stream
  /// entry: appended, or delivered here at once while Redis is away (see
  /// `HubCore::append`). Without, it is framed once; a broadcast to
  /// everyone with history on gets the next id (unless the app gives one)
  /// and is kept for replay; it goes to every connection, or the channel's
  /// members. Returns the targets the binding writes; its value is how
  /// many connections it reached (with a bus and Redis up: the local
  /// connections it targets now).
  pub(crate) fn broadcast(
    &mut self,
    request: Broadcast<'_>,
    now: Instant,
  ) -> Result<Planned, CoreError> {
    if !request.filtered && self.has_bus() {
      return self.broadcast_through_bus(request, now).map(Planned::Ready);
    }
    let filtered = request.filtered;
    let (frame, members) = self.frame_broadcast(request, now)?;
    if filtered {
      let candidates = members.unwrap_or_else(|| self.registry.keys());
      return Ok(Planned::Filter { frame, candidates });
    }
    Ok(Planned::Ready(self.fan_out(
      members.as_deref(),
      frame,
      Count::Written,
      now,
    )))
  }

  /// A broadcast without a bus, up to its recipients: checked, framed,
  /// recorded (to everyone, with history on), and the channel's members
  /// when it names one.
  fn frame_broadcast(
    &mut self,
    request: Broadcast<'_>,
    now: Instant,
  ) -> Result<(Frame, Option<Vec<ConnKey>>), CoreError> {
    let everyone = request.channel.is_none() && !request.filtered;
    // A publish to one channel is kept in that channel's history (when on);
    // a filtered broadcast never is: its recipients were picked by JS, and
    // a replay could not pick them again.
    let recording = match request.channel {
      _ if request.filtered => false,
      None => self.history.capacity() > 0,
      Some(_) => self.history.channel_capacity() > 0,
    };
    let mut options = request.options;
    // The id is taken before the fields are checked, as it always was.
    let next_id = (recording && options.id.is_none()).then(|| self.history.next_id());
    if next_id.is_some() {
      options.id = next_id.as_deref();
    }
    let fields = options.fields()?;
    if let Some(channel) = request.channel {
      check_channel(channel, "options.channel")?;
    }
    let frame = Frame::new(event_frame(&fields, request.data));
    if recording {
      // The history keeps the chunk the socket writer sends, so a replay
      // shares it instead of copying.
      self.history.record_in(
        request.channel,
        fields.id.unwrap_or_default(),
        frame.chunk(),
      );
    }
    if everyone {
      self.last_broadcast = now;
    }
    let members = request.channel.map(|c| self.registry.members(c).to_vec());
    Ok((frame, members))
  }

  /// A filtered broadcast, to the keys its filter chose.
  pub(crate) fn broadcast_to(
    &mut self,
    frame: Frame,
    chosen: &[ConnKey],
    now: Instant,
  ) -> Dispatch {
    self.fan_out(Some(chosen), frame, Count::Written, now)
  }

  fn broadcast_through_bus(
    &mut self,
    request: Broadcast<'_>,
    now: Instant,
  ) -> Result<Dispatch, CoreError> {
    if let Some(channel) = request.channel {
      check_channel(channel, "options.channel")?;
    }
    let route = match request.channel {
      Some(channel) => Route::Channel(channel.into()),
      None => Route::All,
    };
    let entry = self.bus_entry(route, request.data, &request.options)?;
    let targeted = self.local_targets(&entry.route);
    if request.channel.is_none() {
      self.last_broadcast = now;
    }
    self.append(entry, targeted, now)
  }

  /// `sendToClient`: one frame to every connection under `id`. Its value
  /// is non-zero (true) when a live connection was there, even if its
  /// `write` threw (it is then ended and removed); with a bus, when the
  /// event was appended or delivered here.
  pub(crate) fn send_to(
    &mut self,
    id: &str,
    data: &str,
    options: &EventOptions<'_>,
    now: Instant,
  ) -> Result<Dispatch, CoreError> {
    if self.has_bus() {
      let entry = self.bus_entry(Route::Client(id.into()), data, options)?;
      return self.append(entry, 1, now);
    }
    let frame = Frame::new(event_frame(&options.fields()?, data));
    let keys = self.registry.keys_for_id(id).to_vec();
    if keys.is_empty() {
      return Ok(self.dispatch_nothing(0));
    }
    Ok(self.fan_out(Some(&keys), frame, Count::Attempted, now))
  }

  /// One event to one response, registered as `key` (or not, when the
  /// binding writes it itself): the frame, checked.
  pub(crate) fn event(&self, data: &str, options: &EventOptions<'_>) -> Result<Frame, CoreError> {
    Ok(Frame::new(event_frame(&options.fields()?, data)))
  }

  /// `frame` to the connection `key`; its value is 1 when written.
  pub(crate) fn send_one(&mut self, key: ConnKey, frame: Frame, now: Instant) -> Dispatch {
    self.fan_out(Some(&[key]), frame, Count::Written, now)
  }

  /// The broadcast of `broadcastAndClose`: to every connection here. With
  /// a bus it stays local and has no id (what a shutting-down instance
  /// says to its own clients); without, it is an ordinary broadcast.
  pub(crate) fn broadcast_final(
    &mut self,
    data: &str,
    options: &EventOptions<'_>,
    now: Instant,
  ) -> Result<Dispatch, CoreError> {
    if !self.has_bus() {
      let request = Broadcast {
        data,
        options: *options,
        channel: None,
        filtered: false,
      };
      let (frame, _) = self.frame_broadcast(request, now)?;
      return Ok(self.fan_out(None, frame, Count::Written, now));
    }
    let entry = self.bus_entry(Route::All, data, options)?;
    let frame = Frame::new(entry.frame(None));
    Ok(self.fan_out(None, frame, Count::Written, now))
  }

  /// A comment to the connections under `id`, or to every connection.
  pub(crate) fn comment(&mut self, id: Option<&str>, text: &str, now: Instant) -> Dispatch {
    let keys = match id {
      Some(id) => self.registry.keys_for_id(id).to_vec(),
      None => self.registry.keys(),
    };
    self.fan_out(Some(&keys), Frame::comment(text), Count::Written, now)
  }

  /// A heartbeat comment to every connection nothing was sent to for
  /// `idle` (see [`HubCore::idle`]).
  pub(crate) fn heartbeat(&mut self, idle: Duration, now: Instant) -> Dispatch {
    let keys = self.idle(now, idle);
    if keys.is_empty() {
      return self.dispatch_nothing(0);
    }
    let frame = Frame::new(b": heartbeat\n\n".to_vec());
    self.fan_out(Some(&keys), frame, Count::Written, now)
  }

  /// `retry: <ms>` alone to every connection (before a drain): it sets the
  /// browser's reconnection delay and dispatches no event. With `jitter`,
  /// each connection's delay is drawn from `ms..=ms + jitter`, so the
  /// browsers of a drained instance come back spread over that window
  /// instead of in the same second: the window is cut into at most
  /// `RETRY_BUCKETS` steps, one shared frame each.
  pub(crate) fn retry_hint(&mut self, ms: u32, jitter: u32, now: Instant) -> Vec<Dispatch> {
    let keys = self.registry.keys();
    if jitter == 0 {
      let frame = Frame::new(format!("retry: {ms}\n\n").into_bytes());
      return vec![self.fan_out(Some(&keys), frame, Count::Written, now)];
    }
    let buckets = retry_buckets(ms, jitter);
    let mut chosen: Vec<Vec<ConnKey>> = vec![Vec::new(); buckets.len()];
    for key in keys {
      let draw = uuid::Uuid::new_v4().as_u128();
      chosen[(draw % buckets.len() as u128) as usize].push(key);
    }
    buckets
      .into_iter()
      .zip(chosen)
      .filter(|(_, keys)| !keys.is_empty())
      .map(|(delay, keys)| {
        let frame = Frame::new(format!("retry: {delay}\n\n").into_bytes());
        self.fan_out(Some(&keys), frame, Count::Written, now)
      })
      .collect()
  }

  /// The app's own `res.write` on a socket connection: `bytes` (none when
  /// empty: a zero-size chunk would end the body) go as one HTTP chunk
  /// after everything queued for it, and the answer follows Node's
  /// contract against `high_water_mark` (Node's default when it is not a
  /// positive number).
  pub fn app_write(&self, key: ConnKey, bytes: &[u8], high_water_mark: f64) -> AppWrite {
    let mark = if high_water_mark.is_finite() && high_water_mark > 0.0 {
      high_water_mark as usize
    } else {
      DEFAULT_HIGH_WATER_MARK
    };
    let Some(Transport::Socket { gauge, shard }) =
      self.registry.get(key).map(|e| &e.handle.transport)
    else {
      return AppWrite::Gone;
    };
    let Some(writer) = &self.writer else {
      return AppWrite::Gone;
    };
    if !bytes.is_empty() {
      let chunk: Arc<[u8]> = frame::http_chunk(bytes).into();
      gauge.submitted.fetch_add(chunk.len(), Ordering::SeqCst);
      writer.write(*shard, key, chunk);
    }
    if gauge.backlog() < mark {
      return AppWrite::Accepted;
    }
    // SeqCst with the writer's side (see `ConnGauge`): either it sees the
    // flag, or this thread sees the backlog it emptied.
    gauge.want_drain.store(true, Ordering::SeqCst);
    if gauge.backlog() == 0 && gauge.want_drain.swap(false, Ordering::SeqCst) {
      return AppWrite::Accepted;
    }
    AppWrite::Full
  }
}
