//! The bus task: the loop that connects, serves a session, and waits out
//! outages, answering requests throughout.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::RedisResult;
use tokio::sync::mpsc;

use super::config::{BusConfig, BLOCK, COMMAND_TIMEOUT, PRESENCE_EVERY};
use super::entry::EntryId;
use super::link::{Link, LinkState};
use super::live::{xread, PresenceCheck};
use super::read_size::ReadSize;
use super::request::{BusEvent, ReplayRequest, Request};
use super::session::{connect, connection_failed, unblock_reader, Session, Unblock, UNBLOCK_RETRY};
use super::shared::BusShared;
use super::target::Target;

/// Why a session ended.
pub(super) enum End {
  Stop,
  Failed(String),
}

/// The bus thread's state.
pub(super) struct BusTask {
  /// How each blocking read checks its position is still in the stream.
  pub(super) presence: PresenceCheck,
  /// The last [`RECENT`] entries delivered (id, data length): a stream that
  /// went back but still holds one of them lost its tail, it was not
  /// replaced ([`BusTask::went_back`]).
  pub(super) recent: VecDeque<(EntryId, usize)>,
  pub(super) client: Target,
  pub(super) config: BusConfig,
  pub(super) presence_key: String,
  pub(super) shared: Arc<BusShared>,
  pub(super) rx: mpsc::UnboundedReceiver<Request>,
  pub(super) link: Link,
  /// The newest entry delivered live (L); `None` before the first session.
  pub(super) position: Option<EntryId>,
  /// The newest entry this instance appended.
  pub(super) last_written: Option<EntryId>,
  pub(super) replays: Vec<ReplayRequest>,
  /// Flush requests waiting for the reader to pass an id.
  pub(super) flushes: Vec<(u32, EntryId)>,
  /// Origins of appends delivered locally because their `XADD` failed
  /// half-way: if Redis did take them, reading them back must not deliver
  /// them twice.
  pub(super) uncertain: HashSet<String>,
  /// A request taken off the queue while batching appends, served next.
  pub(super) deferred: Vec<Request>,
  /// The position moved back ([`BusTask::replaced`], [`BusTask::truncated`])
  /// while a read was in flight: it is interrupted.
  pub(super) reread: bool,
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
          if self.after_failure() || self.wait_out(&error).await {
            break;
          }
        }
      }
    }
    self.link.close();
    self.shared.set_state(LinkState::Closed);
    // Requests still queued get their answers: nothing more will come.
    self.rx.close();
    for request in std::mem::take(&mut self.deferred) {
      self.offline(request);
    }
    while let Ok(request) = self.rx.try_recv() {
      self.offline(request);
    }
    for (request, _) in std::mem::take(&mut self.flushes) {
      self.reply(request, Ok(0.0));
    }
  }

  /// A session failed: a request taken off the queue while batching (and
  /// not served yet) is served offline, and flushes waiting for entries to
  /// come back are answered (none will while Redis is away). True when one
  /// of those requests was `Stop`.
  pub(super) fn after_failure(&mut self) -> bool {
    let mut stop = false;
    for request in std::mem::take(&mut self.deferred) {
      match request {
        Request::Stop => stop = true,
        request => self.offline(request),
      }
    }
    for (request, _) in std::mem::take(&mut self.flushes) {
      self.reply(request, Ok(0.0));
    }
    self.reset_waiting_replays("Redis is not connected");
    stop
  }

  /// Connects, answering requests meanwhile. `None` when told to stop.
  pub(super) async fn connect_or_request(&mut self) -> Option<RedisResult<Session>> {
    let client = self.client.clone();
    let mut attempt = Box::pin(connect(client));
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

  /// A request while Redis is away: appends are delivered locally at once
  /// (without an id), counts fail, flushes are done (nothing can be read
  /// back), replays get `reset` (during the first connect they wait).
  pub(super) fn offline(&mut self, request: Request) {
    match request {
      Request::Append(entry) => {
        self.shared.pending_appends.fetch_sub(1, Ordering::Relaxed);
        self.fallback(vec![entry], false);
      }
      Request::Replay(replay) => {
        self.wait_for_replay(replay);
        // Before the first session (the first connect still under way) a
        // replay waits for it; once Redis has gone away, it cannot wait.
        if LinkState::from_u8(self.shared.state.load(Ordering::SeqCst)) == LinkState::Disconnected {
          self.reset_waiting_replays("Redis is not connected");
        }
      }
      Request::Count(request) => self.reply(request, Err("Redis is not connected".into())),
      Request::Flush(request) => self.reply(request, Ok(0.0)),
      // Refreshed when the next session starts.
      Request::Presence => self.shared.presence_queued.store(false, Ordering::Relaxed),
      Request::Stop => {}
    }
  }

  pub(super) fn reply(&self, request: u32, result: Result<f64, String>) {
    self.shared.emit(BusEvent::Reply { request, result });
  }

  /// One session: from connecting to the first failure (or a stop).
  pub(super) async fn serve(&mut self, mut session: Session) -> End {
    if let Err(e) = self.resume(&mut session).await {
      return End::Failed(e.to_string());
    }
    self.session_started();
    let mut presence = tokio::time::interval(PRESENCE_EVERY);
    loop {
      // Replays happen between reads, so live delivery waits for them:
      // every entry up to the position came from the replay, every later
      // one comes live.
      if !self.replays.is_empty() {
        if let Err(e) = self.serve_replays(&mut session).await {
          return End::Failed(e.to_string());
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
    let position = self.position.unwrap_or_default();
    let sent = tokio::time::Instant::now();
    let mut read = Box::pin(xread(
      session.reader.clone(),
      self.config.stream.clone(),
      position,
      self.read_size.count(),
      self.read_size.deadline(BLOCK + COMMAND_TIMEOUT),
      self.presence,
    ));
    let mut unblock = Unblock::NotAsked;
    loop {
      tokio::select! {
        biased;
        result = &mut read => {
          return self.on_read(session, position, sent.elapsed(), result).await;
        }
        request = self.rx.recv() => {
          let Some(request) = request else { return Some(End::Stop) };
          if let Some(end) = self.handle(session, request, &mut unblock).await {
            return Some(end);
          }
          while let Some(request) = self.deferred.pop() {
            if let Some(end) = self.handle(session, request, &mut unblock).await {
              return Some(end);
            }
          }
        }
        () = tokio::time::sleep(UNBLOCK_RETRY), if unblock == Unblock::Missed => {
          if let Err(e) = unblock_reader(session, &mut unblock).await {
            return Some(End::Failed(e.to_string()));
          }
        }
        _ = presence.tick() => {
          if let Err(e) = self.refresh_presence(session).await {
            return Some(End::Failed(e.to_string()));
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
    match request {
      Request::Stop => {
        self.leave(session).await;
        return Some(End::Stop);
      }
      Request::Append(entry) => {
        if let Err(e) = self.append(session, entry).await {
          return Some(End::Failed(e));
        }
        // The stream was found replaced: the blocking read in flight, after
        // the old position, must give way to one from the new start.
        if std::mem::take(&mut self.reread) {
          if let Err(e) = unblock_reader(session, unblock).await {
            return Some(End::Failed(e.to_string()));
          }
        }
      }
      Request::Replay(replay) => {
        self.wait_for_replay(replay);
        if *unblock == Unblock::NotAsked {
          // The reader's XREAD returns at once; the replay is served
          // before the next one.
          if let Err(e) = unblock_reader(session, unblock).await {
            return Some(End::Failed(e.to_string()));
          }
        }
      }
      Request::Count(request) => {
        let result = self.count(session).await;
        // Only a connection that failed ends the session; an answer Redis
        // refused (a key of another program's, say) fails this count alone.
        let failed = result
          .as_ref()
          .err()
          .filter(|e| connection_failed(e))
          .map(|e| e.to_string());
        self.reply(request, result.map_err(|e| e.to_string()));
        if let Some(e) = failed {
          return Some(End::Failed(e));
        }
      }
      Request::Flush(request) => match self.last_written {
        Some(id) if Some(id) > self.position => self.flushes.push((request, id)),
        _ => self.reply(request, Ok(0.0)),
      },
      Request::Presence => {
        self.shared.presence_queued.store(false, Ordering::Relaxed);
        if let Err(e) = self.refresh_presence(session).await {
          return Some(End::Failed(e.to_string()));
        }
      }
    }
    None
  }
}
