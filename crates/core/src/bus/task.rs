//! The bus task: the loop that connects, serves a session, and waits out
//! outages, answering requests throughout.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::RedisResult;
use tokio::sync::mpsc;

use super::config::{BusConfig, BLOCK, COMMAND_TIMEOUT, PRESENCE_EVERY};
use super::entry::EntryId;
use super::error::BusError;
use super::link::{Link, LinkState};
use super::live::{xread, PresenceCheck};
use super::machine::{Action, BusMachine};
use super::read_size::ReadSize;
use super::replay::Outcome;
use super::request::{BusEvent, Request};
use super::session::{connect, connection_failed, unblock_reader, Session, Unblock, UNBLOCK_RETRY};
use super::shared::BusShared;
use super::target::Target;

/// Why a session ended.
pub(super) enum End {
  Stop,
  Failed(redis::RedisError),
}

/// The bus thread's state: its I/O, and the [`BusMachine`] that decides.
pub(super) struct BusTask {
  /// How each blocking read checks its position is still in the stream.
  pub(super) presence: PresenceCheck,
  /// The last [`RECENT`](super::config::RECENT) entries delivered (id,
  /// data length): a stream that went back but still holds one of them
  /// lost its tail, it was not replaced ([`BusTask::went_back`]).
  pub(super) recent: VecDeque<(EntryId, usize)>,
  pub(super) client: Target,
  pub(super) config: BusConfig,
  pub(super) presence_key: String,
  /// What every presence key of the stream starts with ([`keys::presence_prefix`]).
  ///
  /// [`keys::presence_prefix`]: super::keys::presence_prefix
  pub(super) presence_prefix: String,
  pub(super) shared: Arc<BusShared>,
  pub(super) rx: mpsc::UnboundedReceiver<Request>,
  pub(super) link: Link,
  /// What becomes of requests, replays and flushes, and the position.
  pub(super) machine: BusMachine,
  /// How much one `XREAD` asks for, and how long its reply may take.
  pub(super) read_size: ReadSize,
  /// The position a trimmed-away `reset` was sent for, so it is sent once.
  pub(super) gap_reported: Option<EntryId>,
}

impl BusTask {
  pub(super) async fn run(mut self) {
    loop {
      let session = match self.connect_or_request().await {
        Some(Ok(session)) => session,
        Some(Err(error)) => {
          if self.wait_out(&error.to_string()).await {
            break;
          }
          continue;
        }
        None => break,
      };
      match self.serve(session).await {
        End::Stop => break,
        End::Failed(error) => {
          if self.after_failure() || self.wait_out(&error.to_string()).await {
            break;
          }
        }
      }
    }
    self.link.close();
    self.shared.set_state(LinkState::Closed);
    // Requests still queued get their answers: nothing more will come.
    self.rx.close();
    let mut queued = Vec::new();
    while let Ok(request) = self.rx.try_recv() {
      queued.push(request);
    }
    let actions = self.machine.closed(queued);
    self.settle_all(actions);
  }

  /// A session failed ([`BusMachine::session_failed`]). True when a
  /// request deferred in it was `Stop`.
  pub(super) fn after_failure(&mut self) -> bool {
    let (stop, actions) = self.machine.session_failed();
    self.settle_all(actions);
    stop
  }

  /// Connects, answering requests meanwhile. `None` when told to stop.
  pub(super) async fn connect_or_request(&mut self) -> Option<RedisResult<Session>> {
    let client = self.client.clone();
    let mut attempt = Box::pin(connect(client, self.config.stream.clone()));
    loop {
      tokio::select! {
        result = &mut attempt => return Some(result),
        request = self.rx.recv() => match request {
          None | Some(Request::Stop) => return None,
          Some(request) => self.offline(request),
        },
      }
    }
  }

  /// After a failure: reports it (once per outage) and waits out the
  /// backoff, answering requests meanwhile. True when told to stop.
  pub(super) async fn wait_out(&mut self, error: &str) -> bool {
    let (delay, notice) = self.link.failed(error);
    self.shared.set_state(LinkState::Disconnected);
    self.machine.link_failed();
    if let Some(notice) = notice {
      self.shared.emit(BusEvent::Link(notice));
    }
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
      tokio::select! {
        () = &mut sleep => return false,
        request = self.rx.recv() => match request {
          None | Some(Request::Stop) => return true,
          Some(request) => self.offline(request),
        },
      }
    }
  }

  /// A request while Redis is away ([`BusMachine::offline`]).
  pub(super) fn offline(&mut self, request: Request) {
    let actions = self.machine.offline(request);
    self.settle_all(actions);
  }

  /// Carries out actions outside a session: none needs Redis there.
  pub(super) fn settle_all(&mut self, actions: Vec<Action>) {
    for action in actions {
      let io = self.settle(action);
      debug_assert!(io.is_none(), "an action needing Redis outside a session");
    }
  }

  /// Carries out an action that needs no Redis; one that does is returned.
  pub(super) fn settle(&mut self, action: Action) -> Option<Action> {
    match action {
      Action::Reply { request, result } => self.reply(request, result),
      Action::Local(entry) => {
        self.shared.pending_appends.fetch_sub(1, Ordering::Relaxed);
        self.fallback(vec![entry], false);
      }
      Action::Reset { replay, why, until } => {
        self.answer(replay, &Outcome::Reset(why), &[], until);
      }
      // Refreshed when the next session starts (or now, in one).
      Action::DropPresence => self.shared.presence_queued.store(false, Ordering::Relaxed),
      io => return Some(io),
    }
    None
  }

  pub(super) fn reply(&self, request: u32, result: Result<f64, BusError>) {
    self.shared.emit(BusEvent::Reply { request, result });
  }

  /// One session: from connecting to the first failure (or a stop).
  pub(super) async fn serve(&mut self, mut session: Session) -> End {
    if let Err(e) = self.resume(&mut session).await {
      return End::Failed(e);
    }
    self.session_started();
    self.machine.session_started();
    let mut presence = tokio::time::interval(PRESENCE_EVERY);
    loop {
      // Replays happen between reads, so live delivery waits for them:
      // every entry up to the position came from the replay, every later
      // one comes live.
      if self.machine.has_replays() {
        if let Err(e) = self.serve_replays(&mut session).await {
          return End::Failed(e);
        }
      }
      if let Some(end) = self.read_once(&mut session, &mut presence).await {
        return end;
      }
    }
  }

  /// The session is up: the state and the app hear it.
  fn session_started(&mut self) {
    self.shared.set_state(LinkState::Connected);
    let notice = self.link.connected();
    let stats = &self.shared.stats;
    stats
      .reconnects
      .store(self.link.reconnects(), Ordering::Relaxed);
    if let Some(notice) = notice {
      self.shared.emit(BusEvent::Link(notice));
    }
  }

  /// One blocking read, serving the requests and presence ticks that come
  /// while it is in flight. `Some` when the session ends.
  async fn read_once(
    &mut self,
    session: &mut Session,
    presence: &mut tokio::time::Interval,
  ) -> Option<End> {
    let position = self.machine.until();
    // On a Cluster: a reader that was just moved may first have to wait
    // (the slot has no master yet), and one sent by `ASK` says `ASKING`.
    let (pause, asking) = match session.node.as_mut() {
      Some(node) => (node.pause.take(), node.asking),
      None => (None, false),
    };
    let reader = session.reader.clone();
    let stream = self.config.stream.clone();
    let (count, deadline, presence_check, catch_up) = (
      self.read_size.count(),
      self.read_size.deadline(BLOCK + COMMAND_TIMEOUT),
      self.presence,
      self.read_size.behind(),
    );
    let mut read = Box::pin(async move {
      if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
      }
      let sent = tokio::time::Instant::now();
      let read = xread(
        reader,
        stream,
        position,
        count,
        deadline,
        presence_check,
        asking,
        catch_up,
      )
      .await;
      (read, sent.elapsed())
    });
    let mut unblock = Unblock::NotAsked;
    loop {
      tokio::select! {
        biased;
        (result, took) = &mut read => {
          return self.on_read(session, position, count, took, result).await;
        }
        request = self.rx.recv() => {
          let Some(request) = request else { return Some(End::Stop) };
          if let Some(end) = self.handle(session, request, &mut unblock).await {
            return Some(end);
          }
          while let Some(request) = self.machine.next_deferred() {
            if let Some(end) = self.handle(session, request, &mut unblock).await {
              return Some(end);
            }
          }
        }
        () = tokio::time::sleep(UNBLOCK_RETRY), if unblock == Unblock::Missed => {
          if let Err(e) = unblock_reader(session, &mut unblock).await {
            return Some(End::Failed(e));
          }
        }
        _ = presence.tick() => {
          if let Err(e) = self.refresh_presence(session).await {
            return Some(End::Failed(e));
          }
        }
      }
    }
  }

  /// One request during a session; `Some` when the session ends.
  pub(super) async fn handle(
    &mut self,
    session: &mut Session,
    request: Request,
    unblock: &mut Unblock,
  ) -> Option<End> {
    let actions = self.machine.request(request, *unblock != Unblock::NotAsked);
    for action in actions {
      let Some(io) = self.settle(action) else {
        continue;
      };
      if let Some(end) = self.execute(session, io, unblock).await {
        return Some(end);
      }
    }
    None
  }

  /// Carries out an action that needs Redis; `Some` when the session ends.
  async fn execute(
    &mut self,
    session: &mut Session,
    action: Action,
    unblock: &mut Unblock,
  ) -> Option<End> {
    let failed = |e: redis::RedisError| Some(End::Failed(e));
    match action {
      Action::Leave => {
        self.leave(session).await;
        return Some(End::Stop);
      }
      Action::Append(entry) => {
        if let Err(e) = self.append(session, entry).await {
          return Some(End::Failed(e));
        }
        // The stream was found replaced: the blocking read in flight, after
        // the old position, must give way to one from the new start.
        if self.machine.take_reread() {
          if let Err(e) = unblock_reader(session, unblock).await {
            return failed(e);
          }
        }
      }
      Action::Unblock => {
        if let Err(e) = unblock_reader(session, unblock).await {
          return failed(e);
        }
      }
      Action::Count(request) => {
        let result = self.count(session).await;
        // Only a connection that failed ends the session; an answer Redis
        // refused (a key of another program's, say) fails this count alone.
        let lost = result
          .as_ref()
          .err()
          .filter(|e| connection_failed(e))
          .cloned();
        self.reply(request, result.map_err(BusError::Redis));
        if let Some(e) = lost {
          return Some(End::Failed(e));
        }
      }
      Action::RefreshPresence => {
        if let Err(e) = self.refresh_presence(session).await {
          return failed(e);
        }
      }
      // Carried out by `settle`.
      Action::Reply { .. } | Action::Local(_) | Action::Reset { .. } | Action::DropPresence => {}
    }
    None
  }
}
