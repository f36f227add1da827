//! Replays' I/O: waiting replays served between live reads, grouped by
//! where they start, read in bounded steps and shared out per client.

use std::collections::HashSet;
use std::sync::Arc;

use redis::{RedisResult, Value};

use super::entry::{BusFrame, Entry, EntryId, Malformed};
use super::machine::{share, Share};
use super::replay::{Outcome, ReplayFrom, ReplayPlan, Step};
use super::request::{BusEvent, ReplayRequest, ReplayTarget};
use super::resp::{data_bytes, parse_range};
use super::session::Session;
use super::task::BusTask;
use crate::frame;

impl BusTask {
  /// Serves the waiting replays against the stream up to the position,
  /// one read per group ([`BusMachine::take_replays`]).
  ///
  /// [`BusMachine::take_replays`]: super::machine::BusMachine::take_replays
  pub(super) async fn serve_replays(&mut self, session: &mut Session) -> RedisResult<()> {
    let until = self.machine.until();
    let mut groups = self.machine.take_replays();
    while let Some((from, group)) = groups.pop() {
      let read = self.read_replay(session, &from, until).await;
      let (outcome, frames) = match read {
        Ok(read) => read,
        Err(e) => {
          // Served in the next session.
          self.machine.requeue(group);
          for (_, rest) in groups {
            self.machine.requeue(rest);
          }
          return Err(e);
        }
      };
      for request in group {
        self.answer(request, &outcome, &frames, until);
      }
    }
    Ok(())
  }

  /// The entries after `from` up to `until`, framed once, or a reset.
  pub(super) async fn read_replay(
    &mut self,
    session: &mut Session,
    from: &ReplayFrom,
    until: EntryId,
  ) -> RedisResult<(Outcome, Vec<BusFrame>)> {
    let (mut plan, mut step) = ReplayPlan::start(
      from,
      until,
      self.config.replay_limit,
      self.config.max_replay_bytes,
    );
    let mut read: Vec<(EntryId, Result<Entry, Malformed>)> = Vec::new();
    // The plan stops at the byte cap (past it no client can be sent the
    // replay) and sizes each read by the bytes left, so the reads between
    // two live reads stay bounded whatever the entries weigh.
    let outcome = loop {
      match step {
        Step::Done(outcome) => break outcome,
        Step::Read { start, end, count } => {
          let reply: Value = redis::cmd("XRANGE")
            .arg(&self.config.stream)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut session.commands)
            .await?;
          let batch = parse_range(&reply);
          let ids: Vec<EntryId> = batch.iter().map(|(id, _)| *id).collect();
          step = plan.feed(&ids, data_bytes(&batch));
          read.extend(batch);
        }
      }
    };
    let wanted: HashSet<EntryId> = plan.entries().iter().copied().collect();
    let frames = read
      .into_iter()
      .filter(|(id, _)| wanted.contains(id))
      .filter_map(|(id, entry)| entry.ok().map(|e| BusFrame::new(Some(id), &e)))
      .collect();
    Ok((outcome, frames))
  }

  /// One request's share of a replay read ([`share`]), sent where it goes.
  pub(super) fn answer(
    &self,
    request: ReplayRequest,
    outcome: &Outcome,
    frames: &[BusFrame],
    until: EntryId,
  ) {
    let stats = &self.shared.stats;
    let (frames, cursor) = match share(&request, outcome, frames, self.config.max_replay_bytes) {
      Share::Reset => {
        stats.add(&stats.resets, 1);
        let newest = (until != EntryId::ZERO).then(|| until.to_string());
        let reset: Arc<[u8]> = frame::http_chunk(&frame::reset_frame(newest.as_deref())).into();
        (vec![reset], None)
      }
      Share::Frames { chunks, cursor } => {
        if !chunks.is_empty() {
          stats.add(&stats.replays, 1);
        }
        (chunks, cursor)
      }
    };
    match request.target {
      ReplayTarget::Socket { port, wire } => port.release(wire, frames, cursor),
      ReplayTarget::Stream { key } => self.shared.emit(BusEvent::Replayed {
        key,
        frames,
        cursor,
      }),
    }
  }
}
