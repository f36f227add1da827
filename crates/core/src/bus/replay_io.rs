//! Replays' I/O: waiting replays served between live reads, grouped by
//! where they start, read in bounded steps and shared out per client.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redis::{RedisResult, Value};

use super::config::MAX_WAITING_REPLAYS;
use super::entry::{BusFrame, Entry, EntryId, Malformed};
use super::replay::{Outcome, ReplayFrom, ReplayPlan, Step};
use super::request::{BusEvent, ReplayRequest, ReplayTarget};
use super::resp::{data_bytes, parse_range};
use super::session::Session;
use super::task::BusTask;
use crate::frame;

impl BusTask {
  /// Replays that cannot be served now (Redis is away) are answered with
  /// `reset` at once, so their connections get local broadcasts meanwhile
  /// instead of waiting, held, for a Redis that may not come back.
  pub(super) fn reset_waiting_replays(&mut self, why: &'static str) {
    let until = self.position.unwrap_or_default();
    for replay in std::mem::take(&mut self.replays) {
      self.answer(replay, &Outcome::Reset(why), &[], until);
    }
  }

  /// A replay that must wait for the next session. The queue is bounded:
  /// clients reconnecting in a loop during an outage cannot grow it without
  /// end; past the bound a client gets `reset` at once.
  pub(super) fn wait_for_replay(&mut self, replay: ReplayRequest) {
    if self.replays.len() < MAX_WAITING_REPLAYS {
      self.replays.push(replay);
    } else {
      let until = self.position.unwrap_or_default();
      self.answer(
        replay,
        &Outcome::Reset("too many replays waiting"),
        &[],
        until,
      );
    }
  }

  /// Serves the waiting replays against the stream up to the position.
  /// Requests from the same id (a whole instance's clients after a deploy)
  /// share one read.
  pub(super) async fn serve_replays(&mut self, session: &mut Session) -> RedisResult<()> {
    let until = self.position.unwrap_or_default();
    let requests = std::mem::take(&mut self.replays);
    let mut groups: HashMap<ReplayFrom, Vec<ReplayRequest>> = HashMap::new();
    for request in requests {
      groups
        .entry(request.from.clone())
        .or_default()
        .push(request);
    }
    let mut groups: Vec<(ReplayFrom, Vec<ReplayRequest>)> = groups.into_iter().collect();
    while let Some((from, group)) = groups.pop() {
      let read = self.read_replay(session, &from, until).await;
      let (outcome, frames) = match read {
        Ok(read) => read,
        Err(e) => {
          // Served in the next session.
          self.replays.extend(group);
          for (_, rest) in groups {
            self.replays.extend(rest);
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

  /// One request's share of a replay read: the frames routed to it, within
  /// the byte bound, or `reset`.
  pub(super) fn answer(
    &self,
    request: ReplayRequest,
    outcome: &Outcome,
    frames: &[BusFrame],
    until: EntryId,
  ) {
    let stats = &self.shared.stats;
    let reset = || -> Vec<Arc<[u8]>> {
      stats.add(&stats.resets, 1);
      let newest = (until != EntryId::ZERO).then(|| until.to_string());
      vec![frame::http_chunk(&frame::reset_frame(newest.as_deref())).into()]
    };
    let (frames, cursor) = match outcome {
      Outcome::Reset(_) => (reset(), None),
      Outcome::Replay { cursor } => {
        let mine: Vec<Arc<[u8]>> = frames
          .iter()
          .filter(|f| f.route.matches(&request.client, &request.channels))
          .map(|f| f.chunk.clone())
          .collect();
        let bytes: usize = mine.iter().map(|c| c.len()).sum();
        if bytes > self.config.max_replay_bytes {
          (reset(), None)
        } else {
          if !mine.is_empty() {
            stats.add(&stats.replays, 1);
          }
          (mine, *cursor)
        }
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
