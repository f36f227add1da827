//! Replay history: the last broadcast events, each with its id, kept so a
//! client that reconnects with `Last-Event-ID` gets what it missed (WHATWG
//! HTML 9.2.4: the `Last-Event-ID` request header); and, with channel
//! history on, the last publishes of each channel, kept the same way.
//!
//! Every recorded event, whichever ring keeps it, takes the next place in
//! one sequence, so a client's last id tells where it stands in all of
//! them, and a replay merges the broadcasts and its channels' messages in
//! the order they were sent.
//!
//! Pure Rust. Memory is bounded: each ring by its capacity, the channel
//! rings by [`MAX_CHANNEL_RINGS`], and each frame is held once, shared with
//! the send.

mod ring;
mod shared;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::Arc;

pub use ring::Recorded;
use ring::Ring;
use shared::Shared;
pub use shared::{Outcome as SharedOutcome, SharedReplay, BYTES_FACTOR, MAX_SHARED};

/// Most channels remembered as let go of (with the newest place each may
/// have lost), past which the oldest are folded into one watermark.
const MAX_DROPPED: usize = 10_000;

/// Most channels whose history is kept at once. Past it, the ring of the
/// channel that was published to longest ago is let go of (its members,
/// reconnecting from before its newest event, get `reset`).
pub const MAX_CHANNEL_RINGS: usize = 10_000;

/// What a reconnecting client gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a> {
  /// The events after the one it last saw, oldest first (possibly none).
  Missed(Vec<&'a Recorded>),
  /// Its id is not in the buffer any more (or never was), or what it missed
  /// is more than one connection may hold: it missed an unknown number of
  /// events, or too many to send, and should resynchronize.
  Reset,
}

#[derive(Debug)]
pub struct History {
  /// Broadcasts to everyone.
  global: Ring,
  /// Each channel's publishes, with channel history on.
  channels: HashMap<Arc<str>, Ring>,
  channel_capacity: usize,
  /// Channels whose ring was let go of as a whole, with the newest place
  /// each held: a member from before it may have missed that channel's
  /// events (bounded by [`MAX_DROPPED`]).
  dropped: HashMap<Arc<str>, u64>,
  /// The newest place of the dropped channels forgotten past
  /// [`MAX_DROPPED`]: for every channel not otherwise known, a client from
  /// before it may have missed something.
  dropped_through: u64,
  /// Held events' ids to their place (the newest, when an app reused one).
  index: HashMap<Arc<str>, u64>,
  /// The last counter this life generated: ids are `<epoch>:<counter>`,
  /// strictly increasing and, as before, one more per generated id.
  last_generated: u64,
  /// Events the app named itself since the last generated id: a place is
  /// `counter << APP_BITS | this`, so every recorded event has its own
  /// place, in order, and a generated id `<epoch>:<n>` names place
  /// `n << APP_BITS` whether or not a ring still holds it.
  app_since: u64,
  /// The place [`History::next_id`] handed out for the event about to be
  /// recorded: a generated id is `<epoch>:<its place>`, so any id this
  /// life generated tells its place even once no ring holds it.
  reserved: Option<u64>,
  /// Random per history (per hub life): an id from another life (another
  /// process, before a restart) is never one of this life's, so its client
  /// gets `reset` rather than this life's events after the same counter.
  epoch: String,
  /// One more on every change of what a replay could read (an event
  /// recorded, an id handed out, a capacity changed and what it trimmed):
  /// a replay computed at one version is the replay of every client with
  /// the same place and channels until the next.
  version: u64,
  /// The replays read at this version, shared by every client they fit.
  shared: Shared,
}

/// Bits of a place for the events the app names itself between two
/// generated ids (the rest is the generated counter).
const APP_BITS: u32 = 20;

/// Characters of an epoch: 8 of base 36 (about 41 random bits).
const EPOCH_LEN: usize = 8;

/// A new random epoch: lowercase letters and digits, never all digits, so
/// an id can never read as a Redis stream id (`<ms>-<seq>`) or a number.
fn new_epoch() -> String {
  const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
  let mut bits = uuid::Uuid::new_v4().as_u128();
  let mut epoch = String::with_capacity(EPOCH_LEN);
  // The first is a letter.
  epoch.push(DIGITS[10 + (bits % 26) as usize] as char);
  bits /= 26;
  for _ in 1..EPOCH_LEN {
    epoch.push(DIGITS[(bits % 36) as usize] as char);
    bits /= 36;
  }
  epoch
}

impl History {
  pub fn new(capacity: usize) -> Self {
    Self {
      global: Ring::new(capacity),
      channels: HashMap::new(),
      channel_capacity: 0,
      dropped: HashMap::new(),
      dropped_through: 0,
      index: HashMap::new(),
      last_generated: 0,
      app_since: 0,
      reserved: None,
      epoch: new_epoch(),
      version: 0,
      shared: Shared::default(),
    }
  }

  /// Changes with everything a replay reads (see the field): equal
  /// versions, equal replays for the same place and channels.
  pub fn version(&self) -> u64 {
    self.version
  }

  /// What a replay reads changed: the shared replays are let go of.
  fn changed(&mut self) {
    self.version += 1;
    self.shared.clear();
  }

  /// [`History::since_in`], shared: the replay kept for a client at the
  /// same place in the same channels (in any order), read from the rings
  /// only for the first one since the history last changed; true when it
  /// was kept already. A reconnect storm reads the rings once per distinct
  /// place and channel set, and its stream bytes are made once.
  pub fn since_shared(
    &mut self,
    last_event_id: &str,
    channels: &[Arc<str>],
    max_bytes: usize,
  ) -> (&SharedReplay, bool) {
    let mut sorted = channels.to_vec();
    sorted.sort_unstable();
    let place = self.place_of(last_event_id, &sorted);
    let key = shared::Key {
      place,
      channels: sorted,
      max_bytes,
    };
    if let Some(at) = self.shared.find(&key) {
      return (self.shared.get(at), true);
    }
    let outcome = match self.since_place(place, &key.channels, max_bytes) {
      Replay::Missed(events) if events.is_empty() => SharedOutcome::Nothing,
      Replay::Missed(events) => SharedOutcome::Missed {
        chunks: events.iter().map(|e| e.chunk().clone()).collect(),
        bytes: OnceCell::new(),
      },
      Replay::Reset => SharedOutcome::Reset(crate::frame::reset_frame(self.newest_id()).into()),
    };
    let at = self.shared.insert(key, outcome);
    (self.shared.get(at), false)
  }

  /// Whether the shared replay `id` is still kept (the history has not
  /// changed since it was read, and it was not pushed out).
  pub fn shared_kept(&self, id: u64) -> bool {
    self.shared.contains(id)
  }

  /// Lets go of the shared replays (the hub closes: nobody is replayed).
  pub fn forget_shared(&mut self) {
    self.shared.clear();
  }

  /// Replays kept for sharing now.
  pub fn shared_len(&self) -> usize {
    self.shared.len()
  }

  /// This life's epoch, the part before `:` of every id it generates.
  pub fn epoch(&self) -> &str {
    &self.epoch
  }

  /// Broadcasts to everyone kept at most.
  pub fn capacity(&self) -> usize {
    self.global.capacity()
  }

  /// Publishes kept at most per channel (0: channel history off).
  pub fn channel_capacity(&self) -> usize {
    self.channel_capacity
  }

  /// Broadcasts to everyone held now.
  pub fn len(&self) -> usize {
    self.global.len()
  }

  pub fn is_empty(&self) -> bool {
    self.global.len() == 0
  }

  /// Whether anything is recorded: broadcasts, or channel publishes.
  pub fn recording(&self) -> bool {
    self.capacity() > 0 || self.channel_capacity > 0
  }

  /// Changes the capacity, dropping the oldest events that no longer fit.
  pub fn set_capacity(&mut self, capacity: usize) {
    self.changed();
    let dropped = self.global.set_capacity(capacity);
    self.unindex(dropped);
  }

  /// Changes the channels' capacity (0 drops every channel's history).
  pub fn set_channel_capacity(&mut self, capacity: usize) {
    self.changed();
    self.channel_capacity = capacity;
    let mut dropped = Vec::new();
    for ring in self.channels.values_mut() {
      dropped.extend(ring.set_capacity(capacity));
    }
    if capacity == 0 {
      for (name, ring) in std::mem::take(&mut self.channels) {
        self.forget_ring(name, ring);
      }
    }
    self.unindex(dropped);
  }

  /// Id of the newest event held, in any ring.
  pub fn newest_id(&self) -> Option<&str> {
    let global = self.global.newest();
    let channel = self
      .channels
      .values()
      .filter_map(Ring::newest)
      .max_by_key(|e| e.seq);
    [global, channel]
      .into_iter()
      .flatten()
      .max_by_key(|e| e.seq)
      .map(|e| &*e.id)
  }

  /// Where the history stands now, as an id a client can resume from: the
  /// newest event's, or, before any, this life's start (`<epoch>:0`), from
  /// which a client gets everything recorded after it. (A ring that evicted
  /// holds at least its newest event.)
  pub fn position(&self) -> String {
    self
      .newest_id()
      .map_or_else(|| self.start_id(), str::to_string)
  }

  /// `<epoch>:0`: before this life's first event.
  fn start_id(&self) -> String {
    format!("{}:0", self.epoch)
  }

  /// The id for the next event when the app gives none: `<epoch>:<n>`,
  /// whose place (`n << APP_BITS`) it takes when recorded; the counter
  /// strictly increases, one per generated id.
  pub fn next_id(&mut self) -> String {
    // A generated id not yet handed out names no place: from now on it does.
    self.changed();
    self.last_generated += 1;
    self.app_since = 0;
    self.reserved = Some(self.last_generated << APP_BITS);
    format!("{}:{}", self.epoch, self.last_generated)
  }

  /// The place a generated id of this life names (`<epoch>:<n>`, `n` taken).
  fn generated_place(&self, id: &str) -> Option<u64> {
    let n = id.strip_prefix(self.epoch.as_str())?.strip_prefix(':')?;
    // Digits only, as this life writes them (no sign, no leading zeros).
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
      return None;
    }
    let n: u64 = n.parse().ok().filter(|&n| n <= self.last_generated)?;
    Some(n << APP_BITS)
  }

  /// Keeps `chunk`, an SSE frame in HTTP chunked coding as
  /// [`crate::frame::http_chunk`] makes it, under `id`: a broadcast to everyone.
  pub fn record(&mut self, id: &str, chunk: Arc<[u8]>) {
    self.record_in(None, id, chunk);
  }

  /// [`History::record`] for `channel`'s ring (`None`: everyone's).
  pub fn record_in(&mut self, channel: Option<&str>, id: &str, chunk: Arc<[u8]>) {
    let capacity = match channel {
      None => self.capacity(),
      Some(_) => self.channel_capacity,
    };
    if capacity == 0 {
      return;
    }
    self.changed();
    // The place next_id handed out for this very id, else the next one.
    let seq = match self.reserved.take() {
      Some(seq) if self.generated_place(id) == Some(seq) => seq,
      _ => {
        self.app_since += 1;
        if self.app_since >= 1 << APP_BITS {
          // A million app ids in a row: the next place takes a counter
          // (a generated id then skips one).
          self.last_generated += 1;
          self.app_since = 0;
        }
        (self.last_generated << APP_BITS) | self.app_since
      }
    };
    let id: Arc<str> = Arc::from(id);
    let event = Recorded::new(id.clone(), seq, chunk);
    let out = match channel {
      None => self.global.push(event),
      Some(channel) => self.channel_ring(channel).push(event),
    };
    self.index.insert(id, seq);
    self.unindex(out);
  }

  /// `channel`'s ring, made (and the least recent one let go of, past
  /// [`MAX_CHANNEL_RINGS`]) when it has none.
  fn channel_ring(&mut self, channel: &str) -> &mut Ring {
    if !self.channels.contains_key(channel) && self.channels.len() >= MAX_CHANNEL_RINGS {
      let stalest = self
        .channels
        .iter()
        .min_by_key(|(_, ring)| ring.newest_seq())
        .map(|(name, _)| name.clone());
      if let Some(name) = stalest {
        if let Some(ring) = self.channels.remove(&name) {
          self.forget_ring(name, ring);
        }
      }
    }
    if !self.channels.contains_key(channel) {
      // What an earlier ring of this channel may have lost.
      let floor = self
        .dropped
        .remove(channel)
        .unwrap_or(0)
        .max(self.dropped_through);
      let ring = Ring::for_channel(self.channel_capacity, floor);
      self.channels.insert(Arc::from(channel), ring);
    }
    self
      .channels
      .get_mut(channel)
      .expect("the ring was just made")
  }

  /// Lets go of `name`'s ring, remembering the newest place it held (or
  /// folding the oldest remembered one into the watermark, past
  /// [`MAX_DROPPED`]).
  fn forget_ring(&mut self, name: Arc<str>, ring: Ring) {
    let through = ring.newest_seq().max(ring.floor());
    if self.dropped.len() >= MAX_DROPPED && !self.dropped.contains_key(&name) {
      let oldest = self
        .dropped
        .iter()
        .min_by_key(|(_, &seq)| seq)
        .map(|(n, &seq)| (n.clone(), seq));
      if let Some((oldest, seq)) = oldest {
        self.dropped.remove(&oldest);
        self.dropped_through = self.dropped_through.max(seq);
      }
    }
    self.dropped.insert(name, through);
    let held: Vec<Recorded> = ring.into_events();
    self.unindex(held);
  }

  /// Forgets the ids of events no ring holds any more.
  fn unindex(&mut self, gone: impl IntoIterator<Item = Recorded>) {
    for event in gone {
      if self.index.get(&event.id) == Some(&event.seq) {
        self.index.remove(&event.id);
      }
    }
  }

  /// The events after `last_event_id`, as long as their frames add up to at
  /// most `max_bytes` (the slow-client bound: a replay may not queue more
  /// for one connection than live events may). The newest match wins when
  /// an app reused an id. The search walks back from the newest event and
  /// stops past `max_bytes`, so a client asking from far back costs no more
  /// than one that fits.
  pub fn since(&self, last_event_id: &str, max_bytes: usize) -> Replay<'_> {
    self.since_in(last_event_id, &[], max_bytes)
  }

  /// [`History::since`] for a member of `channels`: the broadcasts and
  /// those channels' publishes after `last_event_id`, merged in the order
  /// they were sent; `Reset` when any of them lost an event it missed.
  pub fn since_in(
    &self,
    last_event_id: &str,
    channels: &[Arc<str>],
    max_bytes: usize,
  ) -> Replay<'_> {
    self.since_place(self.place(last_event_id, channels), channels, max_bytes)
  }

  /// Where the client that last saw `last_event_id` (a member of
  /// `channels`) stands in the sequence; `None` when unknown (another
  /// life, or long gone), which replays as `Reset`. Cheap (a lookup): a
  /// replay is [`History::since_place`] of it, so clients that stand at
  /// the same place can share one.
  pub fn place(&self, last_event_id: &str, channels: &[Arc<str>]) -> Option<u64> {
    self.place_of(last_event_id, channels)
  }

  /// [`History::since_in`] from a place [`History::place`] gave: the same
  /// for every client at `place` in `channels` (in any order) while
  /// [`History::version`] stays the same.
  pub fn since_place(
    &self,
    place: Option<u64>,
    channels: &[Arc<str>],
    max_bytes: usize,
  ) -> Replay<'_> {
    let Some(seq) = place else {
      return Replay::Reset;
    };
    let mut rings = vec![&self.global];
    for channel in channels {
      match self.channels.get(channel) {
        Some(ring) => rings.push(ring),
        // A ring let go of as a whole after this client's place.
        None
          if self
            .dropped
            .get(channel)
            .is_some_and(|&through| through > seq) =>
        {
          return Replay::Reset
        }
        None if self.dropped_through > seq => return Replay::Reset,
        None => {}
      }
    }
    let mut budget = max_bytes;
    let mut missed = Vec::new();
    for ring in rings {
      if ring.lost_after(seq) || !ring.after(seq, &mut budget, &mut missed) {
        return Replay::Reset;
      }
    }
    missed.sort_by_key(|e| e.seq);
    Replay::Missed(missed)
  }

  /// Where the client that last saw `id` stands in the sequence: a held
  /// event's place, the place of the newest event a ring it reads let go
  /// of, or this life's start; `None` when unknown (another life, or long
  /// gone).
  fn place_of(&self, id: &str, channels: &[Arc<str>]) -> Option<u64> {
    if let Some(&seq) = self.index.get(id) {
      return Some(seq);
    }
    // A generated id of this life names its place, held or not (the rings'
    // own checks then say whether what came after it is still kept).
    if let Some(seq) = self.generated_place(id) {
      return Some(seq);
    }
    let rings =
      std::iter::once(&self.global).chain(channels.iter().filter_map(|c| self.channels.get(c)));
    for ring in rings {
      if let Some(evicted) = ring.evicted().filter(|e| &*e.id == id) {
        return Some(evicted.seq);
      }
    }
    // This life's start, while the broadcasts' ring let go of nothing (a
    // channel ring that did is checked per member by the replay).
    (self.global.evicted().is_none() && id == self.start_id()).then_some(0)
  }
}

#[cfg(test)]
mod tests;
