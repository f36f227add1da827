//! Appending: broadcasts batched into one `XADD` pipeline, and the local
//! fallback when Redis is away or the append failed.

use std::sync::atomic::Ordering;

use redis::{RedisResult, Value};

use super::config::APPEND_BATCH;
use super::entry::{BusFrame, Entry};
use super::request::Request;
use super::resp::value_id;
use super::session::Session;
use super::task::BusTask;

impl BusTask {
  /// Delivers entries locally without an id, as during an outage.
  /// `uncertain` when Redis may have taken them after all.
  pub(super) fn fallback(&mut self, entries: Vec<Entry>, uncertain: bool) {
    let stats = &self.shared.stats;
    stats.add(&stats.local_fallbacks, entries.len() as u64);
    let frames = entries
      .iter()
      .map(|entry| BusFrame::new(None, entry))
      .collect();
    if uncertain {
      self.machine.uncertain(&entries);
    }
    self.shared.deliver(frames, None);
  }

  /// Appends `first` and whatever else is queued, in one pipeline.
  pub(super) async fn append(&mut self, session: &mut Session, first: Entry) -> RedisResult<()> {
    let mut entries = vec![first];
    while entries.len() < APPEND_BATCH {
      match self.rx.try_recv() {
        Ok(Request::Append(entry)) => entries.push(entry),
        Ok(other) => {
          // Served right after these appends, in its order.
          self.machine.defer(other);
          break;
        }
        Err(_) => break,
      }
    }
    self.append_batch(session, entries).await
  }

  pub(super) async fn append_batch(
    &mut self,
    session: &mut Session,
    entries: Vec<Entry>,
  ) -> RedisResult<()> {
    if entries.is_empty() {
      return Ok(());
    }
    let count = entries.len();
    let mut pipe = redis::pipe();
    for entry in &entries {
      let retry = entry.retry_text();
      let command = pipe
        .cmd("XADD")
        .arg(&self.config.stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(self.config.max_len)
        .arg("*");
      for (name, value) in entry.fields() {
        command.arg(name).arg(value);
      }
      if let Some(retry) = &retry {
        command.arg("retry").arg(retry);
      }
    }
    let result: RedisResult<Vec<Value>> = pipe.query_async(&mut session.commands).await;
    self
      .shared
      .pending_appends
      .fetch_sub(count, Ordering::Relaxed);
    match result {
      Ok(ids) => {
        let stats = &self.shared.stats;
        stats.add(&stats.entries_written, count as u64);
        if let Some(id) = ids.iter().rev().find_map(value_id) {
          // Redis gave this entry an id at or below what the reader has
          // passed: the stream lost its tail, or was replaced.
          if self.machine.appended(id) {
            self.went_back(session).await?;
          }
        }
        Ok(())
      }
      Err(e) => {
        // Redis may or may not have taken them: delivered here now, and
        // skipped if read back later.
        self.fallback(entries, true);
        Err(e)
      }
    }
  }
}
