//! Replay from the stream, planned without I/O: which bounded `XRANGE`
//! to issue next, when to stop, and when the answer is `reset` instead.
//!
//! A reconnecting client names the last entry it has (X). The bus has
//! delivered live everything up to its reader's position (L), so the replay
//! is the entries in (X, L], read in batches of [`ReplayPlan::batch`], at
//! most `limit` entries in all: a client asking from far back costs one
//! bounded read and gets `reset`, never an unbounded reply. X must still be
//! in the stream; if it was trimmed (or never existed) the client gets
//! `reset` too, as with the local history.

use super::entry::EntryId;

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplayFrom {
  /// After the entry named: a client's `Last-Event-ID`, or where live
  /// delivery stood when its headers went out.
  After(String),
  /// From the stream's first entry: its headers went out while the stream
  /// was empty.
  Start,
  /// Nowhere known (its headers went out before the bus's first session,
  /// and entries were delivered since): `reset`.
  Unknown,
}

/// What the I/O layer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
  /// `XRANGE key <start> <end> COUNT <count>` and feed the entries back.
  Read {
    start: String,
    end: String,
    count: usize,
  },
  Done(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
  /// Send the entries gathered (possibly none), then release the gate with
  /// this cursor.
  Replay { cursor: Option<EntryId> },
  /// Send `event: reset` instead, then release the gate.
  Reset(&'static str),
}

#[derive(Debug)]
pub struct ReplayPlan {
  from: EntryId,
  until: EntryId,
  batch: usize,
  limit: usize,
  read: usize,
  /// The last id fed, once a batch came back.
  last: Option<EntryId>,
  /// Entries in (from, until], in order, as fed.
  entries: Vec<EntryId>,
}

impl ReplayPlan {
  /// The batch size of each `XRANGE`.
  pub const BATCH: usize = 256;

  /// Plans the replay from `from` while the reader has delivered everything
  /// up to `until`. Returns the plan and its first step.
  pub fn start(from: &ReplayFrom, until: EntryId, limit: usize) -> (ReplayPlan, Step) {
    let mut plan = ReplayPlan {
      from: EntryId::ZERO,
      until,
      batch: Self::BATCH,
      limit,
      read: 0,
      last: None,
      entries: Vec::new(),
    };
    let last_event_id = match from {
      ReplayFrom::After(id) => id,
      ReplayFrom::Unknown => return (plan, Step::Done(Outcome::Reset("position unknown"))),
      ReplayFrom::Start => {
        // Everything in the stream came after the headers: there is no entry
        // whose presence to check; more than `limit` is still a reset.
        plan.last = Some(EntryId::ZERO);
        let step = Step::Read {
          start: format!("({}", EntryId::ZERO),
          end: until.to_string(),
          count: plan.batch,
        };
        return (plan, step);
      }
    };
    let Some(from) = EntryId::parse(last_event_id) else {
      return (plan, Step::Done(Outcome::Reset("not a stream id")));
    };
    plan.from = from;
    if from == until {
      return (plan, Step::Done(Outcome::Replay { cursor: None }));
    }
    // Read from X itself: its presence proves nothing between was trimmed.
    // When X is newer than L, that read only checks X exists.
    let step = Step::Read {
      start: from.to_string(),
      end: if from > until {
        from.to_string()
      } else {
        until.to_string()
      },
      count: plan.batch.min(limit.saturating_add(1)) + 1,
    };
    (plan, step)
  }

  /// The ids of the entries to replay, in order (after [`Outcome::Replay`]).
  pub fn entries(&self) -> &[EntryId] {
    &self.entries
  }

  /// Feeds the ids of a batch `XRANGE` returned; returns the next step.
  pub fn feed(&mut self, ids: &[EntryId]) -> Step {
    let asked = match self.last {
      None => self.batch.min(self.limit.saturating_add(1)) + 1,
      Some(_) => self.batch,
    };
    let mut rest = ids;
    if self.last.is_none() {
      match ids.first() {
        Some(first) if *first == self.from => rest = &ids[1..],
        _ => return Step::Done(Outcome::Reset("no longer in the stream")),
      }
      if self.from > self.until {
        return Step::Done(Outcome::Replay {
          cursor: Some(self.from),
        });
      }
    }
    for id in rest {
      if *id <= self.last.unwrap_or(self.from) || *id > self.until {
        continue;
      }
      self.read += 1;
      if self.read > self.limit {
        self.entries.clear();
        return Step::Done(Outcome::Reset("more entries missed than replayLimit"));
      }
      self.entries.push(*id);
    }
    self.last = Some(ids.last().copied().unwrap_or(self.from));
    let last = self.last.unwrap_or(self.from);
    if ids.len() < asked || last >= self.until {
      return Step::Done(Outcome::Replay { cursor: None });
    }
    Step::Read {
      start: format!("({last}"),
      end: self.until.to_string(),
      count: self.batch,
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn id(ms: u64) -> EntryId {
    EntryId { ms, seq: 0 }
  }

  /// Runs a plan against a stream holding `stream` (ids in order).
  fn run(
    stream: &[u64],
    last_event_id: &str,
    until: u64,
    limit: usize,
  ) -> (Outcome, Vec<u64>, usize) {
    let stream: Vec<EntryId> = stream.iter().map(|&ms| id(ms)).collect();
    let from = match last_event_id {
      "start" => ReplayFrom::Start,
      id => ReplayFrom::After(id.to_string()),
    };
    let (mut plan, mut step) = ReplayPlan::start(&from, id(until), limit);
    let mut reads = 0;
    loop {
      match step {
        Step::Done(outcome) => {
          let ids = plan.entries().iter().map(|i| i.ms).collect();
          return (outcome, ids, reads);
        }
        Step::Read { start, end, count } => {
          reads += 1;
          let (exclusive, start) = match start.strip_prefix('(') {
            Some(s) => (true, EntryId::parse(s).unwrap()),
            None => (false, EntryId::parse(&start).unwrap()),
          };
          let end = EntryId::parse(&end).unwrap();
          let batch: Vec<EntryId> = stream
            .iter()
            .copied()
            .filter(|i| (if exclusive { *i > start } else { *i >= start }) && *i <= end)
            .take(count)
            .collect();
          assert!(batch.len() <= count);
          step = plan.feed(&batch);
        }
      }
    }
  }

  #[test]
  fn replays_what_came_after_the_id_up_to_the_reader() {
    let (outcome, ids, _) = run(&[1, 2, 3, 4, 5, 6], "2-0", 5, 100);
    assert_eq!(outcome, Outcome::Replay { cursor: None });
    assert_eq!(ids, [3, 4, 5], "6 comes live, after the release");
  }

  #[test]
  fn reads_in_bounded_batches() {
    let stream: Vec<u64> = (1..=1000).collect();
    let (outcome, ids, reads) = run(&stream, "1-0", 1000, 2000);
    assert_eq!(outcome, Outcome::Replay { cursor: None });
    assert_eq!(ids.len(), 999);
    assert_eq!(ids.first(), Some(&2));
    assert!(reads >= 999 / ReplayPlan::BATCH, "{reads} reads");
  }

  #[test]
  fn from_the_start_replays_the_whole_stream_within_the_limit() {
    let (outcome, ids, _) = run(&[1, 2, 3, 4], "start", 3, 100);
    assert_eq!(outcome, Outcome::Replay { cursor: None });
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
      run(&[1, 2, 3, 4], "start", 4, 3).0,
      Outcome::Reset("more entries missed than replayLimit")
    );
    // A client naming 0-0 names no entry: reset, as any id not in the stream.
    assert_eq!(
      run(&[1, 2, 3, 4], "0-0", 4, 100).0,
      Outcome::Reset("no longer in the stream")
    );
    assert_eq!(
      ReplayPlan::start(&ReplayFrom::Unknown, id(4), 100).1,
      Step::Done(Outcome::Reset("position unknown"))
    );
  }

  #[test]
  fn a_trimmed_or_unknown_id_resets() {
    assert_eq!(
      run(&[5, 6, 7], "3-0", 7, 100).0,
      Outcome::Reset("no longer in the stream")
    );
    assert_eq!(
      run(&[5, 6, 7], "6-1", 7, 100).0,
      Outcome::Reset("no longer in the stream")
    );
    assert_eq!(
      run(&[], "3-0", 0, 100).0,
      Outcome::Reset("no longer in the stream")
    );
    assert_eq!(
      run(&[5], "garbage", 5, 100).0,
      Outcome::Reset("not a stream id")
    );
    assert_eq!(run(&[5], "", 5, 100).0, Outcome::Reset("not a stream id"));
  }

  #[test]
  fn far_back_is_capped_after_one_bounded_read() {
    let stream: Vec<u64> = (1..=5000).collect();
    let (outcome, ids, reads) = run(&stream, "1-0", 5000, 10);
    assert_eq!(
      outcome,
      Outcome::Reset("more entries missed than replayLimit")
    );
    assert!(ids.is_empty());
    assert_eq!(reads, 1);
    // Exactly the limit still replays.
    let (outcome, ids, _) = run(&stream, "4990-0", 5000, 10);
    assert_eq!(outcome, Outcome::Replay { cursor: None });
    assert_eq!(ids.len(), 10);
  }

  #[test]
  fn up_to_date_or_ahead_of_the_reader() {
    assert_eq!(
      run(&[1, 2, 3], "3-0", 3, 100),
      (Outcome::Replay { cursor: None }, vec![], 0)
    );
    // Another instance read further: the id exists, so skip up to it live.
    let (outcome, ids, reads) = run(&[1, 2, 3, 4], "4-0", 2, 100);
    assert_eq!(
      outcome,
      Outcome::Replay {
        cursor: Some(id(4))
      }
    );
    assert!(ids.is_empty());
    assert_eq!(reads, 1);
    assert_eq!(
      run(&[1, 2], "9-0", 2, 100).0,
      Outcome::Reset("no longer in the stream")
    );
  }
}
