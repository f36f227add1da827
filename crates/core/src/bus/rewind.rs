//! A stream that went backwards or lost entries: trimmed while this
//! instance was away, its tail lost, or replaced altogether.

use redis::{RedisResult, Value};

use super::entry::{self, BusFrame, EntryId};
use super::live::PresenceCheck;
use super::resp::{info_id, info_number, parse_range, value_id};
use super::session::{connection_failed, Session};
use super::task::BusTask;
use crate::frame;

impl BusTask {
  /// On reconnecting: whether entries after `position` were dropped while
  /// this instance was away. Deleted (`XDEL`): Redis records the newest
  /// deleted id. Trimmed (which does not record it): the position is gone
  /// from the stream and the stream has dropped entries in its life
  /// (`entries-added` past its length). A stream Redis lost altogether
  /// (restarted empty), where others have written anew, lost nothing this
  /// instance could still read.
  pub(super) async fn lost_while_away(
    &self,
    session: &mut Session,
    position: EntryId,
  ) -> RedisResult<bool> {
    if position == EntryId::ZERO {
      return Ok(false);
    }
    let info: RedisResult<Value> = redis::cmd("XINFO")
      .arg("STREAM")
      .arg(&self.config.stream)
      .query_async(&mut session.commands)
      .await;
    // No such key: nothing to read, nothing known lost.
    let Ok(info) = info else { return Ok(false) };
    if info_id(&info, b"max-deleted-entry-id").is_some_and(|deleted| deleted > position) {
      return Ok(true);
    }
    let at: Value = redis::cmd("XRANGE")
      .arg(&self.config.stream)
      .arg(position.to_string())
      .arg(position.to_string())
      .query_async(&mut session.commands)
      .await?;
    if !parse_range(&at).is_empty() {
      return Ok(false);
    }
    let added = info_number(&info, b"entries-added");
    let length = info_number(&info, b"length");
    Ok(matches!((added, length), (Some(added), Some(length)) if added > length))
  }

  /// Whether the stream went backwards: deleted, or replaced by one whose
  /// newest id is below the reader's position (another producer had written
  /// ids in the future, then the stream was lost: `DEL`, `FLUSHALL`, Redis
  /// restarted empty). The blocking read, after the position, would then
  /// pass every new entry by; the stream is read again from its start.
  pub(super) async fn check_replaced(&mut self, session: &mut Session) -> RedisResult<()> {
    let Some(position) = self.machine.position.filter(|p| *p != EntryId::ZERO) else {
      return Ok(());
    };
    let went_back = match self.newest_generated(session).await? {
      Newest::Id(newest) => newest < position,
      Newest::Unknown => false,
      // No such key: the stream is gone (Redis restarted empty, say). New
      // entries will have ids from Redis's clock: only a position in the
      // future would pass them by.
      Newest::Missing => {
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
          .query_async(&mut session.commands)
          .await?;
        position.ms > secs * 1000 + micros / 1000
      }
    };
    if went_back {
      self.went_back(session).await?;
    }
    Ok(())
  }

  /// The stream's ids went below the position. Either its tail was lost
  /// (a failover to a replica that had not received it, a restart from a
  /// snapshot): the newest entry at or below the position is one this
  /// instance delivered, and reading resumes after it, with nothing to
  /// tell the clients (they had the lost entries live). Or it was replaced
  /// (deleted, flushed, restarted empty): [`BusTask::replaced`].
  pub(super) async fn went_back(&mut self, session: &mut Session) -> RedisResult<()> {
    let Some(position) = self.machine.position else {
      return Ok(());
    };
    let newest: Value = redis::cmd("XREVRANGE")
      .arg(&self.config.stream)
      .arg(position.to_string())
      .arg("-")
      .arg("COUNT")
      .arg(1)
      .query_async(&mut session.commands)
      .await?;
    let kept = parse_range(&newest)
      .into_iter()
      .next()
      .and_then(|(id, entry)| {
        let len = entry.ok()?.data.len();
        self.recent.contains(&(id, len)).then_some(id)
      });
    match kept {
      Some(id) => self.truncated(id),
      None => self.replaced(),
    }
    Ok(())
  }

  /// The stream lost its tail after `kept`, an entry delivered here: read
  /// on after it. Flushes waiting for the lost ids are answered.
  pub(super) fn truncated(&mut self, kept: EntryId) {
    let actions = self.machine.truncated(kept);
    self.shared.live().position = self.machine.position;
    self.recent.retain(|(id, _)| *id <= kept);
    self.settle_all(actions);
  }

  /// The stream's `last-generated-id`; an error when there is no stream.
  /// By script where Redis runs them: `XINFO STREAM` also sends the first
  /// and the last entry, which can weigh megabytes, on every idle read.
  pub(super) async fn newest_generated(&mut self, session: &mut Session) -> RedisResult<Newest> {
    let known = |id: Option<EntryId>| id.map_or(Newest::Unknown, Newest::Id);
    if self.presence == PresenceCheck::Script {
      let newest: RedisResult<Value> = redis::cmd("EVAL")
        .arg(NEWEST_SCRIPT)
        .arg(1)
        .arg(&self.config.stream)
        .query_async(&mut session.commands)
        .await;
      match newest {
        Ok(Value::Int(0)) => return Ok(Newest::Missing),
        Ok(newest) => return Ok(known(value_id(&newest))),
        Err(e) if connection_failed(&e) => return Err(e),
        // Scripts refused: XINFO from now on.
        Err(_) => self.presence = PresenceCheck::Range,
      }
    }
    let info: RedisResult<Value> = redis::cmd("XINFO")
      .arg("STREAM")
      .arg(&self.config.stream)
      .query_async(&mut session.commands)
      .await;
    match info {
      Ok(info) => Ok(known(info_id(&info, b"last-generated-id"))),
      Err(e) if connection_failed(&e) => Err(e),
      // No such key (or not a stream).
      Err(_) => Ok(Newest::Missing),
    }
  }

  /// The stream was replaced: every local connection gets `reset` (what it
  /// should have had may be gone), the reader starts over at the new
  /// stream's first entry, and flushes waiting for ids of the old one are
  /// answered.
  pub(super) fn replaced(&mut self) {
    self.recent.clear();
    self.reset_everyone();
    let actions = self.machine.replaced();
    self.shared.live().position = self.machine.position;
    self.settle_all(actions);
  }

  /// `event: reset` (no id) to every local connection: entries they should
  /// have had are gone from the stream.
  pub(super) fn reset_everyone(&self) {
    let stats = &self.shared.stats;
    stats.add(&stats.resets, 1);
    let reset = frame::reset_chunk();
    self.shared.deliver(
      vec![BusFrame {
        id: None,
        route: entry::Route::All,
        chunk: reset,
      }],
      None,
    );
  }
}

/// What Redis says of the stream's newest generated id.
pub(super) enum Newest {
  Id(EntryId),
  /// No such key: the stream is gone.
  Missing,
  /// A stream, but no id in the answer.
  Unknown,
}

/// The `last-generated-id` of the stream `KEYS[1]` (0 when there is none),
/// without the entries `XINFO STREAM` also sends.
pub(super) const NEWEST_SCRIPT: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
  local info = redis.call('XINFO', 'STREAM', KEYS[1]) \
  for i = 1, #info, 2 do if info[i] == 'last-generated-id' then return info[i + 1] end end \
  return false";
