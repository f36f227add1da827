//! Where a new connection starts on a hub with a bus: its mark, its
//! admission (live or held for a replay), and the lock live delivery and
//! registration share.

use std::sync::{Arc, Mutex};

use super::entry::EntryId;
use super::replay::ReplayFrom;
use crate::writer::WriterPort;

/// Where a connection whose headers were just flushed stands: what live
/// delivery has reached at that moment ([`Bus::mark`](super::Bus::mark)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
  /// Everything up to this entry was handed to delivery before (0-0: the
  /// stream was empty).
  At(EntryId),
  /// No position known yet: the bus has not had a session.
  Unknown,
}

impl Mark {
  /// The mark as a response carries it: the entry id, or `""`.
  pub fn to_text(self) -> String {
    match self {
      Mark::At(id) => id.to_string(),
      Mark::Unknown => String::new(),
    }
  }

  pub fn parse(text: &str) -> Option<Mark> {
    if text.is_empty() {
      return Some(Mark::Unknown);
    }
    EntryId::parse(text).map(Mark::At)
  }
}

/// How a new connection starts on a hub with a bus ([`DeliveryLock::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
  /// Live at once: nothing was delivered since its mark.
  Live,
  /// Held, then replayed from there before any live entry.
  Held(ReplayFrom),
}

/// Live delivery's state, under one lock shared by the bus thread (which
/// delivers) and the JS thread (which registers): a connection registered
/// under it is either in every later delivery or held for a replay that
/// covers them, never between the two.
#[derive(Default)]
pub(super) struct Live {
  pub(super) ports: Vec<WriterPort>,
  /// The newest entry handed to delivery; `None` before the first session.
  pub(super) position: Option<EntryId>,
  /// A connection was registered before the first session: the reader
  /// then starts at the stream's newest entry, so what came in between is
  /// unknown to it and those connections get `reset`.
  pub(super) early: bool,
}

/// Live delivery's lock, held by the JS thread while it registers a
/// connection ([`Bus::delivery`](super::Bus::delivery)).
pub struct DeliveryLock(pub(super) Arc<Mutex<Live>>);

impl DeliveryLock {
  /// Decides how a new connection starts, and runs `register` (which adds
  /// it to the writer and the stream count) under the lock live delivery
  /// takes, so no entry is delivered between the decision and the
  /// registration. `last_event_id`: the client's own, which always wins;
  /// `mark`: where delivery was when its headers were flushed (`None` when
  /// the app sent them some other way: then now).
  pub fn admit<R>(
    &self,
    last_event_id: Option<&str>,
    mark: Option<Mark>,
    register: impl FnOnce(&Admission) -> R,
  ) -> R {
    let mut live = self.0.lock().unwrap_or_else(|e| e.into_inner());
    let admission = admission(&mut live, last_event_id, mark);
    register(&admission)
  }
}

pub(super) fn admission(
  live: &mut Live,
  last_event_id: Option<&str>,
  mark: Option<Mark>,
) -> Admission {
  match (last_event_id, mark, live.position) {
    (Some(id), _, _) => Admission::Held(ReplayFrom::After(id.to_string())),
    // Before the first session nothing is delivered: the session start
    // settles it ([`Live::early`]).
    (None, _, None) => {
      live.early = true;
      Admission::Live
    }
    (None, None, Some(_)) => Admission::Live,
    (None, Some(Mark::At(at)), Some(position)) if at == position => Admission::Live,
    (None, Some(Mark::At(EntryId::ZERO)), Some(_)) => Admission::Held(ReplayFrom::Start),
    (None, Some(Mark::At(at)), Some(_)) => Admission::Held(ReplayFrom::After(at.to_string())),
    // Headers before any position was known, registered once one was:
    // live if nothing was delivered yet, else the gap is unknown.
    (None, Some(Mark::Unknown), Some(EntryId::ZERO)) => Admission::Live,
    (None, Some(Mark::Unknown), Some(_)) => Admission::Held(ReplayFrom::Unknown),
  }
}
