//! The bus task's decisions, without I/O: what becomes of each request
//! (served now, queued for the session, or answered offline), which
//! replays wait and which get `reset`, when a flush is answered, and what
//! a replay read gives each client. No Redis and no tokio here: the task
//! ([`super::task`]) feeds it what happened and carries out the
//! [`Action`]s it returns, so every rule is unit-tested on its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::config::MAX_WAITING_REPLAYS;
use super::entry::{BusFrame, Entry, EntryId};
use super::error::BusError;
use super::replay::{Outcome, ReplayFrom};
use super::request::{ReplayRequest, Request};

/// What the task does for the machine.
pub(super) enum Action {
  /// Answer a count or a flush.
  Reply {
    request: u32,
    result: Result<f64, BusError>,
  },
  /// Deliver an append locally without an id: it never reached Redis.
  Local(Entry),
  /// Answer a replay with `reset`: it cannot be served.
  Reset {
    replay: ReplayRequest,
    why: &'static str,
    until: EntryId,
  },
  /// Forget the queued presence refresh: the next session refreshes it.
  DropPresence,
  /// During a session: append this entry (and whatever else is queued).
  Append(Entry),
  /// During a session: interrupt the blocking read, a replay waits.
  Unblock,
  /// During a session: count every instance's clients for this request.
  Count(u32),
  /// During a session: refresh this instance's presence now.
  RefreshPresence,
  /// During a session: leave (drop the presence) and end it.
  Leave,
}

/// Why a replay cannot be served while Redis is away (the `reset`'s
/// reason, not shown to the app).
const NOT_CONNECTED: &str = "Redis is not connected";

/// The task's decision state.
#[derive(Default)]
pub(super) struct BusMachine {
  /// The newest entry delivered live (L); `None` before the first session.
  pub(super) position: Option<EntryId>,
  /// The newest entry this instance appended.
  last_written: Option<EntryId>,
  /// Replays waiting to be served between two live reads.
  replays: Vec<ReplayRequest>,
  /// Flush requests waiting for the reader to pass an id.
  flushes: Vec<(u32, EntryId)>,
  /// Requests taken off the queue while batching appends, served next in
  /// their order.
  deferred: VecDeque<Request>,
  /// Origins of appends delivered locally because their `XADD` failed
  /// half-way: if Redis did take them, reading them back must not deliver
  /// them twice.
  uncertain: HashSet<String>,
  /// Redis went away (a session or a connect failed) and has not come
  /// back: a replay cannot wait for it. Before the first session it can.
  away: bool,
  /// The position moved back ([`BusMachine::truncated`],
  /// [`BusMachine::replaced`]) while a read was in flight: it is
  /// interrupted.
  reread: bool,
}

impl BusMachine {
  /// A request while Redis is away: appends are delivered locally at once
  /// (without an id), counts fail, flushes are done (nothing can be read
  /// back), replays get `reset` (during the first connect they wait).
  pub(super) fn offline(&mut self, request: Request) -> Vec<Action> {
    match request {
      Request::Append(entry) => vec![Action::Local(entry)],
      Request::Replay(replay) => {
        let mut actions = self.wait_for_replay(replay);
        // Before the first session (the first connect still under way) a
        // replay waits for it; once Redis has gone away, it cannot wait.
        if self.away {
          actions.extend(self.reset_waiting_replays(NOT_CONNECTED));
        }
        actions
      }
      Request::Count(request) => vec![reply(request, Err(BusError::NotConnected))],
      Request::Flush(request) => vec![reply(request, Ok(0.0))],
      Request::Presence => vec![Action::DropPresence],
      Request::Stop => Vec::new(),
    }
  }

  /// A request during a session. `unblocked`: the blocking read in flight
  /// was already asked to return.
  pub(super) fn request(&mut self, request: Request, unblocked: bool) -> Vec<Action> {
    match request {
      Request::Stop => vec![Action::Leave],
      Request::Append(entry) => vec![Action::Append(entry)],
      Request::Replay(replay) => {
        let mut actions = self.wait_for_replay(replay);
        if !unblocked {
          // The reader's XREAD returns at once; the replay is served
          // before the next one.
          actions.push(Action::Unblock);
        }
        actions
      }
      Request::Count(request) => vec![Action::Count(request)],
      Request::Flush(request) => match self.last_written {
        Some(id) if Some(id) > self.position => {
          self.flushes.push((request, id));
          Vec::new()
        }
        _ => vec![reply(request, Ok(0.0))],
      },
      Request::Presence => vec![Action::DropPresence, Action::RefreshPresence],
    }
  }

  /// A request taken off the queue while batching appends: served right
  /// after them, in its order.
  pub(super) fn defer(&mut self, request: Request) {
    self.deferred.push_back(request);
  }

  /// The next deferred request, if any.
  pub(super) fn next_deferred(&mut self) -> Option<Request> {
    self.deferred.pop_front()
  }

  /// A session started: replays may wait for reads again.
  pub(super) fn session_started(&mut self) {
    self.away = false;
  }

  /// A connect or a session failed: until the next session starts,
  /// replays cannot wait.
  pub(super) fn link_failed(&mut self) {
    self.away = true;
  }

  /// A session failed: a request taken off the queue while batching (and
  /// not served yet) is served offline, and flushes waiting for entries to
  /// come back are answered (none will while Redis is away), and waiting
  /// replays get `reset`. The flag: one of those requests was `Stop`.
  pub(super) fn session_failed(&mut self) -> (bool, Vec<Action>) {
    let mut stop = false;
    let mut actions = Vec::new();
    for request in std::mem::take(&mut self.deferred) {
      match request {
        Request::Stop => stop = true,
        request => actions.extend(self.offline(request)),
      }
    }
    actions.extend(self.answer_flushes());
    actions.extend(self.reset_waiting_replays(NOT_CONNECTED));
    (stop, actions)
  }

  /// The task ends: every request still deferred or queued (`queued`) gets
  /// its answer, and so does every waiting flush; nothing more will come.
  /// Replays are dropped: the hub that asked for them is closing.
  pub(super) fn closed(&mut self, queued: impl IntoIterator<Item = Request>) -> Vec<Action> {
    let mut actions = Vec::new();
    let deferred: Vec<Request> = std::mem::take(&mut self.deferred).into();
    for request in deferred.into_iter().chain(queued) {
      if !matches!(request, Request::Replay(_)) {
        actions.extend(self.offline(request));
      }
    }
    self.replays.clear();
    actions.extend(self.answer_flushes());
    actions
  }

  /// A replay that must wait for the next read (or session). The queue is
  /// bounded: clients reconnecting in a loop during an outage cannot grow
  /// it without end; past the bound a client gets `reset` at once.
  fn wait_for_replay(&mut self, replay: ReplayRequest) -> Vec<Action> {
    if self.replays.len() < MAX_WAITING_REPLAYS {
      self.replays.push(replay);
      return Vec::new();
    }
    vec![Action::Reset {
      replay,
      why: "too many replays waiting",
      until: self.until(),
    }]
  }

  /// Replays that cannot be served now (Redis is away) are answered with
  /// `reset` at once, so their connections get local broadcasts meanwhile
  /// instead of waiting, held, for a Redis that may not come back.
  fn reset_waiting_replays(&mut self, why: &'static str) -> Vec<Action> {
    let until = self.until();
    std::mem::take(&mut self.replays)
      .into_iter()
      .map(|replay| Action::Reset { replay, why, until })
      .collect()
  }

  /// Every waiting flush answered.
  fn answer_flushes(&mut self) -> Vec<Action> {
    std::mem::take(&mut self.flushes)
      .into_iter()
      .map(|(request, _)| reply(request, Ok(0.0)))
      .collect()
  }

  /// Where replays end: the live position.
  pub(super) fn until(&self) -> EntryId {
    self.position.unwrap_or_default()
  }

  /// Whether replays wait to be served.
  pub(super) fn has_replays(&self) -> bool {
    !self.replays.is_empty()
  }

  /// The waiting replays, grouped by where they start: requests from the
  /// same id (a whole instance's clients after a deploy) share one read.
  pub(super) fn take_replays(&mut self) -> Vec<(ReplayFrom, Vec<ReplayRequest>)> {
    let mut groups: HashMap<ReplayFrom, Vec<ReplayRequest>> = HashMap::new();
    for request in std::mem::take(&mut self.replays) {
      groups
        .entry(request.from.clone())
        .or_default()
        .push(request);
    }
    groups.into_iter().collect()
  }

  /// Replays a failed read did not serve: served in the next session.
  pub(super) fn requeue(&mut self, replays: impl IntoIterator<Item = ReplayRequest>) {
    self.replays.extend(replays);
  }

  /// Entries read live up to `position`: the flushes waiting for ids up to
  /// it are answered.
  pub(super) fn advanced(&mut self, position: EntryId) -> Vec<Action> {
    self.position = Some(position);
    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
      .into_iter()
      .partition(|(_, id)| *id <= position);
    self.flushes = waiting;
    done
      .into_iter()
      .map(|(request, _)| reply(request, Ok(0.0)))
      .collect()
  }

  /// The first session found the stream's newest entry (0-0: empty).
  pub(super) fn started_at(&mut self, newest: EntryId) {
    self.position = Some(newest);
  }

  /// The stream lost its tail after `kept`, an entry delivered here: read
  /// on after it. Flushes waiting for the lost ids are answered.
  pub(super) fn truncated(&mut self, kept: EntryId) -> Vec<Action> {
    self.position = Some(kept);
    self.reread = true;
    self.answer_flushes()
  }

  /// The stream was replaced: the reader starts over at the new stream's
  /// first entry, and flushes waiting for ids of the old one are answered.
  pub(super) fn replaced(&mut self) -> Vec<Action> {
    self.position = Some(EntryId::ZERO);
    self.reread = true;
    self.answer_flushes()
  }

  /// Whether the position moved back since last asked: the blocking read
  /// in flight, after the old position, must give way.
  pub(super) fn take_reread(&mut self) -> bool {
    std::mem::take(&mut self.reread)
  }

  /// An append pipeline succeeded, the newest of its entries at `newest`.
  /// True when Redis gave it an id at or below what the reader has passed:
  /// the stream lost its tail, or was replaced.
  pub(super) fn appended(&mut self, newest: EntryId) -> bool {
    self.last_written = Some(newest);
    self
      .position
      .is_some_and(|p| p != EntryId::ZERO && newest <= p)
  }

  /// Appends delivered locally because their pipeline failed: Redis may
  /// have taken them after all.
  pub(super) fn uncertain(&mut self, entries: &[Entry]) {
    self
      .uncertain
      .extend(entries.iter().filter_map(|e| e.origin.clone()));
  }

  /// Whether an entry read back was already delivered locally (its append
  /// failed half-way, yet Redis took it): then it is skipped, once.
  pub(super) fn seen(&mut self, entry: &Entry) -> bool {
    entry
      .origin
      .as_ref()
      .is_some_and(|o| !self.uncertain.is_empty() && self.uncertain.remove(o))
  }
}

fn reply(request: u32, result: Result<f64, BusError>) -> Action {
  Action::Reply { request, result }
}

/// What one replay request gets of a replay read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Share {
  /// `event: reset`: too far back, gone, or more than `max_bytes`.
  Reset,
  /// Its frames (possibly none), then its gate released with `cursor`.
  Frames {
    chunks: Vec<Arc<[u8]>>,
    cursor: Option<EntryId>,
  },
}

/// One request's share of a replay read: the frames routed to it, within
/// `max_bytes`, or `reset`.
pub(super) fn share(
  request: &ReplayRequest,
  outcome: &Outcome,
  frames: &[BusFrame],
  max_bytes: usize,
) -> Share {
  let Outcome::Replay { cursor } = outcome else {
    return Share::Reset;
  };
  let chunks: Vec<Arc<[u8]>> = frames
    .iter()
    .filter(|f| f.route.matches(&request.client, &request.channels))
    .map(|f| f.chunk.clone())
    .collect();
  let bytes: usize = chunks.iter().map(|c| c.len()).sum();
  if bytes > max_bytes {
    return Share::Reset;
  }
  Share::Frames {
    chunks,
    cursor: *cursor,
  }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
