//! The connection registry: which connections exist, under which client id,
//! since when. Pure Rust and generic over the transport handle `H`, so the
//! bookkeeping is unit-tested without Node.
//!
//! Connections are kept in insertion order in one dense vector, because a
//! broadcast walks all of them and a hash map's scattered iteration measured
//! 15-27% slower than the JS helper's `Map`. Removal leaves a tombstone;
//! tombstones are compacted away once they outnumber the live entries, so
//! removal stays O(1) amortized and iteration stays dense.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stable handle to one registered connection. A key is never handed out
/// twice: a slot's generation grows with each reuse, and a slot whose
/// generation has used up its 21 bits is retired instead of wrapping. So a
/// stale key (a late `close` event, a response an app kept) never resolves
/// to another connection, however many times slots are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
  slot: u32,
  generation: u32,
}

/// The keys of slots `slots` (first generation), for tests.
#[cfg(test)]
pub(crate) fn keys(slots: &[u32]) -> Vec<ConnKey> {
  slots.iter().map(|&s| ConnKey::test(s)).collect()
}

/// Largest generation a slot may carry: the key must fit in the 53 bits a JS
/// number holds exactly (32 bits of slot, 21 of generation).
pub const MAX_GENERATION: u32 = 0x1F_FFFF;

impl ConnKey {
  /// The key of slot `slot`'s first generation, for tests that name
  /// connections by number.
  #[cfg(test)]
  pub(crate) fn test(slot: u32) -> ConnKey {
    ConnKey {
      slot,
      generation: 0,
    }
  }

  /// Packs the key into an integer that survives a trip through a JS number
  /// (at most 2^53 - 1): 32 bits of slot, 21 of generation.
  pub fn to_f64(self) -> f64 {
    debug_assert!(self.generation <= MAX_GENERATION);
    ((u64::from(self.generation) << 32) | u64::from(self.slot)) as f64
  }

  pub fn from_f64(value: f64) -> Option<Self> {
    const MAX_KEY: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_KEY) {
      return None;
    }
    let raw = value as u64;
    Some(ConnKey {
      slot: raw as u32,
      generation: (raw >> 32) as u32,
    })
  }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
  Empty,
  TooLong,
  ControlCharacter,
}

impl fmt::Display for NameError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(match self {
      NameError::Empty => "must be a non-empty string",
      NameError::TooLong => "must be at most 256 characters",
      NameError::ControlCharacter => "must not contain control characters",
    })
  }
}

/// An app-chosen name: non-empty, at most `max` characters, printable.
fn validate_label(name: &str, max: usize) -> Result<(), NameError> {
  if name.is_empty() {
    return Err(NameError::Empty);
  }
  if name.chars().count() > max {
    return Err(NameError::TooLong);
  }
  if name.chars().any(char::is_control) {
    return Err(NameError::ControlCharacter);
  }
  Ok(())
}

/// A fresh server-side client id in the original helper's shape,
/// `anon-<ms since the epoch>-<hex>`, whose hex part is the 122 random bits
/// of a UUID v4 from the OS random source (the original's 24 bits could
/// repeat among live clients). Client ids are otherwise any string the app
/// chooses: the original accepts every one, so the registry does too (they
/// are map keys and never reach the wire).
pub fn generate_client_id(now: std::time::SystemTime) -> String {
  let ms = now
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.as_millis());
  format!("anon-{ms}-{}", uuid::Uuid::new_v4().simple())
}

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 256;

/// One registered connection.
#[derive(Debug)]
pub struct Entry<H> {
  pub key: ConnKey,
  pub id: Arc<str>,
  pub connected_at: Instant,
  /// Last time something was sent to this connection alone (broadcasts are
  /// tracked hub-wide); heartbeats go to connections idle since.
  pub last_sent: Instant,
  /// Channels it joined, in joining order.
  pub channels: Vec<Arc<str>>,
  pub handle: H,
}

#[derive(Debug, Default)]
struct Slot {
  generation: u32,
  /// Position in `entries` while the slot is live.
  position: Option<usize>,
}

#[derive(Debug)]
pub struct Registry<H> {
  slots: Vec<Slot>,
  free_slots: Vec<u32>,
  entries: Vec<Option<Entry<H>>>,
  live: usize,
  by_id: HashMap<Arc<str>, Keys>,
  channels: HashMap<Arc<str>, Keys>,
}

/// The connections under one id or in one channel, oldest first. Nearly
/// every id has one connection: that one is kept inline, so a connection
/// costs no allocation of its own here (a `Vec` would cost one per id).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
  One(ConnKey),
  Many(Vec<ConnKey>),
}

impl Keys {
  fn as_slice(&self) -> &[ConnKey] {
    match self {
      Keys::One(key) => std::slice::from_ref(key),
      Keys::Many(keys) => keys,
    }
  }

  fn push(&mut self, key: ConnKey) {
    match self {
      Keys::One(first) => *self = Keys::Many(vec![*first, key]),
      Keys::Many(keys) => keys.push(key),
    }
  }

  /// Removes `key`; true when none is left.
  fn remove(&mut self, key: ConnKey) -> bool {
    match self {
      Keys::One(only) => *only == key,
      Keys::Many(keys) => {
        keys.retain(|k| *k != key);
        match keys.as_slice() {
          [] => true,
          [only] => {
            *self = Keys::One(*only);
            false
          }
          _ => false,
        }
      }
    }
  }
}

/// Adds `key` under `name`.
fn link(map: &mut HashMap<Arc<str>, Keys>, name: Arc<str>, key: ConnKey) {
  match map.entry(name) {
    std::collections::hash_map::Entry::Occupied(mut keys) => keys.get_mut().push(key),
    std::collections::hash_map::Entry::Vacant(slot) => {
      slot.insert(Keys::One(key));
    }
  }
}

impl<H> Default for Registry<H> {
  fn default() -> Self {
    Self {
      slots: Vec::new(),
      free_slots: Vec::new(),
      entries: Vec::new(),
      live: 0,
      by_id: HashMap::new(),
      channels: HashMap::new(),
    }
  }
}

impl<H> Registry<H> {
  pub fn new() -> Self {
    Self::default()
  }

  /// Registered connections.
  pub fn len(&self) -> usize {
    self.live
  }

  pub fn is_empty(&self) -> bool {
    self.live == 0
  }

  /// Adds a connection under `id` (several connections may share one id).
  pub fn insert(&mut self, id: &str, handle: H, now: Instant) -> ConnKey {
    let slot = match self.free_slots.pop() {
      Some(slot) => slot,
      None => {
        self.slots.push(Slot::default());
        (self.slots.len() - 1) as u32
      }
    };
    let key = ConnKey {
      slot,
      generation: self.slots[slot as usize].generation,
    };
    let id = self.intern(id);
    link(&mut self.by_id, id.clone(), key);
    self.slots[slot as usize].position = Some(self.entries.len());
    self.entries.push(Some(Entry {
      key,
      id,
      connected_at: now,
      last_sent: now,
      channels: Vec::new(),
      handle,
    }));
    self.live += 1;
    key
  }

  pub fn contains(&self, key: ConnKey) -> bool {
    self.position(key).is_some()
  }

  pub fn get(&self, key: ConnKey) -> Option<&Entry<H>> {
    let position = self.position(key)?;
    self.entries[position].as_ref()
  }

  pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Entry<H>> {
    let position = self.position(key)?;
    self.entries[position].as_mut()
  }

  /// Moves a connection to another client id, keeping its place and age.
  /// Returns false for an unknown key.
  pub fn rename(&mut self, key: ConnKey, new_id: &str) -> bool {
    let Some(position) = self.position(key) else {
      return false;
    };
    let old_id = self.entries[position].as_ref().map(|e| e.id.clone());
    if old_id.as_deref() == Some(new_id) {
      return true;
    }
    if let Some(old_id) = old_id {
      self.unlink_id(&old_id, key);
    }
    let id = self.intern(new_id);
    link(&mut self.by_id, id.clone(), key);
    if let Some(entry) = self.entries[position].as_mut() {
      entry.id = id;
    }
    true
  }

  pub fn remove(&mut self, key: ConnKey) -> Option<Entry<H>> {
    let position = self.position(key)?;
    let entry = self.entries[position].take()?;
    let slot = &mut self.slots[key.slot as usize];
    slot.position = None;
    // A slot whose generations are used up is never reused: its last key
    // must stay dead. It costs one `Slot` per 2^21 registrations.
    if slot.generation < MAX_GENERATION {
      slot.generation += 1;
      self.free_slots.push(key.slot);
    }
    self.live -= 1;
    self.unlink_id(&entry.id, key);
    for channel in &entry.channels {
      unlink(&mut self.channels, channel, key);
    }
    self.maybe_compact();
    Some(entry)
  }

  /// Adds a connection to a channel; false if unknown or already a member.
  pub fn join(&mut self, key: ConnKey, channel: &str) -> bool {
    let Some(position) = self.position(key) else {
      return false;
    };
    let name = match self.channels.get_key_value(channel) {
      Some((existing, _)) => existing.clone(),
      None => Arc::from(channel),
    };
    let Some(entry) = self.entries[position].as_mut() else {
      return false;
    };
    if entry.channels.iter().any(|c| **c == *channel) {
      return false;
    }
    entry.channels.push(name.clone());
    link(&mut self.channels, name, key);
    true
  }

  /// Takes a connection out of a channel; false if it was not a member.
  pub fn leave(&mut self, key: ConnKey, channel: &str) -> bool {
    let Some(entry) = self.get_mut(key) else {
      return false;
    };
    let before = entry.channels.len();
    entry.channels.retain(|c| **c != *channel);
    if entry.channels.len() == before {
      return false;
    }
    unlink(&mut self.channels, channel, key);
    true
  }

  /// Members of `channel`, in joining order.
  pub fn members(&self, channel: &str) -> &[ConnKey] {
    self
      .channels
      .get(channel)
      .map(Keys::as_slice)
      .unwrap_or(&[])
  }

  /// Channels with at least one member.
  pub fn channel_count(&self) -> usize {
    self.channels.len()
  }

  /// Connections registered under `id`, oldest first.
  pub fn keys_for_id(&self, id: &str) -> &[ConnKey] {
    self.by_id.get(id).map(Keys::as_slice).unwrap_or(&[])
  }

  /// Live connections in registration order.
  pub fn iter(&self) -> impl Iterator<Item = &Entry<H>> {
    self.entries.iter().flatten()
  }

  pub fn keys(&self) -> Vec<ConnKey> {
    self.iter().map(|e| e.key).collect()
  }

  /// Connections connected for longer than `max_age` at `now`.
  pub fn older_than(&self, now: Instant, max_age: Duration) -> Vec<ConnKey> {
    self
      .iter()
      .filter(|e| now.saturating_duration_since(e.connected_at) > max_age)
      .map(|e| e.key)
      .collect()
  }

  /// Removes every entry and returns them in registration order.
  pub fn drain(&mut self) -> Vec<Entry<H>> {
    let keys = self.keys();
    keys.into_iter().filter_map(|k| self.remove(k)).collect()
  }

  fn position(&self, key: ConnKey) -> Option<usize> {
    let slot = self.slots.get(key.slot as usize)?;
    if slot.generation != key.generation {
      return None;
    }
    slot.position
  }

  /// Reuses the map's `Arc<str>` for an id already present, so several
  /// connections of one session share one allocation.
  fn intern(&self, id: &str) -> Arc<str> {
    match self.by_id.get_key_value(id) {
      Some((existing, _)) => existing.clone(),
      None => Arc::from(id),
    }
  }

  fn unlink_id(&mut self, id: &str, key: ConnKey) {
    unlink(&mut self.by_id, id, key);
  }

  fn maybe_compact(&mut self) {
    if self.live == 0 {
      self.entries.clear();
      return;
    }
    let tombstones = self.entries.len() - self.live;
    if tombstones < 32 || tombstones < self.live {
      return;
    }
    self.entries.retain(Option::is_some);
    for (position, entry) in self.entries.iter().enumerate() {
      if let Some(entry) = entry {
        self.slots[entry.key.slot as usize].position = Some(position);
      }
    }
  }
}

/// Removes `key` from the list under `name`, dropping the list when empty,
/// so neither ids nor channels outlive their last connection.
fn unlink(map: &mut HashMap<Arc<str>, Keys>, name: &str, key: ConnKey) {
  if map.get_mut(name).is_some_and(|keys| keys.remove(key)) {
    map.remove(name);
  }
}

/// Channel names are non-empty, at most 256 characters, printable: they
/// appear in metrics and in the bus's entries.
pub fn validate_channel(name: &str) -> Result<(), NameError> {
  validate_label(name, MAX_CHANNEL_LEN)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn keys_stay_inline_for_one_and_in_order_for_many() {
    let key = |slot| ConnKey {
      slot,
      generation: 0,
    };
    let mut keys = Keys::One(key(1));
    assert!(!keys.remove(key(9)), "another key leaves it as it is");
    assert_eq!(keys.as_slice(), &[key(1)]);
    keys.push(key(2));
    keys.push(key(3));
    assert_eq!(keys.as_slice(), &[key(1), key(2), key(3)]);
    assert!(!keys.remove(key(2)));
    assert!(!keys.remove(key(1)));
    assert_eq!(keys, Keys::One(key(3)), "back inline once one is left");
    assert!(keys.remove(key(3)), "none left");
    let mut many = Keys::Many(vec![key(4)]);
    assert!(many.remove(key(4)));
  }

  fn ids<H>(r: &Registry<H>) -> Vec<String> {
    r.iter().map(|e| e.id.to_string()).collect()
  }

  #[test]
  fn keeps_registration_order_across_removals_and_compaction() {
    let mut r = Registry::new();
    let now = Instant::now();
    let keys: Vec<_> = (0..200)
      .map(|i| r.insert(&format!("c{i}"), i, now))
      .collect();
    for k in keys.iter().step_by(2) {
      assert!(r.remove(*k).is_some());
    }
    assert_eq!(r.len(), 100);
    let expected: Vec<_> = (0..200)
      .filter(|i| i % 2 == 1)
      .map(|i| format!("c{i}"))
      .collect();
    assert_eq!(ids(&r), expected);
    for (i, k) in keys.iter().enumerate() {
      assert_eq!(r.contains(*k), i % 2 == 1);
      if i % 2 == 1 {
        assert_eq!(r.get(*k).unwrap().handle, i);
      }
    }
    let late = r.insert("late", 999, now);
    assert_eq!(ids(&r).last().unwrap(), "late");
    assert_eq!(r.get(late).unwrap().handle, 999);
  }

  #[test]
  fn stale_keys_never_reach_a_reused_slot() {
    let mut r = Registry::new();
    let now = Instant::now();
    let a = r.insert("a", 1, now);
    r.remove(a);
    let b = r.insert("b", 2, now);
    assert_ne!(a, b);
    assert!(r.get(a).is_none());
    assert!(r.remove(a).is_none());
    assert_eq!(r.get(b).unwrap().handle, 2);
    assert_eq!(ConnKey::from_f64(b.to_f64()), Some(b));
    assert_eq!(ConnKey::from_f64(-1.0), None);
    assert_eq!(ConnKey::from_f64(0.5), None);
    assert_eq!(ConnKey::from_f64(f64::NAN), None);
  }

  #[test]
  fn a_slot_reused_until_its_generations_run_out_is_retired_not_wrapped() {
    let mut r = Registry::new();
    let now = Instant::now();
    let first = r.insert("a", 0u32, now);
    assert_eq!(
      first,
      ConnKey {
        slot: 0,
        generation: 0
      }
    );
    r.remove(first);
    // Every key one slot can carry, each round-tripped through a JS number.
    let mut last = first;
    for generation in 1..=MAX_GENERATION {
      let key = r.insert("a", generation, now);
      assert_eq!(
        key,
        ConnKey {
          slot: 0,
          generation
        }
      );
      assert_eq!(ConnKey::from_f64(key.to_f64()), Some(key));
      r.remove(key);
      last = key;
    }
    // The keys near 2^53 are accepted on the way back.
    assert!(last.to_f64() > 9.0e15);
    // The slot is spent: the next connection gets a new slot, and neither
    // the first nor the last key of the old slot reaches it.
    let next = r.insert("b", 7, now);
    assert_eq!(next.slot, 1);
    assert!(r.get(first).is_none());
    assert!(r.get(last).is_none());
    assert!(r.remove(last).is_none());
    assert_eq!(r.get(next).unwrap().handle, 7);
    assert_eq!(ConnKey::from_f64(9_007_199_254_740_992.0), None);
  }

  #[test]
  fn one_id_holds_several_connections_until_each_goes() {
    let mut r = Registry::new();
    let now = Instant::now();
    let tab1 = r.insert("session", (), now);
    let tab2 = r.insert("session", (), now);
    assert_eq!(r.keys_for_id("session"), &[tab1, tab2]);
    r.remove(tab1);
    assert_eq!(r.keys_for_id("session"), &[tab2]);
    r.remove(tab2);
    assert!(r.keys_for_id("session").is_empty());
    assert!(r.by_id.is_empty());
  }

  #[test]
  fn rename_moves_a_connection_without_duplicating_it() {
    let mut r = Registry::new();
    let now = Instant::now();
    let k = r.insert("generated", (), now);
    assert!(r.rename(k, "session"));
    assert_eq!(r.len(), 1);
    assert!(r.keys_for_id("generated").is_empty());
    assert_eq!(r.keys_for_id("session"), &[k]);
    assert!(r.rename(k, "session"));
    assert_eq!(r.keys_for_id("session"), &[k]);
  }

  #[test]
  fn older_than_uses_the_connection_age() {
    let mut r = Registry::new();
    let t0 = Instant::now();
    let old = r.insert("old", (), t0);
    let young = r.insert("young", (), t0 + Duration::from_secs(10));
    let now = t0 + Duration::from_secs(15);
    assert_eq!(r.older_than(now, Duration::from_secs(7)), vec![old]);
    assert_eq!(r.older_than(now, Duration::ZERO), vec![old, young]);
  }

  #[test]
  fn channels_track_members_and_forget_removed_connections() {
    let mut r = Registry::new();
    let now = Instant::now();
    let a = r.insert("a", (), now);
    let b = r.insert("b", (), now);
    assert!(r.join(a, "news"));
    assert!(!r.join(a, "news"));
    assert!(r.join(b, "news"));
    assert!(r.join(b, "sport"));
    assert_eq!(r.members("news"), &[a, b]);
    assert_eq!(r.channel_count(), 2);
    assert!(r.leave(a, "news"));
    assert!(!r.leave(a, "news"));
    assert_eq!(r.members("news"), &[b]);
    r.remove(b);
    assert!(r.members("news").is_empty());
    assert_eq!(r.channel_count(), 0);
    assert!(!r.join(b, "news"));
    assert!(validate_channel("").is_err());
    assert!(validate_channel("a\nb").is_err());
    assert!(validate_channel("room:42").is_ok());
  }

  #[test]
  fn drain_empties_everything() {
    let mut r = Registry::new();
    let now = Instant::now();
    for i in 0..100 {
      r.insert(&format!("{}", i % 7), i, now);
    }
    let drained = r.drain();
    assert_eq!(drained.len(), 100);
    assert!(r.is_empty());
    assert!(r.by_id.is_empty());
    assert!(r.entries.is_empty());
  }

  #[test]
  fn channel_names_are_checked() {
    assert_eq!(validate_channel(""), Err(NameError::Empty));
    assert_eq!(validate_channel("a\nb"), Err(NameError::ControlCharacter));
    assert_eq!(
      validate_channel("a\u{7f}"),
      Err(NameError::ControlCharacter)
    );
    assert_eq!(validate_channel(&"é".repeat(256)), Ok(()));
    assert_eq!(validate_channel(&"x".repeat(257)), Err(NameError::TooLong));
  }

  #[test]
  fn generated_ids_have_the_original_shape() {
    let now = std::time::UNIX_EPOCH + Duration::from_millis(1_733_100_000_123);
    let id = generate_client_id(now);
    let hex = id.strip_prefix("anon-1733100000123-").expect(&id);
    assert_eq!(hex.len(), 32);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(id, generate_client_id(now));
  }
}
