//! Replay from the stream, planned without I/O: which bounded `XRANGE`
//! to issue next, when to stop, and when the answer is `reset` instead.
//!
//! A reconnecting client names the last entry it has (X). The bus has
//! delivered live everything up to its reader's position (L), so the replay
//! is the entries in (X, L], read in batches of at most
//! [`ReplayPlan::BATCH`], at most `limit` entries and `max_bytes` of data in
//! all: a client asking from far back costs one bounded read and gets
//! `reset`, never an unbounded reply. The first read asks for a few entries
//! ([`ReplayPlan::FIRST`]); later ones for as many as the bytes left fit at
//! the size seen so far, so a step between two live reads stays near the
//! byte cap whatever the entries weigh. X must still be
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
  limit: usize,
  max_bytes: usize,
  /// Entries of (from, until] counted so far.
  read: usize,
  /// Every entry an `XRANGE` brought so far, and their data bytes.
  fetched: usize,
  bytes: usize,
  /// The count the last `XRANGE` asked for: a shorter reply is the end.
  asked: usize,
  /// The last id fed, once a batch came back.
  last: Option<EntryId>,
  /// Entries in (from, until], in order, as fed.
  entries: Vec<EntryId>,
}

impl ReplayPlan {
  /// The largest count of one `XRANGE`.
  pub const BATCH: usize = 256;
  /// The count of the first `XRANGE` (before any entry's size is known).
  pub const FIRST: usize = 4;

  /// Plans the replay from `from` while the reader has delivered everything
  /// up to `until`, of at most `limit` entries and `max_bytes` of data read.
  /// Returns the plan and its first step.
  pub fn start(
    from: &ReplayFrom,
    until: EntryId,
    limit: usize,
    max_bytes: usize,
  ) -> (ReplayPlan, Step) {
    let mut plan = ReplayPlan {
      from: EntryId::ZERO,
      until,
      limit,
      max_bytes,
      read: 0,
      fetched: 0,
      bytes: 0,
      asked: 0,
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
        plan.asked = Self::FIRST.min(limit.saturating_add(1));
        let step = Step::Read {
          start: format!("({}", EntryId::ZERO),
          end: until.to_string(),
          count: plan.asked,
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
    plan.asked = Self::FIRST.min(limit.saturating_add(1)) + 1;
    let step = Step::Read {
      start: from.to_string(),
      end: if from > until {
        from.to_string()
      } else {
        until.to_string()
      },
      count: plan.asked,
    };
    (plan, step)
  }

  /// The ids of the entries to replay, in order (after [`Outcome::Replay`]).
  pub fn entries(&self) -> &[EntryId] {
    &self.entries
  }

  /// Feeds the ids of a batch `XRANGE` returned, and the data bytes of the
  /// batch; returns the next step.
  pub fn feed(&mut self, ids: &[EntryId], bytes: usize) -> Step {
    let asked = self.asked;
    self.fetched += ids.len();
    self.bytes = self.bytes.saturating_add(bytes);
    if self.bytes > self.max_bytes {
      // No client can be sent more than that: reading on is wasted work.
      self.entries.clear();
      return Step::Done(Outcome::Reset("more bytes missed than maxBufferedBytes"));
    }
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
    // As many as the bytes left fit at the mean size so far (one more, to
    // cross the cap rather than stop short of it), within the entry limit.
    let mean = (self.bytes / self.fetched.max(1)).max(1);
    let fit = (self.max_bytes - self.bytes) / mean + 1;
    let left = self.limit.saturating_sub(self.read).saturating_add(1);
    self.asked = fit.min(left).clamp(1, Self::BATCH);
    Step::Read {
      start: format!("({last}"),
      end: self.until.to_string(),
      count: self.asked,
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
    run_sized(stream, last_event_id, until, limit, 1, usize::MAX).0
  }

  /// As [`run`], every entry `size` bytes and a byte cap; also returns the
  /// most entries one read asked for.
  fn run_sized(
    stream: &[u64],
    last_event_id: &str,
    until: u64,
    limit: usize,
    size: usize,
    max_bytes: usize,
  ) -> ((Outcome, Vec<u64>, usize), usize) {
    let stream: Vec<EntryId> = stream.iter().map(|&ms| id(ms)).collect();
    let from = match last_event_id {
      "start" => ReplayFrom::Start,
      id => ReplayFrom::After(id.to_string()),
    };
    let (mut plan, mut step) = ReplayPlan::start(&from, id(until), limit, max_bytes);
    let mut reads = 0;
    let mut largest = 0;
    loop {
      match step {
        Step::Done(outcome) => {
          let ids = plan.entries().iter().map(|i| i.ms).collect();
          return ((outcome, ids, reads), largest);
        }
        Step::Read { start, end, count } => {
          reads += 1;
          largest = largest.max(count);
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
          step = plan.feed(&batch, batch.len() * size);
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
      ReplayPlan::start(&ReplayFrom::Unknown, id(4), 100, usize::MAX).1,
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
  fn reads_stop_at_the_byte_cap_and_each_asks_only_what_fits() {
    let stream: Vec<u64> = (1..=600).collect();
    // 64 KB entries, a 256 KB cap: the replay needs 599 of them.
    let ((outcome, ids, reads), largest) =
      run_sized(&stream, "1-0", 600, 1000, 64 << 10, 256 << 10);
    assert_eq!(
      outcome,
      Outcome::Reset("more bytes missed than maxBufferedBytes")
    );
    assert!(ids.is_empty());
    // The first read (5 with X) already passes the cap: one read.
    assert_eq!((reads, largest), (1, ReplayPlan::FIRST + 1));
    // 1 KB entries, the same cap: what fits is replayed, in reads sized by it.
    let ((outcome, ids, reads), largest) =
      run_sized(&stream, "400-0", 600, 1000, 1 << 10, 256 << 10);
    assert_eq!(outcome, Outcome::Replay { cursor: None });
    assert_eq!(ids.len(), 200);
    assert!(reads <= 3, "{reads} reads");
    assert!(
      largest > 200 && largest <= ReplayPlan::BATCH,
      "asked for {largest}"
    );
    // 4 KB entries: reads shrink to what the bytes left fit.
    let ((outcome, _, _), largest) = run_sized(&stream, "1-0", 600, 1000, 4 << 10, 256 << 10);
    assert_eq!(
      outcome,
      Outcome::Reset("more bytes missed than maxBufferedBytes")
    );
    assert!(largest <= (256 >> 2) + 1, "asked for {largest}");
  }

  #[test]
  fn far_back_is_capped_after_a_few_bounded_reads() {
    let stream: Vec<u64> = (1..=5000).collect();
    let (outcome, ids, reads) = run(&stream, "1-0", 5000, 10);
    assert_eq!(
      outcome,
      Outcome::Reset("more entries missed than replayLimit")
    );
    assert!(ids.is_empty());
    // 4 entries, then the 7 the limit leaves (one more than fits).
    assert_eq!(reads, 2);
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
