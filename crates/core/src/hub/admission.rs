//! Admission control: the global `maxClients` and the per-key
//! `maxClientsPerKey`, counted over registered connections *and*
//! reservations. `initResponse` reserves a place before any header is
//! sent; `addClient` turns the reservation into the registration (or the
//! response's `close` gives it back), so the limits hold when a route
//! awaits between the two, as in a reconnect storm.
//!
//! The key (a remote address, a user id: whatever the app's `clientKey`
//! says) is counted while a reservation or a registered connection holds
//! it; the connection keeps it, so the count drops when the connection
//! leaves the registry. A key is forgotten when its count reaches zero,
//! so the map never holds more keys than there are connections.

use std::collections::HashMap;
use std::sync::Arc;

use super::{CoreError, HubCore};

/// `retryAfterMs`'s default: 5 s, as `Retry-After: 5`.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 5;

/// A place reserved by `initResponse` for a response not registered yet.
/// JS holds it as a number; one never comes back once used or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

impl Ticket {
  /// As JS holds it (exact: tickets stay far below 2^53).
  pub fn to_f64(self) -> f64 {
    self.0 as f64
  }

  /// From JS; `None` for anything that was never a ticket.
  pub fn from_f64(n: f64) -> Option<Ticket> {
    (n.is_finite() && n >= 1.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0)
      .then_some(Ticket(n as u64))
  }
}

/// How a new connection takes its place, as [`HubCore::admission`]
/// decided; applied when it registers (no JS runs in between).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Admitted {
  /// Not limited and not counted (no limit was on, or the core's own tests).
  #[default]
  Free,
  /// It takes the place `initResponse` reserved.
  Reserved(Ticket),
  /// It takes a new place, under this key if it has one.
  Counted(Option<Arc<str>>),
}

/// The limits, the counts and the refusals of one hub.
#[derive(Debug)]
pub struct Admission {
  /// Most connections (registered and reserved); 0: no limit.
  pub(super) max_clients: usize,
  /// Most connections per key; 0: no limit.
  pub(super) max_per_key: usize,
  /// `Retry-After` of a refusal, in seconds.
  pub(super) retry_after: u32,
  /// Registered connections and reservations per key.
  per_key: HashMap<Arc<str>, usize>,
  /// Reservations not registered yet, with their key.
  reserved: HashMap<Ticket, Option<Arc<str>>>,
  last_ticket: u64,
  /// Refusals for `maxClients` (503) and for `maxClientsPerKey` (429).
  refused_clients: u64,
  refused_per_key: u64,
}

impl Default for Admission {
  fn default() -> Self {
    Self {
      max_clients: 0,
      max_per_key: 0,
      retry_after: DEFAULT_RETRY_AFTER_SECS,
      per_key: HashMap::new(),
      reserved: HashMap::new(),
      last_ticket: 0,
      refused_clients: 0,
      refused_per_key: 0,
    }
  }
}

impl Admission {
  /// Whether any limit is on (only then is anything reserved).
  pub(super) fn limited(&self) -> bool {
    self.max_clients > 0 || self.max_per_key > 0
  }

  /// Connections and reservations under `key`.
  pub fn count_of(&self, key: &str) -> usize {
    self.per_key.get(key).copied().unwrap_or(0)
  }

  /// Counts one more under `key`, sharing the map's own copy of it.
  fn enter(&mut self, key: Arc<str>) -> Arc<str> {
    if let Some((shared, n)) = self
      .per_key
      .get_key_value(&*key)
      .map(|(k, n)| (k.clone(), *n))
    {
      self.per_key.insert(shared.clone(), n + 1);
      return shared;
    }
    self.per_key.insert(key.clone(), 1);
    key
  }

  /// One fewer under `key`; the key is forgotten at zero.
  fn leave(&mut self, key: &str) {
    if let Some(n) = self.per_key.get_mut(key) {
      *n -= 1;
      if *n == 0 {
        self.per_key.remove(key);
      }
    }
  }

  /// Refuses a new place when `taken` (registered connections) plus the
  /// reservations reach `maxClients`, or `key`'s count reaches
  /// `maxClientsPerKey`; the global limit is checked first.
  fn check(&self, taken: usize, key: Option<&str>) -> Result<(), CoreError> {
    let retry_after = self.retry_after;
    let max = self.max_clients;
    if max > 0 && taken + self.reserved.len() >= max {
      return Err(CoreError::Capacity { max, retry_after });
    }
    let max = self.max_per_key;
    match key {
      Some(key) if max > 0 && self.count_of(key) >= max => Err(CoreError::KeyCapacity {
        max,
        key: key.to_string(),
        retry_after,
      }),
      _ => Ok(()),
    }
  }

  /// Counts a refusal [`Admission::check`] made.
  fn refused(&mut self, error: &CoreError) {
    match error {
      CoreError::Capacity { .. } => self.refused_clients += 1,
      CoreError::KeyCapacity { .. } => self.refused_per_key += 1,
      _ => {}
    }
  }

  /// The key a registering connection keeps, its place taken.
  fn take(&mut self, admitted: Admitted) -> Option<Arc<str>> {
    match admitted {
      Admitted::Free => None,
      Admitted::Reserved(ticket) => self.reserved.remove(&ticket).flatten(),
      Admitted::Counted(key) => key.map(|k| self.enter(k)),
    }
  }
}

/// Admission control's figures for `getStats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionStats {
  /// Connections refused for `maxClients` (503).
  pub refused_max_clients: u64,
  /// Connections refused for `maxClientsPerKey` (429).
  pub refused_max_clients_per_key: u64,
  /// Places reserved by `initResponse` and not yet registered.
  pub pending_admissions: usize,
  /// Keys with at least one connection or reservation.
  pub admission_keys: usize,
}

impl<H> HubCore<H> {
  /// Whether `maxClientsPerKey` is on: only then does the JS surface
  /// compute a request's key.
  pub(crate) fn keyed(&self) -> bool {
    self.admission.max_per_key > 0
  }

  /// Whether `maxClients` or `maxClientsPerKey` is on: only then does
  /// `initResponse` reserve a place.
  pub(crate) fn limited(&self) -> bool {
    self.admission.limited()
  }

  /// `initResponse`: reserves a place for a response that is not
  /// registered, under `key`, or refuses it ([`CoreError::Capacity`],
  /// [`CoreError::KeyCapacity`]). `None` when nothing needs reserving: no
  /// limit is on, or the hub refuses new connections anyway (`addClient`
  /// throws `ERR_SSE_CLOSED` then).
  pub fn reserve(&mut self, key: Option<&str>) -> Result<Option<Ticket>, CoreError> {
    if !self.admission.limited() || self.is_closing() {
      return Ok(None);
    }
    let a = &mut self.admission;
    if let Err(error) = a.check(self.registry.len(), key) {
      a.refused(&error);
      return Err(error);
    }
    a.last_ticket += 1;
    let ticket = Ticket(a.last_ticket);
    let key = key.map(|k| a.enter(Arc::from(k)));
    a.reserved.insert(ticket, key);
    Ok(Some(ticket))
  }

  /// Gives a reservation back (its response closed, or `addClient` did not
  /// register it); false when it was used or released already.
  pub fn release(&mut self, ticket: Ticket) -> bool {
    let a = &mut self.admission;
    match a.reserved.remove(&ticket) {
      Some(key) => {
        if let Some(key) = key {
          a.leave(&key);
        }
        true
      }
      None => false,
    }
  }

  /// How a new connection (not registered) may take its place: the
  /// reservation `ticket` names if it still holds, else a new place under
  /// `key`, within the limits. Decides only; [`HubCore::register_with`]
  /// applies it and [`HubCore::refused`] counts a refusal.
  pub fn admission(
    &self,
    ticket: Option<Ticket>,
    key: Option<&str>,
  ) -> Result<Admitted, CoreError> {
    let a = &self.admission;
    if let Some(ticket) = ticket.filter(|t| a.reserved.contains_key(t)) {
      return Ok(Admitted::Reserved(ticket));
    }
    a.check(self.registry.len(), key)?;
    Ok(Admitted::Counted(key.map(Arc::from)))
  }

  /// Counts a refusal of [`HubCore::admission`] that was thrown.
  pub fn refused(&mut self, error: &CoreError) {
    self.admission.refused(error);
  }

  /// Applies `admitted` for a connection being registered: the key it keeps.
  pub(super) fn take_place(&mut self, admitted: Admitted) -> Option<Arc<str>> {
    self.admission.take(admitted)
  }

  /// A connection with `key` left the registry.
  pub(super) fn left(&mut self, key: Option<&str>) {
    if let Some(key) = key {
      self.admission.leave(key);
    }
  }

  /// `close()`: nothing registers any more, so no reservation holds.
  pub(super) fn drop_reservations(&mut self) {
    let a = &mut self.admission;
    for key in std::mem::take(&mut a.reserved).into_values().flatten() {
      a.leave(&key);
    }
  }

  /// Connections and reservations under `key`.
  #[cfg(test)]
  pub(crate) fn key_count(&self, key: &str) -> usize {
    self.admission.count_of(key)
  }

  /// Admission control's figures.
  pub(crate) fn admission_stats(&self) -> AdmissionStats {
    let a = &self.admission;
    AdmissionStats {
      refused_max_clients: a.refused_clients,
      refused_max_clients_per_key: a.refused_per_key,
      pending_admissions: a.reserved.len(),
      admission_keys: a.per_key.len(),
    }
  }
}

#[cfg(test)]
mod tests {
  use std::time::Instant;

  use super::*;
  use crate::hub::{Reason, Removal, Settings, StreamReason};

  fn hub(max_clients: usize, max_per_key: usize) -> HubCore<&'static str> {
    let mut hub = HubCore::new(1000);
    hub
      .configure(Settings {
        max_clients: Some(max_clients),
        max_clients_per_key: Some(max_per_key),
        retry_after: Some(7),
        ..Default::default()
      })
      .unwrap();
    hub
  }

  fn register(hub: &mut HubCore<&'static str>, admitted: Admitted) -> crate::registry::ConnKey {
    let now = Instant::now();
    hub
      .register_with(
        "c",
        "res",
        Err(StreamReason::NoSocket),
        now,
        None,
        None,
        admitted,
      )
      .0
  }

  #[test]
  fn a_key_holds_its_cap_over_reservations_and_registrations() {
    let mut hub = hub(0, 2);
    let a = hub.reserve(Some("1.2.3.4")).unwrap().unwrap();
    let b = hub.reserve(Some("1.2.3.4")).unwrap().unwrap();
    let refused = hub.reserve(Some("1.2.3.4")).unwrap_err();
    assert_eq!(
      refused,
      CoreError::KeyCapacity {
        max: 2,
        key: "1.2.3.4".into(),
        retry_after: 7
      }
    );
    assert_eq!(refused.code(), "ERR_SSE_KEY_CAPACITY");
    assert_eq!(
      refused.to_string(),
      "the SSE hub is at its limit of 2 clients per key"
    );
    // Another key is not limited by this one.
    assert!(hub.reserve(Some("5.6.7.8")).unwrap().is_some());
    // `a` registers (its reservation becomes the connection), `b` closes.
    let admitted = hub.admission(Some(a), Some("1.2.3.4")).unwrap();
    assert_eq!(admitted, Admitted::Reserved(a));
    let key = register(&mut hub, admitted);
    assert!(hub.release(b));
    assert!(!hub.release(b));
    assert!(!hub.release(a), "a used reservation is never released");
    assert_eq!(hub.key_count("1.2.3.4"), 1);
    // A connection without a reservation is checked and counted.
    let admitted = hub.admission(None, Some("1.2.3.4")).unwrap();
    register(&mut hub, admitted);
    assert!(hub.admission(None, Some("1.2.3.4")).is_err());
    assert_eq!(hub.key_count("1.2.3.4"), 2);
    hub.remove(key, Removal::End, Reason::Closed);
    assert_eq!(hub.key_count("1.2.3.4"), 1);
    let stats = hub.admission_stats();
    assert_eq!(
      stats.refused_max_clients_per_key, 1,
      "only what reserve refused counts by itself"
    );
    assert_eq!(stats.pending_admissions, 1);
    assert_eq!(stats.admission_keys, 2);
  }

  #[test]
  fn reservations_count_against_max_clients_and_close_drops_them() {
    let mut hub = hub(2, 0);
    let a = hub.reserve(None).unwrap().unwrap();
    let admitted = hub.admission(Some(a), None).unwrap();
    register(&mut hub, admitted);
    let b = hub.reserve(None).unwrap().unwrap();
    let err = hub.reserve(None).unwrap_err();
    assert_eq!(
      err,
      CoreError::Capacity {
        max: 2,
        retry_after: 7
      }
    );
    assert_eq!(err.to_string(), "the SSE hub is at its limit of 2 clients");
    // addClient without initResponse sees the reservation too.
    let err = hub.admission(None, None).unwrap_err();
    hub.refused(&err);
    assert_eq!(hub.admission_stats().refused_max_clients, 2);
    // A ticket that no longer holds falls back to the check.
    assert!(hub.release(b));
    assert_eq!(hub.admission(Some(b), None), Ok(Admitted::Counted(None)));
    let c = hub.reserve(None).unwrap().unwrap();
    hub.close();
    assert!(!hub.release(c));
    assert_eq!(hub.admission_stats().pending_admissions, 0);
    // A closing hub reserves nothing (addClient refuses it as closed).
    assert_eq!(hub.reserve(None), Ok(None));
  }

  #[test]
  fn without_limits_nothing_is_reserved_or_counted() {
    let mut hub = hub(0, 0);
    assert_eq!(hub.reserve(Some("k")), Ok(None));
    assert!(!hub.keyed());
    assert_eq!(hub.admission_stats(), AdmissionStats::default());
    assert_eq!(Ticket::from_f64(0.0), None);
    assert_eq!(Ticket::from_f64(1.5), None);
    assert_eq!(Ticket::from_f64(3.0).map(Ticket::to_f64), Some(3.0));
  }
}
