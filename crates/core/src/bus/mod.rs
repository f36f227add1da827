//! The Redis bus: one hub across processes and machines.
//!
//! Every event meant for more than one connection (`broadcast`, `publish`,
//! `sendToClient`) is appended to one Redis stream (`XADD ... MAXLEN ~`);
//! every instance, the one that wrote it included, reads the stream back
//! on its bus thread, frames each entry once and hands it to its socket
//! writer threads directly, without the JS thread. Stream-transport
//! connections get a batch of entries through one thread-safe call. The
//! entry id is the SSE `id`, so a client that reconnects to any instance
//! is replayed what it missed from the stream.
//!
//! - [`entry`]: the encoding of an entry, and its frame.
//! - [`gate`]: the per-connection replay gate (no gap, no duplicate).
//! - [`link`]: the connection state and the reconnect backoff.
//! - [`replay`]: replay reads, bounded and planned without I/O.
//! - [`read_size`]: how much one `XREAD` asks for, and how long it may take.
//! - [`target`]: where it connects (one server, or the master Sentinels name).
//!
//! The thread runs a current-thread tokio runtime with two connections: a
//! dedicated one for the blocking `XREAD` (its response timeout off: the
//! redis crate's default 500 ms would fail every `BLOCK` longer than that)
//! and one for everything else (`XADD`, `XRANGE`, presence). A blocking
//! command never shares a multiplexed connection.

pub mod entry;
pub mod gate;
pub mod link;
mod read_size;
pub mod replay;
mod stats;
pub mod target;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use tokio::sync::mpsc;

use crate::frame;
use crate::registry::ConnKey;
use crate::writer::{WireId, WriterPort};
use entry::{BusFrame, Entry, EntryId, Malformed};
use link::{Link, LinkState, Notice};
use read_size::{ReadSize, READ_COUNT};
pub use replay::ReplayFrom;
use replay::{Outcome, ReplayPlan, Step};
pub use stats::{BusStats, BusStatsSnapshot};
use target::{Sentinels, Target};

/// How a hub uses Redis.
#[derive(Debug, Clone)]
pub struct BusConfig {
  pub url: String,
  /// The stream key.
  pub stream: String,
  /// `MAXLEN ~` of every `XADD`: about this many entries are kept, which
  /// is how far back a reconnecting client can be replayed.
  pub max_len: usize,
  /// Most entries one replay reads; a client that missed more gets `reset`.
  pub replay_limit: usize,
  /// Most bytes one replay sends (the hub's `maxBufferedBytes`).
  pub max_replay_bytes: usize,
  /// PEM certificates to trust for `rediss://` instead of the system's
  /// roots (a private CA).
  pub ca: Option<String>,
}

/// How long one `XREAD` blocks. A request that needs the reader (a replay)
/// interrupts it with `CLIENT UNBLOCK`, so this only bounds how long a
/// dead connection can go unnoticed.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries the reader remembers having delivered ([`Reader::went_back`]).
const RECENT: usize = 1024;
/// Appends sent in one pipeline at most.
const APPEND_BATCH: usize = 512;
/// The name of the bus's connections (`CLIENT SETNAME`).
pub const CONNECTION_NAME: &str = "sse-helper-native-bus";
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Response timeout of the command connection: long enough that a loaded
/// machine's stalls are not taken for an outage (an outage that closes the
/// connection is noticed at once), short enough that a Redis that stopped
/// answering is.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Presence: each instance's count lives this long unless refreshed.
const PRESENCE_TTL: Duration = Duration::from_secs(10);
const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// Backoff between reconnect attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Appends that may wait for the bus thread; past it, broadcasts are
/// delivered locally (as during an outage) instead of queueing without end.
pub const MAX_PENDING_APPENDS: usize = 100_000;
/// Replays that may wait for Redis to come back.
const MAX_WAITING_REPLAYS: usize = 10_000;

/// Where a replay goes.
#[derive(Clone)]
pub enum ReplayTarget {
  /// A socket-transport connection: its writer thread gets the frames.
  Socket { port: WriterPort, wire: WireId },
  /// A stream-transport connection: the JS thread writes them.
  Stream { key: ConnKey },
}

/// A reconnecting client's replay request.
#[derive(Clone)]
pub struct ReplayRequest {
  pub from: ReplayFrom,
  pub client: Arc<str>,
  pub channels: Vec<Arc<str>>,
  pub target: ReplayTarget,
}

/// What the bus thread tells the JS thread.
#[derive(Debug)]
pub enum BusEvent {
  Link(Notice),
  /// Live entries for the stream-transport connections.
  Frames(Arc<[BusFrame]>),
  /// A replay for a stream-transport connection: write `frames`, then
  /// release its gate with `cursor`.
  Replayed {
    key: ConnKey,
    frames: Vec<Arc<[u8]>>,
    cursor: Option<EntryId>,
  },
  /// The answer to [`Bus::count`] or [`Bus::flush`].
  Reply {
    request: u32,
    result: Result<f64, String>,
  },
  /// The thread has exited and closed its connections.
  Stopped,
}

enum Request {
  Append(Entry),
  Replay(ReplayRequest),
  Count(u32),
  Flush(u32),
  /// The local count changed: refresh this instance's presence now.
  Presence,
  Stop,
}

/// Where a connection whose headers were just flushed stands: what live
/// delivery has reached at that moment ([`Bus::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
  /// Everything up to this entry was handed to delivery before (0-0: the
  /// stream was empty).
  At(EntryId),
  /// No position known yet: the bus has not had a session.
  Unknown,
}

impl Mark {
  /// The mark as a response carries it: the entry id, or `""`.
  pub fn to_text(self) -> String {
    match self {
      Mark::At(id) => id.to_string(),
      Mark::Unknown => String::new(),
    }
  }

  pub fn parse(text: &str) -> Option<Mark> {
    if text.is_empty() {
      return Some(Mark::Unknown);
    }
    EntryId::parse(text).map(Mark::At)
  }
}

/// How a new connection starts on a hub with a bus ([`Bus::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
  /// Live at once: nothing was delivered since its mark.
  Live,
  /// Held, then replayed from there before any live entry.
  Held(ReplayFrom),
}

/// Live delivery's state, under one lock shared by the bus thread (which
/// delivers) and the JS thread (which registers): a connection registered
/// under it is either in every later delivery or held for a replay that
/// covers them, never between the two.
#[derive(Default)]
struct Live {
  ports: Vec<WriterPort>,
  /// The newest entry handed to delivery; `None` before the first session.
  position: Option<EntryId>,
  /// A connection was registered before the first session: the reader
  /// then starts at the stream's newest entry, so what came in between is
  /// unknown to it and those connections get `reset`.
  early: bool,
}

/// Live delivery's lock, held by the JS thread while it registers a
/// connection ([`Bus::delivery`]).
pub struct DeliveryLock(Arc<Mutex<Live>>);

impl DeliveryLock {
  /// Decides how a new connection starts, and runs `register` (which adds
  /// it to the writer and the stream count) under the lock live delivery
  /// takes, so no entry is delivered between the decision and the
  /// registration. `last_event_id`: the client's own, which always wins;
  /// `mark`: where delivery was when its headers were flushed (`None` when
  /// the app sent them some other way: then now).
  pub fn admit<R>(
    &self,
    last_event_id: Option<&str>,
    mark: Option<Mark>,
    register: impl FnOnce(&Admission) -> R,
  ) -> R {
    let mut live = self.0.lock().unwrap_or_else(|e| e.into_inner());
    let admission = admission(&mut live, last_event_id, mark);
    register(&admission)
  }
}

fn admission(live: &mut Live, last_event_id: Option<&str>, mark: Option<Mark>) -> Admission {
  match (last_event_id, mark, live.position) {
    (Some(id), _, _) => Admission::Held(ReplayFrom::After(id.to_string())),
    // Before the first session nothing is delivered: the session start
    // settles it ([`Live::early`]).
    (None, _, None) => {
      live.early = true;
      Admission::Live
    }
    (None, None, Some(_)) => Admission::Live,
    (None, Some(Mark::At(at)), Some(position)) if at == position => Admission::Live,
    (None, Some(Mark::At(EntryId::ZERO)), Some(_)) => Admission::Held(ReplayFrom::Start),
    (None, Some(Mark::At(at)), Some(_)) => Admission::Held(ReplayFrom::After(at.to_string())),
    // Headers before any position was known, registered once one was:
    // live if nothing was delivered yet, else the gap is unknown.
    (None, Some(Mark::Unknown), Some(EntryId::ZERO)) => Admission::Live,
    (None, Some(Mark::Unknown), Some(_)) => Admission::Held(ReplayFrom::Unknown),
  }
}

/// State both threads see.
struct Shared {
  state: AtomicU8,
  stats: BusStats,
  /// This instance's registered connections (for presence).
  local_count: AtomicUsize,
  /// Stream-transport connections: live entries are handed to the JS
  /// thread only when there are any.
  stream_conns: AtomicUsize,
  /// A presence refresh is queued (at most one is).
  presence_queued: AtomicBool,
  pending_appends: AtomicUsize,
  live: Arc<Mutex<Live>>,
  events: Mutex<Vec<BusEvent>>,
  notify: Arc<dyn Fn() + Send + Sync>,
}

impl Shared {
  fn emit(&self, event: BusEvent) {
    let was_empty = {
      let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
      let was_empty = events.is_empty();
      events.push(event);
      was_empty
    };
    if was_empty {
      (self.notify)();
    }
  }

  fn set_state(&self, state: LinkState) {
    self.state.store(state.to_u8(), Ordering::SeqCst);
  }

  fn live(&self) -> std::sync::MutexGuard<'_, Live> {
    self.live.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Live entries to every local connection they are for: each writer
  /// thread gets the batch (shared, framed once), and the JS thread too if
  /// it has stream connections. `position` is where the reader now is (the
  /// last entry read, delivered or skipped); `None` for frames that are not
  /// stream entries (a reset, a local fallback).
  fn deliver(&self, frames: Vec<BusFrame>, position: Option<EntryId>) {
    let mut live = self.live();
    if position.is_some() {
      live.position = position;
    }
    if frames.is_empty() {
      return;
    }
    let frames: Arc<[BusFrame]> = frames.into();
    for port in &live.ports {
      port.bus(frames.clone());
    }
    if self.stream_conns.load(Ordering::SeqCst) > 0 {
      self.emit(BusEvent::Frames(frames));
    }
  }
}

/// The JS thread's handle on the bus thread. Dropping it stops the thread.
pub struct Bus {
  tx: mpsc::UnboundedSender<Request>,
  shared: Arc<Shared>,
  /// This instance's id in `origin` fields and its presence key.
  instance: String,
  next_seq: u64,
}

/// Checks a Redis URL (and CA) the way the client will read them.
pub fn check_url(url: &str, ca: Option<&str>) -> Result<(), String> {
  client(url, ca).map(|_| ()).map_err(|e| e.to_string())
}

/// Where a URL points; with `ca`, TLS trusts those roots only.
fn client(url: &str, ca: Option<&str>) -> RedisResult<Target> {
  if let Some(sentinels) = Sentinels::parse(url) {
    if ca.is_some() {
      return Err(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "ca is for rediss:// URLs; redis+sentinel:// connects without TLS",
      )));
    }
    return sentinels.map(Target::Sentinel).map_err(|e| {
      redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "a bad Sentinel URL",
        e,
      ))
    });
  }
  direct_client(url, ca).map(Target::Direct)
}

fn direct_client(url: &str, ca: Option<&str>) -> RedisResult<redis::Client> {
  match ca {
    None => redis::Client::open(url),
    #[cfg(target_os = "linux")]
    Some(ca) => redis::Client::build_with_tls(
      url,
      redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
      },
    ),
    #[cfg(not(target_os = "linux"))]
    Some(_) => Err(redis::RedisError::from((
      redis::ErrorKind::InvalidClientConfig,
      "TLS (rediss://, ca) is not available in this platform's build",
    ))),
  }
}

impl Bus {
  /// Starts the bus thread. `notify` is called (from it) when events wait
  /// in [`Bus::take_events`].
  pub fn start(config: BusConfig, notify: Arc<dyn Fn() + Send + Sync>) -> io::Result<Bus> {
    let client = client(&config.url, config.ca.as_deref())
      .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
      state: AtomicU8::new(LinkState::Connecting.to_u8()),
      stats: BusStats::default(),
      local_count: AtomicUsize::new(0),
      stream_conns: AtomicUsize::new(0),
      presence_queued: AtomicBool::new(false),
      pending_appends: AtomicUsize::new(0),
      live: Arc::default(),
      events: Mutex::new(Vec::new()),
      notify,
    });
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
      .enable_io()
      .enable_time()
      .build()?;
    let thread_shared = shared.clone();
    let reader = Reader {
      client,
      presence_key: format!("{}:presence:{}", config.stream, instance),
      config,
      shared: shared.clone(),
      rx,
      link: Link::new(BACKOFF_FIRST, BACKOFF_CAP),
      position: None,
      last_written: None,
      replays: Vec::new(),
      flushes: Vec::new(),
      uncertain: HashSet::new(),
      deferred: Vec::new(),
      reread: false,
      read_size: ReadSize::default(),
      gap_reported: None,
      presence: PresenceCheck::Script,
      recent: VecDeque::with_capacity(RECENT),
    };
    std::thread::Builder::new()
      .name("sse-redis-bus".into())
      .spawn(move || {
        // A panic must neither cross into Node nor go unnoticed: the hub
        // hears `disconnected` and `Stopped`, and delivers locally.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
          runtime.block_on(reader.run());
        }));
        // The connections' driver tasks live on the runtime: dropping it
        // closes their sockets, so `Stopped` means they are closed.
        drop(runtime);
        if outcome.is_err() {
          thread_shared.emit(BusEvent::Link(Notice::Disconnected(
            "the Redis bus thread stopped unexpectedly".into(),
          )));
        }
        thread_shared.set_state(LinkState::Closed);
        thread_shared.emit(BusEvent::Stopped);
      })?;
    Ok(Bus {
      tx,
      shared,
      instance,
      next_seq: 0,
    })
  }

  pub fn state(&self) -> LinkState {
    LinkState::from_u8(self.shared.state.load(Ordering::SeqCst))
  }

  /// Whether a broadcast should go through Redis now: connected, and not
  /// so far behind that appends pile up.
  pub fn accepts_appends(&self) -> bool {
    self.state() == LinkState::Connected
      && self.shared.pending_appends.load(Ordering::Relaxed) < MAX_PENDING_APPENDS
  }

  /// Appends an entry; every instance delivers it once read back.
  pub fn append(&mut self, mut entry: Entry) {
    self.next_seq += 1;
    entry.origin = Some(format!("{}:{}", self.instance, self.next_seq));
    self.shared.pending_appends.fetch_add(1, Ordering::Relaxed);
    let _ = self.tx.send(Request::Append(entry));
  }

  /// A broadcast the JS thread delivered locally because Redis was down.
  pub fn note_local_fallback(&self) {
    self.shared.stats.add(&self.shared.stats.local_fallbacks, 1);
  }

  pub fn replay(&self, request: ReplayRequest) {
    let _ = self.tx.send(Request::Replay(request));
  }

  /// Asks for the number of clients of every live instance; the answer
  /// comes as [`BusEvent::Reply`] with this `request`.
  pub fn count(&self, request: u32) {
    if self.tx.send(Request::Count(request)).is_err() {
      self.shared.emit(BusEvent::Reply {
        request,
        result: Err("the Redis bus is closed".into()),
      });
    }
  }

  /// Asks to be told (a [`BusEvent::Reply`]) once everything this instance
  /// appended has been read back and delivered.
  pub fn flush(&self, request: u32) {
    if self.tx.send(Request::Flush(request)).is_err() {
      self.shared.emit(BusEvent::Reply {
        request,
        result: Ok(0.0),
      });
    }
  }

  /// The writer threads live entries go to (after the writer starts).
  pub fn set_ports(&self, ports: Vec<WriterPort>) {
    self.shared.live().ports = ports;
  }

  /// Where live delivery is now, for a connection whose headers go out.
  pub fn mark(&self) -> Mark {
    match self.shared.live().position {
      Some(id) => Mark::At(id),
      None => Mark::Unknown,
    }
  }

  /// The lock live delivery takes, for [`DeliveryLock::admit`].
  pub fn delivery(&self) -> DeliveryLock {
    DeliveryLock(self.shared.live.clone())
  }

  pub fn set_counts(&self, local: usize, stream: usize) {
    let before = self.shared.local_count.swap(local, Ordering::Relaxed);
    self.shared.stream_conns.store(stream, Ordering::SeqCst);
    // Other instances see the new count at once, not at the next refresh;
    // a burst of connections queues one refresh.
    if before != local && !self.shared.presence_queued.swap(true, Ordering::Relaxed) {
      let _ = self.tx.send(Request::Presence);
    }
  }

  pub fn take_events(&self) -> Vec<BusEvent> {
    std::mem::take(&mut *self.shared.events.lock().unwrap_or_else(|e| e.into_inner()))
  }

  pub fn stats(&self) -> BusStatsSnapshot {
    self.shared.stats.snapshot(self.state())
  }

  /// Stops the thread: it removes its presence, closes its connections and
  /// reports [`BusEvent::Stopped`].
  pub fn stop(&self) {
    let _ = self.tx.send(Request::Stop);
  }
}

impl Drop for Bus {
  fn drop(&mut self) {
    self.stop();
  }
}

/// The two connections of one session with Redis.
struct Session {
  /// Only ever carries the blocking `XREAD`.
  reader: MultiplexedConnection,
  /// `CLIENT ID` of the reader, for `CLIENT UNBLOCK`.
  reader_id: i64,
  commands: MultiplexedConnection,
}

/// Why a session ended.
enum End {
  Stop,
  Failed(String),
}

/// The bus thread's state.
struct Reader {
  /// How each blocking read checks its position is still in the stream.
  presence: PresenceCheck,
  /// The last [`RECENT`] entries delivered (id, data length): a stream that
  /// went back but still holds one of them lost its tail, it was not
  /// replaced ([`Reader::went_back`]).
  recent: VecDeque<(EntryId, usize)>,
  client: Target,
  config: BusConfig,
  presence_key: String,
  shared: Arc<Shared>,
  rx: mpsc::UnboundedReceiver<Request>,
  link: Link,
  /// The newest entry delivered live (L); `None` before the first session.
  position: Option<EntryId>,
  /// The newest entry this instance appended.
  last_written: Option<EntryId>,
  replays: Vec<ReplayRequest>,
  /// Flush requests waiting for the reader to pass an id.
  flushes: Vec<(u32, EntryId)>,
  /// Origins of appends delivered locally because their `XADD` failed
  /// half-way: if Redis did take them, reading them back must not deliver
  /// them twice.
  uncertain: HashSet<String>,
  /// A request taken off the queue while batching appends, served next.
  deferred: Vec<Request>,
  /// The position moved back ([`Reader::replaced`], [`Reader::truncated`])
  /// while a read was in flight: it is interrupted.
  reread: bool,
  /// How much one `XREAD` asks for, and how long its reply may take.
  read_size: ReadSize,
  /// The position a trimmed-away `reset` was sent for, so it is sent once.
  gap_reported: Option<EntryId>,
}

impl Reader {
  async fn run(mut self) {
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
  fn after_failure(&mut self) -> bool {
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

  /// Replays that cannot be served now (Redis is away) are answered with
  /// `reset` at once, so their connections get local broadcasts meanwhile
  /// instead of waiting, held, for a Redis that may not come back.
  fn reset_waiting_replays(&mut self, why: &'static str) {
    let until = self.position.unwrap_or_default();
    for replay in std::mem::take(&mut self.replays) {
      self.answer(replay, &Outcome::Reset(why), &[], until);
    }
  }

  /// Connects, answering requests meanwhile. `None` when told to stop.
  async fn connect_or_request(&mut self) -> Option<RedisResult<Session>> {
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
  async fn wait_out(&mut self, error: &str) -> bool {
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
  fn offline(&mut self, request: Request) {
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

  /// A replay that must wait for the next session. The queue is bounded:
  /// clients reconnecting in a loop during an outage cannot grow it without
  /// end; past the bound a client gets `reset` at once.
  fn wait_for_replay(&mut self, replay: ReplayRequest) {
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

  /// Delivers entries locally without an id, as during an outage.
  /// `uncertain` when Redis may have taken them after all.
  fn fallback(&mut self, entries: Vec<Entry>, uncertain: bool) {
    let stats = &self.shared.stats;
    stats.add(&stats.local_fallbacks, entries.len() as u64);
    let frames = entries
      .iter()
      .map(|entry| BusFrame::new(None, entry))
      .collect();
    if uncertain {
      self
        .uncertain
        .extend(entries.into_iter().filter_map(|e| e.origin));
    }
    self.shared.deliver(frames, None);
  }

  fn reply(&self, request: u32, result: Result<f64, String>) {
    self.shared.emit(BusEvent::Reply { request, result });
  }

  /// One session: from connecting to the first failure (or a stop).
  async fn serve(&mut self, mut session: Session) -> End {
    if let Err(e) = self.resume(&mut session).await {
      return End::Failed(e.to_string());
    }
    self.shared.set_state(LinkState::Connected);
    let notice = self.link.connected();
    let stats = &self.shared.stats;
    stats
      .reconnects
      .store(self.link.reconnects(), Ordering::Relaxed);
    if let Some(notice) = notice {
      self.shared.emit(BusEvent::Link(notice));
    }
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
            match result {
              Ok(Read { after_present: false, entries }) if self.gap_reported != Some(position) => {
                // The position was trimmed away before this read: what
                // came after it may be gone unread. Told once per position.
                self.gap_reported = Some(position);
                if entries.is_empty() {
                  // Gone with nothing after it: the stream may have been
                  // replaced (which resets and starts over by itself).
                  if let Err(e) = self.check_replaced(&mut session).await {
                    return End::Failed(e.to_string());
                  }
                }
                // Trimmed past it (or deleted): entries after it may be gone
                // unread. A stream Redis lost and others began anew lost
                // nothing this instance could still read.
                if self.position == Some(position) {
                  match self.lost_while_away(&mut session, position).await {
                    Ok(true) => self.reset_everyone(),
                    Ok(false) => {}
                    Err(e) => return End::Failed(e.to_string()),
                  }
                }
                if !entries.is_empty() {
                  self.delivered(entries);
                }
              }
              Ok(Read { entries, .. }) if entries.is_empty() => {
                // Nothing new: a blocked read that timed out (or was
                // interrupted). A stream that went backwards would look
                // exactly like this for ever.
                if let Err(e) = self.check_replaced(&mut session).await {
                  return End::Failed(e.to_string());
                }
              }
              Ok(Read { entries, .. }) => {
                self.read_size.replied(entries.len(), data_bytes(&entries), sent.elapsed());
                let entries = match self.check_lag(&mut session, position, entries).await {
                  Ok(entries) => entries,
                  Err(e) => return End::Failed(e.to_string()),
                };
                self.delivered(entries);
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
                return End::Failed(e.to_string());
              }
            }
            break;
          }
          request = self.rx.recv() => {
            let Some(request) = request else { return End::Stop };
            if let Some(end) = self.handle(&mut session, request, &mut unblock).await {
              return end;
            }
            while let Some(request) = self.deferred.pop() {
              if let Some(end) = self.handle(&mut session, request, &mut unblock).await {
                return end;
              }
            }
          }
          () = tokio::time::sleep(UNBLOCK_RETRY), if unblock == Unblock::Missed => {
            if let Err(e) = unblock_reader(&mut session, &mut unblock).await {
              return End::Failed(e.to_string());
            }
          }
          _ = presence.tick() => {
            if let Err(e) = self.refresh_presence(&mut session).await {
              return End::Failed(e.to_string());
            }
          }
        }
      }
    }
  }

  /// At the start of a session: the first one starts at the stream's
  /// newest entry; later ones resume where the last read ended, and if
  /// entries after that were trimmed meanwhile, local clients get `reset`.
  async fn resume(&mut self, session: &mut Session) -> RedisResult<()> {
    let stream = self.config.stream.clone();
    match self.position {
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
        self.position = Some(newest.unwrap_or_default());
        let early = {
          let mut live = self.shared.live();
          live.position = self.position;
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
  /// (every entry after the position, up to `READ_COUNT`) proves the
  /// position was still there and nothing between was lost. A bigger one
  /// means the reader fell behind: it is read again atomically with a check
  /// that the position is still in the stream, and if it is not, every
  /// local client gets `reset` before what follows the gap.
  async fn check_lag(
    &mut self,
    session: &mut Session,
    position: EntryId,
    entries: Vec<(EntryId, Result<Entry, Malformed>)>,
  ) -> RedisResult<Vec<(EntryId, Result<Entry, Malformed>)>> {
    let threshold = READ_COUNT.min(self.config.max_len);
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
      .arg(READ_COUNT)
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

  /// On reconnecting: whether entries after `position` were dropped while
  /// this instance was away. Deleted (`XDEL`): Redis records the newest
  /// deleted id. Trimmed (which does not record it): the position is gone
  /// from the stream and the stream has dropped entries in its life
  /// (`entries-added` past its length). A stream Redis lost altogether
  /// (restarted empty), where others have written anew, lost nothing this
  /// instance could still read.
  async fn lost_while_away(&self, session: &mut Session, position: EntryId) -> RedisResult<bool> {
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
  async fn check_replaced(&mut self, session: &mut Session) -> RedisResult<()> {
    let Some(position) = self.position.filter(|p| *p != EntryId::ZERO) else {
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
  /// (deleted, flushed, restarted empty): [`Reader::replaced`].
  async fn went_back(&mut self, session: &mut Session) -> RedisResult<()> {
    let Some(position) = self.position else {
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
  fn truncated(&mut self, kept: EntryId) {
    self.position = Some(kept);
    self.shared.live().position = self.position;
    self.recent.retain(|(id, _)| *id <= kept);
    self.reread = true;
    for (request, _) in std::mem::take(&mut self.flushes) {
      self.reply(request, Ok(0.0));
    }
  }

  /// The stream's `last-generated-id`; an error when there is no stream.
  /// By script where Redis runs them: `XINFO STREAM` also sends the first
  /// and the last entry, which can weigh megabytes, on every idle read.
  async fn newest_generated(&mut self, session: &mut Session) -> RedisResult<Newest> {
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
  fn replaced(&mut self) {
    self.recent.clear();
    self.reset_everyone();
    self.position = Some(EntryId::ZERO);
    self.shared.live().position = self.position;
    self.reread = true;
    for (request, _) in std::mem::take(&mut self.flushes) {
      self.reply(request, Ok(0.0));
    }
  }

  /// `event: reset` (no id) to every local connection: entries they should
  /// have had are gone from the stream.
  fn reset_everyone(&self) {
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

  /// Entries read live: framed once, delivered, and the position moves on.
  fn delivered(&mut self, entries: Vec<(EntryId, Result<Entry, Malformed>)>) {
    let stats = &self.shared.stats;
    let mut frames = Vec::with_capacity(entries.len());
    for (id, entry) in entries {
      self.position = Some(id);
      stats.add(&stats.entries_read, 1);
      match entry {
        Ok(entry) => {
          if self.recent.len() == RECENT {
            self.recent.pop_front();
          }
          self.recent.push_back((id, entry.data.len()));
          let seen = entry
            .origin
            .as_ref()
            .is_some_and(|o| !self.uncertain.is_empty() && self.uncertain.remove(o));
          if !seen {
            frames.push(BusFrame::new(Some(id), &entry));
          }
        }
        Err(_) => stats.add(&stats.malformed, 1),
      }
    }
    self.shared.deliver(frames, self.position);
    let position = self.position;
    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
      .into_iter()
      .partition(|(_, id)| Some(*id) <= position);
    self.flushes = waiting;
    for (request, _) in done {
      self.reply(request, Ok(0.0));
    }
  }

  /// Appends `first` and whatever else is queued, in one pipeline.
  async fn append(&mut self, session: &mut Session, first: Entry) -> Result<(), String> {
    let mut entries = vec![first];
    while entries.len() < APPEND_BATCH {
      match self.rx.try_recv() {
        Ok(Request::Append(entry)) => entries.push(entry),
        Ok(other) => {
          // Served right after these appends, in its order.
          self.deferred.insert(0, other);
          break;
        }
        Err(_) => break,
      }
    }
    self.append_batch(session, entries).await
  }

  /// One request during a session; `Some` when the session ends.
  async fn handle(
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

  async fn append_batch(
    &mut self,
    session: &mut Session,
    entries: Vec<Entry>,
  ) -> Result<(), String> {
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
          self.last_written = Some(id);
          // Redis gave this entry an id at or below what the reader has
          // passed: the stream lost its tail, or was replaced.
          if self.position.is_some_and(|p| p != EntryId::ZERO && id <= p) {
            if let Err(e) = self.went_back(session).await {
              return Err(e.to_string());
            }
          }
        }
        Ok(())
      }
      Err(e) => {
        // Redis may or may not have taken them: delivered here now, and
        // skipped if read back later.
        self.fallback(entries, true);
        Err(e.to_string())
      }
    }
  }

  /// Serves the waiting replays against the stream up to the position.
  /// Requests from the same id (a whole instance's clients after a deploy)
  /// share one read.
  async fn serve_replays(&mut self, session: &mut Session) -> RedisResult<()> {
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
  async fn read_replay(
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
  fn answer(&self, request: ReplayRequest, outcome: &Outcome, frames: &[BusFrame], until: EntryId) {
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

  async fn refresh_presence(&self, session: &mut Session) -> RedisResult<()> {
    let count = self.shared.local_count.load(Ordering::Relaxed);
    redis::cmd("SET")
      .arg(&self.presence_key)
      .arg(count)
      .arg("PX")
      .arg(PRESENCE_TTL.as_millis() as u64)
      .query_async::<Value>(&mut session.commands)
      .await
      .map(|_| ())
  }

  /// The clients of every live instance: this one's count refreshed first,
  /// then every presence key of the stream summed.
  async fn count(&self, session: &mut Session) -> RedisResult<f64> {
    self.refresh_presence(session).await?;
    let pattern = format!("{}:presence:*", glob_escape(&self.config.stream));
    let mut cursor: u64 = 0;
    let mut total = 0.0;
    loop {
      let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(200)
        .query_async(&mut session.commands)
        .await?;
      // Only keys in this bus's own format count: another program's
      // `<stream>:presence:alice = online` is not an instance.
      let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| is_presence_key(k, &self.config.stream))
        .collect();
      if !keys.is_empty() {
        let counts: Vec<Value> = redis::cmd("MGET")
          .arg(&keys)
          .query_async(&mut session.commands)
          .await?;
        total += counts.iter().filter_map(presence_count).sum::<u64>() as f64;
      }
      if next == 0 {
        return Ok(total);
      }
      cursor = next;
    }
  }

  /// Leaving for good: this instance drops out of the presence count now
  /// rather than when its key expires.
  async fn leave(&self, session: &mut Session) {
    let mut del = redis::cmd("DEL");
    del.arg(&self.presence_key);
    let _ = tokio::time::timeout(
      Duration::from_secs(1),
      del.query_async::<Value>(&mut session.commands),
    )
    .await;
  }
}

/// Whether `key` is an instance's presence key of `stream`, as this bus
/// writes them: `<stream>:presence:<32 lowercase hex>`.
fn is_presence_key(key: &str, stream: &str) -> bool {
  key
    .strip_prefix(stream)
    .and_then(|rest| rest.strip_prefix(":presence:"))
    .is_some_and(|instance| {
      instance.len() == 32
        && instance
          .bytes()
          .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A presence value: a count as this bus writes it (decimal digits, at most
/// a billion); anything else counts for nothing.
fn presence_count(value: &Value) -> Option<u64> {
  let Value::BulkString(bytes) = value else {
    return None;
  };
  if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
    return None;
  }
  std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Whether a command failed because the connection did (rather than Redis
/// refusing that command).
fn connection_failed(error: &redis::RedisError) -> bool {
  error.is_io_error()
    || error.is_connection_dropped()
    || error.is_timeout()
    || error.is_unrecoverable_error()
}

/// Whether the blocking read was interrupted for a replay waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unblock {
  NotAsked,
  /// `CLIENT UNBLOCK` found the reader not blocked: its `XREAD` had not
  /// reached Redis yet (or was already answered). Asked again after
  /// [`UNBLOCK_RETRY`] until the read returns, so a replay never waits out
  /// the whole `BLOCK`.
  Missed,
  Done,
}

/// How soon a missed `CLIENT UNBLOCK` is tried again.
const UNBLOCK_RETRY: Duration = Duration::from_millis(2);

/// `CLIENT UNBLOCK` of the reader; its reply says whether it was blocked.
async fn unblock_reader(session: &mut Session, unblock: &mut Unblock) -> RedisResult<()> {
  let unblocked: i64 = redis::cmd("CLIENT")
    .arg("UNBLOCK")
    .arg(session.reader_id)
    .query_async(&mut session.commands)
    .await?;
  *unblock = if unblocked == 1 {
    Unblock::Done
  } else {
    Unblock::Missed
  };
  Ok(())
}

async fn connect(target: Target) -> RedisResult<Session> {
  let client = target.client().await?;
  // The reader blocks server-side for up to BLOCK: no response timeout
  // (the default 500 ms would fail every XREAD that waits longer); a dead
  // server is noticed by the read's own deadline in `xread`.
  let reader_config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(None);
  let command_config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(Some(COMMAND_TIMEOUT));
  let mut reader = client
    .get_multiplexed_async_connection_with_config(&reader_config)
    .await?;
  let mut commands = client
    .get_multiplexed_async_connection_with_config(&command_config)
    .await?;
  // Never a replica (a stale address, a demoted master): ask again.
  target::check_master(&mut commands).await?;
  // Named, so an operator (and the tests) can tell the bus's connections
  // in CLIENT LIST. A server that refuses the name is served all the same.
  for conn in [&mut reader, &mut commands] {
    let _: RedisResult<Value> = redis::cmd("CLIENT")
      .arg("SETNAME")
      .arg(CONNECTION_NAME)
      .query_async(conn)
      .await;
  }
  let reader_id: i64 = redis::cmd("CLIENT")
    .arg("ID")
    .query_async(&mut reader)
    .await?;
  Ok(Session {
    reader,
    reader_id,
    commands,
  })
}

/// One blocking read after `after`; empty when it timed out or was
/// unblocked. A server that stops answering altogether fails it.
/// What one blocking read found.
struct Read {
  /// Whether the entry read after was still in the stream just before:
  /// if not, entries after it may have been trimmed unread (another
  /// producer trimming to a shorter `MAXLEN`, say).
  after_present: bool,
  entries: Vec<(EntryId, Result<Entry, Malformed>)>,
}

/// What Redis says of the stream's newest generated id.
enum Newest {
  Id(EntryId),
  /// No such key: the stream is gone.
  Missing,
  /// A stream, but no id in the answer.
  Unknown,
}

/// How a blocking read checks that the entry it reads after is still in
/// the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PresenceCheck {
  /// A script that answers 1 or 0: the entry stays in Redis (an entry can
  /// weigh megabytes, and the check runs before every read).
  Script,
  /// `XRANGE P P`, for a Redis that refuses scripts: brings the entry.
  Range,
}

/// Whether the entry `ARGV[1]` is in the stream `KEYS[1]`, without sending it.
const PRESENT_SCRIPT: &str = "return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])";

/// The `last-generated-id` of the stream `KEYS[1]` (0 when there is none),
/// without the entries `XINFO STREAM` also sends.
const NEWEST_SCRIPT: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
  local info = redis.call('XINFO', 'STREAM', KEYS[1]) \
  for i = 1, #info, 2 do if info[i] == 'last-generated-id' then return info[i + 1] end end \
  return false";

/// One blocking read of at most `count` entries after `after`, in one round
/// trip with a check that `after` is still in the stream. Empty when it
/// timed out or was unblocked. A server that stops answering fails it.
async fn xread(
  mut reader: MultiplexedConnection,
  stream: String,
  after: EntryId,
  count: usize,
  deadline: Duration,
  presence: PresenceCheck,
) -> RedisResult<Read> {
  let mut pipe = redis::pipe();
  let check = after != EntryId::ZERO;
  if check {
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
  pipe
    .cmd("XREAD")
    .arg("COUNT")
    .arg(count)
    .arg("BLOCK")
    .arg(BLOCK.as_millis() as u64)
    .arg("STREAMS")
    .arg(&stream)
    .arg(after.to_string());
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
        entries: Vec::new(),
      })
    }
  };
  Ok(Read {
    after_present: here.is_none_or(|here| match here {
      Value::Int(n) => *n > 0,
      range => !parse_range(range).is_empty(),
    }),
    entries: parse_read(reply),
  })
}

/// The data bytes of entries read (a malformed one counts nothing).
fn data_bytes(entries: &[(EntryId, Result<Entry, Malformed>)]) -> usize {
  entries
    .iter()
    .map(|(_, e)| e.as_ref().map_or(0, |e| e.data.len()))
    .sum()
}

/// The entries of an `XREAD` reply (one stream): `[[key, [[id, fields]...]]]`.
fn parse_read(reply: &Value) -> Vec<(EntryId, Result<Entry, Malformed>)> {
  match reply {
    Value::Array(streams) => streams
      .iter()
      .flat_map(|s| match s {
        Value::Array(pair) if pair.len() == 2 => parse_range(&pair[1]),
        _ => Vec::new(),
      })
      .collect(),
    Value::Map(streams) => streams
      .iter()
      .flat_map(|(_, entries)| parse_range(entries))
      .collect(),
    _ => Vec::new(),
  }
}

/// The entries of an `XRANGE` reply: `[[id, [field, value, ...]], ...]`.
/// An entry whose fields are not pairs of strings is malformed.
fn parse_range(reply: &Value) -> Vec<(EntryId, Result<Entry, Malformed>)> {
  let Value::Array(entries) = reply else {
    return Vec::new();
  };
  entries
    .iter()
    .filter_map(|entry| {
      let Value::Array(parts) = entry else {
        return None;
      };
      let id = parts.first().and_then(value_id)?;
      let entry = match parts.get(1) {
        Some(Value::Array(fields)) if fields.len() % 2 == 0 => {
          let pairs: Option<Vec<(&[u8], &[u8])>> = fields
            .chunks(2)
            .map(|pair| Some((bytes_of(&pair[0])?, bytes_of(&pair[1])?)))
            .collect();
          match pairs {
            Some(pairs) => Entry::decode(pairs),
            None => Err(Malformed("a field is not a string")),
          }
        }
        _ => Err(Malformed("fields are not pairs")),
      };
      Some((id, entry))
    })
    .collect()
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
  match value {
    Value::BulkString(b) => Some(b),
    Value::SimpleString(s) => Some(s.as_bytes()),
    _ => None,
  }
}

fn value_id(value: &Value) -> Option<EntryId> {
  EntryId::parse(std::str::from_utf8(bytes_of(value)?).ok()?)
}

/// An entry-id field of an `XINFO STREAM` reply.
fn info_id(info: &Value, field: &[u8]) -> Option<EntryId> {
  info_field(info, field).and_then(value_id)
}

/// A number field of an `XINFO STREAM` reply.
fn info_number(info: &Value, field: &[u8]) -> Option<u64> {
  info_field(info, field).and_then(|v| match v {
    Value::Int(n) => u64::try_from(*n).ok(),
    other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
  })
}

fn info_field<'a>(info: &'a Value, field: &[u8]) -> Option<&'a Value> {
  let pairs: Vec<(&Value, &Value)> = match info {
    Value::Array(items) => items
      .chunks(2)
      .filter_map(|p| Some((p.first()?, p.get(1)?)))
      .collect(),
    Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
    _ => return None,
  };
  pairs
    .into_iter()
    .find(|(k, _)| bytes_of(k) == Some(field))
    .map(|(_, v)| v)
}

/// `stream` with the glob characters `SCAN MATCH` reads escaped.
fn glob_escape(stream: &str) -> String {
  let mut out = String::with_capacity(stream.len());
  for c in stream.chars() {
    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
      out.push('\\');
    }
    out.push(c);
  }
  out
}

#[cfg(test)]
mod tests {
  use super::*;

  fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
  }

  #[test]
  fn presence_counts_only_its_own_keys_and_numbers() {
    let me = "0123456789abcdef0123456789abcdef";
    assert!(is_presence_key(&format!("chat:presence:{me}"), "chat"));
    assert!(!is_presence_key("chat:presence:alice", "chat"));
    assert!(!is_presence_key(
      &format!("chat:presence:{}", me.to_uppercase()),
      "chat"
    ));
    assert!(!is_presence_key(&format!("other:presence:{me}"), "chat"));
    assert_eq!(presence_count(&bulk("12")), Some(12));
    for bad in ["online", "", "-1", "1.5", "99999999999"] {
      assert_eq!(presence_count(&bulk(bad)), None, "{bad}");
    }
    assert_eq!(presence_count(&Value::Nil), None);
  }

  fn entry_value(id: &str, fields: &[&str]) -> Value {
    Value::Array(vec![
      bulk(id),
      Value::Array(fields.iter().map(|f| bulk(f)).collect()),
    ])
  }

  #[test]
  fn an_xread_reply_parses_into_entries_and_malformed_ones_are_marked() {
    let reply = Value::Array(vec![Value::Array(vec![
      bulk("sse"),
      Value::Array(vec![
        entry_value("1-0", &["kind", "broadcast", "data", "{}"]),
        entry_value("2-0", &["kind", "broadcast"]),
        entry_value("3-0", &["kind", "broadcast", "data"]),
        entry_value("4-0", &["kind", "channel", "channel", "c", "data", "1"]),
      ]),
    ])]);
    let entries = parse_read(&reply);
    let ids: Vec<String> = entries.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
      ids,
      ["1-0", "2-0", "3-0", "4-0"],
      "malformed ones still move the position"
    );
    let ok: Vec<bool> = entries.iter().map(|(_, e)| e.is_ok()).collect();
    assert_eq!(ok, [true, false, false, true]);
    assert!(parse_read(&Value::Nil).is_empty(), "a timed-out read");
  }

  #[test]
  fn numbers_are_read_from_xinfo() {
    let info = Value::Array(vec![
      bulk("length"),
      Value::Int(3),
      bulk("entries-added"),
      Value::Int(300),
      bulk("max-deleted-entry-id"),
      bulk("7-1"),
    ]);
    assert_eq!(
      info_id(&info, b"max-deleted-entry-id"),
      EntryId::parse("7-1")
    );
    assert_eq!(info_number(&info, b"length"), Some(3));
    assert_eq!(info_number(&info, b"entries-added"), Some(300));
    assert_eq!(info_number(&info, b"nope"), None);
  }

  #[test]
  fn stream_names_are_escaped_for_scan_match() {
    assert_eq!(glob_escape("app*[1]?"), "app\\*\\[1\\]\\?");
    assert_eq!(glob_escape("sse"), "sse");
  }
}
