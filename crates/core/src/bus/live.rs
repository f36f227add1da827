//! Live reading: the blocking `XREAD`, where a session resumes, and what a
//! batch read is checked for before it is delivered.

use std::io;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::config::{BLOCK, RECENT};
use super::entry::{BusFrame, Entry, EntryId, Malformed};
use super::resp::{data_bytes, parse_range, parse_read};
use super::session::{connection_failed, Session};
use super::task::{BusTask, End};

impl BusTask {
  /// At the start of a session: the first one starts at the stream's
  /// newest entry; later ones resume where the last read ended, and if
  /// entries after that were trimmed meanwhile, local clients get `reset`.
  pub(super) async fn resume(&mut self, session: &mut Session) -> RedisResult<()> {
    let stream = self.config.stream.clone();
    match self.machine.position {
      None => {
        let newest: Value = redis::cmd("XREVRANGE")
          .arg(&stream)
          .arg("+")
          .arg("-")
          .arg("COUNT")
          .arg(1)
          .query_async(&mut session.commands)
          .await?;
        let newest = parse_range(&newest).last().map(|(id, _)| *id);
        self.machine.started_at(newest.unwrap_or_default());
        let early = {
          let mut live = self.shared.live();
          live.position = self.machine.position;
          std::mem::take(&mut live.early)
        };
        // Connections registered before this first session may have missed
        // entries appended meanwhile (none if the stream is still empty).
        if early && newest.is_some() {
          self.reset_everyone();
        }
      }
      Some(position) => {
        // Entries other instances wrote meanwhile come with the next read;
        // those trimmed meanwhile cannot, and every local client is told.
        if self.lost_while_away(session, position).await? {
          self.reset_everyone();
          // Told: the first read's own check of the position stays quiet.
          self.gap_reported = Some(position);
        }
        self.check_replaced(session).await?;
      }
    }
    self.refresh_presence(session).await
  }

  /// A batch the blocking read returned, checked for a gap. Trimming
  /// (`MAXLEN ~ maxLen`) keeps at least the newest `maxLen` entries and
  /// takes the oldest first, so a batch of fewer than `maxLen` entries
  /// and fewer than the `count` asked for (every entry after the
  /// position) proves the position was still there and nothing between
  /// was lost. (A catch-up read needs no check: it was atomic with its
  /// presence check, see [`xread`].) A bigger one
  /// means the reader fell behind: it is read again atomically with a check
  /// that the position is still in the stream, and if it is not, every
  /// local client gets `reset` before what follows the gap.
  pub(super) async fn check_lag(
    &mut self,
    session: &mut Session,
    position: EntryId,
    count: usize,
    entries: Vec<(EntryId, Result<Entry, Malformed>)>,
  ) -> RedisResult<Vec<(EntryId, Result<Entry, Malformed>)>> {
    let threshold = count.min(self.config.max_len);
    if entries.len() < threshold || position == EntryId::ZERO {
      return Ok(entries);
    }
    let stream = &self.config.stream;
    let at = position.to_string();
    let (here, read): (Value, Value) = redis::pipe()
      .atomic()
      .cmd("XRANGE")
      .arg(stream)
      .arg(&at)
      .arg(&at)
      .cmd("XREAD")
      .arg("COUNT")
      .arg(count)
      .arg("STREAMS")
      .arg(stream)
      .arg(&at)
      .query_async(&mut session.commands)
      .await?;
    if parse_range(&here).is_empty() {
      self.reset_everyone();
    }
    Ok(parse_read(&read))
  }

  /// What one blocking read brought: delivered, after the checks it calls
  /// for. `Some` when the session ends.
  pub(super) async fn on_read(
    &mut self,
    session: &mut Session,
    position: EntryId,
    count: usize,
    took: Duration,
    result: RedisResult<Read>,
  ) -> Option<End> {
    let failed = |e: redis::RedisError| Some(End::Failed(e));
    if result.is_ok() {
      session.read_served();
    }
    match result {
      // On a Cluster, an error that moves the reader (the slot migrated,
      // a failover) does not end the session: appends, replays and
      // presence go on through the cluster connection meanwhile.
      Err(e) if session.node.is_some() && super::cluster::redirect_of(&e).is_some() => {
        if let Err(e) = session.redirect_reader(e).await {
          return failed(e);
        }
      }
      Ok(Read {
        after_present: false,
        entries,
        ..
      }) if self.gap_reported != Some(position) => {
        if let Err(e) = self.after_gap(session, position, entries).await {
          return failed(e);
        }
      }
      Ok(Read { entries, .. }) if entries.is_empty() => {
        self.read_size.replied(0, 0, took);
        // Nothing new: a blocked read that timed out (or was
        // interrupted). A stream that went backwards would look
        // exactly like this for ever.
        if let Err(e) = self.check_replaced(session).await {
          return failed(e);
        }
      }
      Ok(Read {
        entries,
        atomic: true,
        ..
      }) => {
        self
          .read_size
          .replied(entries.len(), data_bytes(&entries), took);
        self.delivered(entries);
      }
      Ok(Read { entries, .. }) => {
        self
          .read_size
          .replied(entries.len(), data_bytes(&entries), took);
        match self.check_lag(session, position, count, entries).await {
          Ok(entries) => self.delivered(entries),
          Err(e) => return failed(e),
        }
      }
      Err(e) if self.presence == PresenceCheck::Script && !connection_failed(&e) => {
        // Redis refused the script (scripting disabled, say): the
        // next reads check with XRANGE, which brings the entry.
        self.presence = PresenceCheck::Range;
      }
      Err(e) => {
        if e.is_timeout() {
          // A reply too slow to arrive (a slow link, huge entries):
          // the next session asks for one entry, then more.
          self.read_size.timed_out();
        }
        return failed(e);
      }
    }
    None
  }

  /// The position was trimmed away before this read: what came after it
  /// may be gone unread. Told once per position.
  async fn after_gap(
    &mut self,
    session: &mut Session,
    position: EntryId,
    entries: Vec<(EntryId, Result<Entry, Malformed>)>,
  ) -> RedisResult<()> {
    self.gap_reported = Some(position);
    if entries.is_empty() {
      // Gone with nothing after it: the stream may have been
      // replaced (which resets and starts over by itself).
      self.check_replaced(session).await?;
    }
    // Trimmed past it (or deleted): entries after it may be gone
    // unread. A stream Redis lost and others began anew lost
    // nothing this instance could still read.
    if self.machine.position == Some(position) && self.lost_while_away(session, position).await? {
      self.reset_everyone();
    }
    if !entries.is_empty() {
      self.delivered(entries);
    }
    Ok(())
  }

  /// Entries read live: framed once, delivered, and the position moves on.
  pub(super) fn delivered(&mut self, entries: Vec<(EntryId, Result<Entry, Malformed>)>) {
    let stats = &self.shared.stats;
    let mut frames = Vec::with_capacity(entries.len());
    let mut position = None;
    for (id, entry) in entries {
      position = Some(id);
      stats.add(&stats.entries_read, 1);
      match entry {
        Ok(entry) => {
          if self.recent.len() == RECENT {
            self.recent.pop_front();
          }
          self.recent.push_back((id, entry.data.len()));
          if !self.machine.seen(&entry) {
            frames.push(BusFrame::new(Some(id), &entry));
          }
        }
        Err(_) => stats.add(&stats.malformed, 1),
      }
    }
    let Some(position) = position else { return };
    self.shared.deliver(frames, Some(position));
    let actions = self.machine.advanced(position);
    self.settle_all(actions);
  }
}

/// One blocking read after `after`; empty when it timed out or was
/// unblocked. A server that stops answering altogether fails it.
/// What one blocking read found.
pub(super) struct Read {
  /// Whether the entry read after was still in the stream just before:
  /// if not, entries after it may have been trimmed unread (another
  /// producer trimming to a shorter `MAXLEN`, say).
  pub(super) after_present: bool,
  /// The presence check and the read were one atomic step (a catch-up
  /// read): the entries follow the position with nothing trimmed between.
  pub(super) atomic: bool,
  pub(super) entries: Vec<(EntryId, Result<Entry, Malformed>)>,
}

/// How a blocking read checks that the entry it reads after is still in
/// the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PresenceCheck {
  /// A script that answers 1 or 0: the entry stays in Redis (an entry can
  /// weigh megabytes, and the check runs before every read).
  Script,
  /// `XRANGE P P`, for a Redis that refuses scripts: brings the entry.
  Range,
}

/// Whether the entry `ARGV[1]` is in the stream `KEYS[1]`, without sending it.
pub(super) const PRESENT_SCRIPT: &str = "return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])";

/// One read of at most `count` entries after `after`, in one round trip
/// with a check that `after` is still in the stream. Blocking, unless
/// `catch_up` (the reader is behind, so entries are waiting): then the
/// check and the read are one `MULTI`/`EXEC`, so no trim can come between
/// them and a present `after` proves nothing after it was lost. (A read
/// inside `MULTI` never blocks, hence only when behind; a Cluster reader
/// sent by `ASK` always blocks.) Empty when it timed out or was unblocked,
/// or had nothing to catch up on. A server that stops answering fails it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn xread(
  mut reader: MultiplexedConnection,
  stream: String,
  after: EntryId,
  count: usize,
  deadline: Duration,
  presence: PresenceCheck,
  asking: bool,
  catch_up: bool,
) -> RedisResult<Read> {
  let atomic = catch_up && !asking;
  let mut pipe = redis::pipe();
  if atomic {
    pipe.atomic();
  }
  let check = after != EntryId::ZERO;
  // A Cluster slot migrating to the reader's node: each keyed command
  // is preceded by `ASKING` (it holds for one command).
  let ask = |pipe: &mut redis::Pipeline| {
    if asking {
      pipe.cmd("ASKING").ignore();
    }
  };
  if check {
    ask(&mut pipe);
    match presence {
      PresenceCheck::Script => pipe
        .cmd("EVAL")
        .arg(PRESENT_SCRIPT)
        .arg(1)
        .arg(&stream)
        .arg(after.to_string()),
      PresenceCheck::Range => pipe
        .cmd("XRANGE")
        .arg(&stream)
        .arg(after.to_string())
        .arg(after.to_string())
        .arg("COUNT")
        .arg(1),
    };
  }
  ask(&mut pipe);
  pipe.cmd("XREAD").arg("COUNT").arg(count);
  if !atomic {
    pipe.arg("BLOCK").arg(BLOCK.as_millis() as u64);
  }
  pipe.arg("STREAMS").arg(&stream).arg(after.to_string());
  let read = pipe.query_async::<Vec<Value>>(&mut reader);
  let replies = tokio::time::timeout(deadline, read).await.map_err(|_| {
    redis::RedisError::from(io::Error::new(
      io::ErrorKind::TimedOut,
      "Redis did not answer XREAD",
    ))
  })??;
  let (here, reply) = match (check, replies.as_slice()) {
    (true, [here, reply]) => (Some(here), reply),
    (false, [reply]) => (None, reply),
    _ => {
      return Ok(Read {
        after_present: true,
        atomic,
        entries: Vec::new(),
      })
    }
  };
  Ok(Read {
    atomic,
    after_present: here.is_none_or(|here| match here {
      Value::Int(n) => *n > 0,
      range => !parse_range(range).is_empty(),
    }),
    entries: parse_read(reply),
  })
}
