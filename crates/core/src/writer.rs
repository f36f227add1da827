//! The native socket writer: one thread per hub that writes pre-framed bytes
//! straight to the connections' sockets, so a broadcast costs the JS thread
//! one message whatever the number of clients.
//!
//! Pure Rust (std and tokio, no napi types): the binding hands it duplicated
//! socket fds and shared frames, and learns about dead or finished
//! connections through [`WriterEvent`]s plus a `notify` callback.
//!
//! Per connection, bytes go out in the order they were submitted. A socket
//! whose kernel buffer is full gets the rest queued by reference (no copy per
//! client) and flushed with `writev` when it becomes writable; several frames
//! behind are coalesced into one syscall. The queue is bounded by
//! `max_buffered_bytes`, past which the slow-client policy applies.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle as TaskHandle, LocalSet};

use crate::backpressure::Admit;
pub use crate::backpressure::SlowPolicy;
use crate::bus::entry::{BusFrame, EntryId};
use crate::bus::gate::{Gate, HeldLocal};
use crate::frame::{reset_chunk, Framing};
use crate::stats::Stats;

/// How many connections the writer may hold at once. Each one costs a
/// second fd (the duplicate) besides Node's own, so the writer stays under
/// half of the soft `RLIMIT_NOFILE` once a reserve (1%, at least 128) is set
/// aside for everything else the process opens; past it, new connections
/// stay on the stream transport, at one fd each. Unlimited where the limit
/// is infinite or cannot be read (a failed duplication still falls back
/// cleanly).
pub fn fd_budget() -> usize {
  open_files_limit().map_or(usize::MAX, budget_for_limit)
}

fn budget_for_limit(soft: usize) -> usize {
  let reserve = (soft / 100).max(128);
  soft.saturating_sub(reserve) / 2
}

/// The soft open-files limit, from `getrlimit(2)`; `None` when unlimited or
/// unreadable.
fn open_files_limit() -> Option<usize> {
  let mut limit = libc::rlimit {
    rlim_cur: 0,
    rlim_max: 0,
  };
  // SAFETY: `limit` is a valid, writable `struct rlimit`; getrlimit only
  // writes to it.
  if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
    return None;
  }
  if limit.rlim_cur == libc::RLIM_INFINITY {
    return None;
  }
  usize::try_from(limit.rlim_cur).ok()
}

/// Identifies one connection between the binding and the writer.
pub type WireId = u64;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
  pub max_buffered_bytes: usize,
  pub slow_policy: SlowPolicy,
  /// How long an ended connection may take to flush its queue before it
  /// is torn down (a client that stopped reading must not hold its fd and
  /// queue forever).
  pub end_timeout: Duration,
}

impl Default for WriterConfig {
  fn default() -> Self {
    Self {
      max_buffered_bytes: 1024 * 1024,
      slow_policy: SlowPolicy::Disconnect,
      end_timeout: Duration::from_secs(30),
    }
  }
}

/// One connection's backlog, shared between the binding (which reads it to
/// answer the app's `res.write` like Node would) and the writer.
///
/// The `drain` handshake has each thread store one atomic and then read the
/// other (the JS thread sets `want_drain`, then reads the backlog; the writer
/// lowers the backlog, then takes `want_drain`), so every access is
/// `SeqCst`: with weaker orderings both could read the other's old value and
/// the `drain` would be lost.
#[derive(Debug, Default)]
pub struct ConnGauge {
  /// Bytes of the app's own writes submitted and not yet taken by the writer.
  pub submitted: AtomicUsize,
  /// Bytes in the writer's queue for this connection.
  pub queued: AtomicUsize,
  /// Set when the app's `write` returned false: the writer reports
  /// [`WriterEvent::Drain`] once the backlog is gone.
  pub want_drain: AtomicBool,
}

impl ConnGauge {
  /// Everything the connection still has to send.
  pub fn backlog(&self) -> usize {
    self.submitted.load(Ordering::SeqCst) + self.queued.load(Ordering::SeqCst)
  }
}

/// Why the writer gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
  /// A write failed (EPIPE, ECONNRESET, ...).
  WriteError,
  /// Its queue passed `max_buffered_bytes` under the disconnect policy (or
  /// an app write would have, under any policy).
  Slow,
  /// It was ended but did not take its queue within `end_timeout`.
  EndTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterEvent {
  /// The writer stopped writing to it and closed its fd; the binding should
  /// drop the connection.
  Dead(WireId, DeadReason),
  /// Everything queued before `end` has been written and the writer let go
  /// of the fd; the binding may now end the response through Node.
  Ended(WireId),
  /// The app's writes to it were flushed after one was refused (`write`
  /// returned false): the binding emits `drain` on the response.
  Drain(WireId),
  /// The writer thread stopped after [`SocketWriter::close`]; every fd it
  /// held is closed.
  Stopped,
  /// The writer thread panicked: every connection it held is gone (their
  /// fds closed). The binding must tear them down and stop using it.
  Died,
}

enum Command {
  /// A new connection; `held` when it waits for a bus replay (its gate is
  /// held from the start, so no live entry can reach it first).
  Add(WireId, SocketFd, Arc<ConnGauge>, bool),
  /// The app's own `res.write`, as one HTTP chunk: never dropped, counted
  /// in the connection's gauge.
  Write(WireId, Arc<[u8]>),
  /// Frames for every connection; adjacent broadcasts are merged into one
  /// command (see [`coalesce`]).
  Broadcast(Vec<Arc<[u8]>>),
  Send(Vec<WireId>, Arc<[u8]>),
  /// Adjacent broadcasts and sends, at least one of them a send, merged so
  /// each connection gets its share of all of them in one `writev`.
  Mixed(Vec<Delivery>),
  End(WireId),
  Remove(WireId),
  Configure(WriterConfig),
  /// Entries from the Redis bus, each to the connections its route names
  /// and whose replay gate admits it. A barrier: never merged.
  Bus(Arc<[BusFrame]>),
  /// A replay's frames for one connection, then its gate opens (keeping
  /// `cursor`, when given, as the newest entry it already has).
  Release(WireId, Vec<Arc<[u8]>>, Option<EntryId>),
  /// A connection's client id and channels, which bus entries route by.
  Route(WireId, Arc<str>, Vec<Arc<str>>),
  /// Fault injection for tests: the writer thread panics.
  Crash,
  /// Stop after the commands before it: the thread drops every connection
  /// (closing the fds), reports [`WriterEvent::Stopped`] and exits.
  Stop,
}

/// Frames for some connections (`to`), or for all of them (`None`).
struct Delivery {
  to: Option<Vec<WireId>>,
  frames: Vec<Arc<[u8]>>,
}

/// Handle owned by the binding. Dropping it (or [`SocketWriter::close`])
/// lets the thread finish what it holds and exit, closing every fd; nobody
/// waits for it, so the JS thread never blocks on a join.
pub struct SocketWriter {
  tx: Option<mpsc::UnboundedSender<Command>>,
  events: Arc<Mutex<Vec<WriterEvent>>>,
  stats: Arc<Stats>,
}

impl SocketWriter {
  /// Starts the writer thread. `notify` is called (from that thread) when
  /// events become available after the queue was empty.
  /// Counts into `stats`, shared with the hub.
  pub fn start(
    config: WriterConfig,
    stats: Arc<Stats>,
    notify: Box<dyn Fn() + Send>,
  ) -> io::Result<Self> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
      .enable_io()
      .enable_time()
      .build()?;
    let thread_events = events.clone();
    let thread_stats = stats.clone();
    std::thread::Builder::new()
      .name("sse-socket-writer".into())
      .spawn(move || {
        let notify: Rc<dyn Fn()> = Rc::from(notify as Box<dyn Fn()>);
        let state = Rc::new(WriterState {
          conns: RefCell::new(Table::default()),
          config: Cell::new(config),
          events: thread_events.clone(),
          notify: notify.clone(),
          stats: thread_stats.clone(),
        });
        // A panic here must not go unnoticed (its connections would hang)
        // nor cross into Node: the binding hears of it and tears down.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
          let local = LocalSet::new();
          local.block_on(&runtime, run(state, rx));
        }));
        // Unwinding dropped the state, the connections and their fds.
        thread_stats.queued_bytes.store(0, Ordering::Relaxed);
        let last = match outcome {
          Ok(()) => WriterEvent::Stopped,
          Err(_) => WriterEvent::Died,
        };
        thread_events
          .lock()
          .unwrap_or_else(|e| e.into_inner())
          .push(last);
        notify();
      })?;
    Ok(Self {
      tx: Some(tx),
      events,
      stats,
    })
  }

  fn submit(&self, command: Command) {
    if let Some(tx) = &self.tx {
      // Fails only once the thread is gone, when there is nothing to write to.
      let _ = tx.send(command);
    }
  }

  /// Hands a connection to the writer. `fd` must be a duplicate of a
  /// connected, non-blocking TCP socket's fd; the writer closes it when done.
  pub fn add(&self, wire: WireId, fd: impl Into<SocketFd>, gauge: Arc<ConnGauge>) {
    self.add_with(wire, fd.into(), gauge, false);
  }

  /// [`SocketWriter::add`], with its replay gate held from the start when
  /// `held` (it reconnected with a `Last-Event-ID` to a hub with a bus).
  pub fn add_with(&self, wire: WireId, fd: SocketFd, gauge: Arc<ConnGauge>, held: bool) {
    self.submit(Command::Add(wire, fd, gauge, held));
  }

  /// Writes the app's own bytes (one HTTP chunk) to `wire`, after what was
  /// submitted before; the caller has added them to the gauge's `submitted`.
  pub fn write(&self, wire: WireId, chunk: Arc<[u8]>) {
    self.submit(Command::Write(wire, chunk));
  }

  /// Writes several frames to the given connections, in order (a replay).
  pub fn send_frames(&self, wires: Vec<WireId>, frames: Vec<Arc<[u8]>>) {
    self.submit(Command::Mixed(vec![Delivery {
      to: Some(wires),
      frames,
    }]));
  }

  /// A sender the Redis bus's thread uses to hand this writer its entries
  /// and replays, ordered with everything else submitted.
  pub fn port(&self) -> Option<WriterPort> {
    self.tx.clone().map(|tx| WriterPort { tx })
  }

  /// Sets the client id and channels bus entries are routed by.
  pub fn route(&self, wire: WireId, client: Arc<str>, channels: Vec<Arc<str>>) {
    self.submit(Command::Route(wire, client, channels));
  }

  /// Makes the writer thread panic, to test that its death is handled.
  pub fn crash(&self) {
    self.submit(Command::Crash);
  }

  /// Lets the thread flush nothing more and exit; it reports
  /// [`WriterEvent::Stopped`] once every fd is closed.
  pub fn close(&self) {
    self.submit(Command::Stop);
  }

  /// Writes `bytes` to every connection the writer holds.
  pub fn broadcast(&self, bytes: Arc<[u8]>) {
    self.submit(Command::Broadcast(vec![bytes]));
  }

  /// Writes `bytes` to the given connections.
  pub fn send(&self, wires: Vec<WireId>, bytes: Arc<[u8]>) {
    self.submit(Command::Send(wires, bytes));
  }

  /// Flushes what is queued for `wire`, then reports [`WriterEvent::Ended`].
  pub fn end(&self, wire: WireId) {
    self.submit(Command::End(wire));
  }

  /// Forgets `wire` at once (its client is gone), closing the fd.
  pub fn remove(&self, wire: WireId) {
    self.submit(Command::Remove(wire));
  }

  pub fn configure(&self, config: WriterConfig) {
    self.submit(Command::Configure(config));
  }

  pub fn take_events(&self) -> Vec<WriterEvent> {
    std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
  }

  pub fn stats(&self) -> &Stats {
    &self.stats
  }
}

/// The Redis bus's way into one writer thread: its commands queue behind
/// everything the JS thread submitted before, so a connection added with a
/// held gate is held before any entry that follows.
#[derive(Clone)]
pub struct WriterPort {
  tx: mpsc::UnboundedSender<Command>,
}

impl WriterPort {
  /// Live entries, in stream order.
  pub fn bus(&self, frames: Arc<[BusFrame]>) {
    let _ = self.tx.send(Command::Bus(frames));
  }

  /// A replay for `wire` (the frames, then the gate opens).
  pub fn release(&self, wire: WireId, frames: Vec<Arc<[u8]>>, cursor: Option<EntryId>) {
    let _ = self.tx.send(Command::Release(wire, frames, cursor));
  }
}

impl Drop for SocketWriter {
  fn drop(&mut self) {
    // Closing the channel ends the command loop; the runtime then drops
    // every connection (closing the fds) and the thread exits on its own.
    self.tx = None;
  }
}

/// A connection's socket as the writer gets it: the fd, and how its body is
/// delimited.
#[derive(Debug)]
pub struct SocketFd {
  pub fd: OwnedFd,
  pub framing: Framing,
}

impl From<OwnedFd> for SocketFd {
  /// A chunked connection (Node's HTTP/1.1 default).
  fn from(fd: OwnedFd) -> SocketFd {
    SocketFd {
      fd,
      framing: Framing::Chunked,
    }
  }
}

/// A chunk waiting for the socket; `offset` counts bytes of its wire form
/// ([`Framing::wire`]) already written.
struct Pending {
  bytes: Arc<[u8]>,
  offset: usize,
}

struct Conn {
  wire: WireId,
  io: AsyncFd<TcpStream>,
  framing: Framing,
  queue: RefCell<VecDeque<Pending>>,
  gauge: Arc<ConnGauge>,
  ending: Cell<bool>,
  flush_task: RefCell<Option<TaskHandle<()>>>,
  end_timer: RefCell<Option<TaskHandle<()>>>,
  /// What bus entries route by, and its replay gate.
  client: RefCell<Arc<str>>,
  channels: RefCell<Vec<Arc<str>>>,
  gate: Cell<Gate>,
  /// Events without an id (delivered locally while Redis was away) that
  /// came while the gate was held: they follow the replay.
  held_local: RefCell<HeldLocal>,
}

impl Conn {
  /// Whether a bus entry goes to this connection now (the gate moves on
  /// when it does). An id-less one that finds the gate held is kept for
  /// after the replay, within `max_bytes`.
  fn takes(&self, frame: &BusFrame, max_bytes: usize) -> bool {
    if !frame
      .route
      .matches(&self.client.borrow(), &self.channels.borrow())
    {
      return false;
    }
    if frame.id.is_none() && self.gate.get().is_held() {
      self.held_local.borrow_mut().hold(&frame.chunk, max_bytes);
      return false;
    }
    let mut gate = self.gate.get();
    let admitted = gate.admits(frame.id);
    self.gate.set(gate);
    admitted
  }

  fn queued(&self) -> usize {
    self.gauge.queued.load(Ordering::Relaxed)
  }
}

/// Connections in a dense vector (a broadcast walks them all) with an index
/// for the targeted commands; removal swaps the last one in.
#[derive(Default)]
struct Table {
  conns: Vec<Rc<Conn>>,
  index: HashMap<WireId, usize>,
}

impl Table {
  fn get(&self, wire: WireId) -> Option<Rc<Conn>> {
    self.index.get(&wire).map(|&i| self.conns[i].clone())
  }

  fn insert(&mut self, conn: Rc<Conn>) {
    if let Some(old) = self.remove(conn.wire) {
      drop(old);
    }
    self.index.insert(conn.wire, self.conns.len());
    self.conns.push(conn);
  }

  /// Takes a connection out and stops its flush task, so nothing keeps its
  /// fd open once the caller drops it.
  fn remove(&mut self, wire: WireId) -> Option<Rc<Conn>> {
    let i = self.index.remove(&wire)?;
    let conn = self.conns.swap_remove(i);
    if let Some(moved) = self.conns.get(i) {
      self.index.insert(moved.wire, i);
    }
    if let Some(task) = conn.flush_task.borrow_mut().take() {
      task.abort();
    }
    if let Some(timer) = conn.end_timer.borrow_mut().take() {
      timer.abort();
    }
    Some(conn)
  }
}

struct WriterState {
  conns: RefCell<Table>,
  config: Cell<WriterConfig>,
  events: Arc<Mutex<Vec<WriterEvent>>>,
  notify: Rc<dyn Fn()>,
  stats: Arc<Stats>,
}

impl WriterState {
  fn emit(&self, event: WriterEvent) {
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

  /// Stops writing to a connection and reports why. Dropping the last `Rc`
  /// closes the duplicated fd and aborts its flush task.
  fn kill(&self, conn: &Conn, reason: DeadReason) {
    if let Some(conn) = self.conns.borrow_mut().remove(conn.wire) {
      self.release_queue(&conn);
      // The hub counts the slow disconnect when it removes the connection.
      self.emit(WriterEvent::Dead(conn.wire, reason));
    }
  }

  fn release_queue(&self, conn: &Conn) {
    conn.queue.borrow_mut().clear();
    let queued = conn.gauge.queued.swap(0, Ordering::SeqCst);
    self.stats.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
  }

  /// Reports `drain` once the app's refused writes have all left.
  fn maybe_drain(&self, conn: &Conn) {
    let gauge = &conn.gauge;
    if gauge.want_drain.load(Ordering::SeqCst)
      && gauge.backlog() == 0
      && gauge.want_drain.swap(false, Ordering::SeqCst)
    {
      self.emit(WriterEvent::Drain(conn.wire));
    }
  }

  fn frame_done(&self, chunk: &[u8]) {
    self.stats.frames(1, chunk_payload_len(chunk) as u64);
  }

  fn finish_end(&self, conn: &Conn) {
    if self.conns.borrow_mut().remove(conn.wire).is_some() {
      self.emit(WriterEvent::Ended(conn.wire));
    }
  }
}

async fn run(state: Rc<WriterState>, mut rx: mpsc::UnboundedReceiver<Command>) {
  let mut batch = Vec::new();
  'commands: while let Some(first) = rx.recv().await {
    batch.push(first);
    while let Ok(next) = rx.try_recv() {
      batch.push(next);
    }
    for command in coalesce(std::mem::take(&mut batch)) {
      if matches!(command, Command::Stop) {
        break 'commands;
      }
      handle(&state, command);
    }
  }
  // The binding went away: drop every connection, closing the fds.
  let wires: Vec<WireId> = state.conns.borrow().index.keys().copied().collect();
  for wire in wires {
    let conn = state.conns.borrow_mut().remove(wire);
    drop(conn);
  }
}

/// Most frames one merged run of broadcasts and sends carries: what one
/// `writev` takes. It bounds the per-connection lists [`deliver`] builds for
/// the connections a send names.
const MAX_RUN_FRAMES: usize = MAX_IOVECS;

/// Most bus entries one merged [`Command::Bus`] carries.
const MAX_BUS_RUN: usize = 1024;

/// Frame commands that arrived together are merged, so a writer that fell
/// behind catches up with one `writev` per socket per batch instead of one
/// `write` per frame; the frames are shared, never copied. Runs of
/// broadcasts stay a broadcast (no per-connection list); a run with a send
/// in it (a channel publish, a filter, `sendToClient`) becomes
/// [`Command::Mixed`], of at most [`MAX_RUN_FRAMES`]. Other commands are
/// barriers: a connection added after a broadcast must not get it, an end
/// must come after the frames before it.
fn coalesce(commands: Vec<Command>) -> Vec<Command> {
  let mut out: Vec<Command> = Vec::with_capacity(commands.len());
  for command in commands {
    match out.pop() {
      None => out.push(command),
      Some(last) => match merge(last, command) {
        Ok(merged) => out.push(merged),
        Err((last, command)) => out.extend([last, command]),
      },
    }
  }
  out
}

fn merge(last: Command, next: Command) -> Result<Command, (Command, Command)> {
  match (last, next) {
    (Command::Broadcast(mut frames), Command::Broadcast(more)) => {
      frames.extend(more);
      Ok(Command::Broadcast(frames))
    }
    // Bus entries that queued up while the writer was busy go out together:
    // each connection gets its share of all of them in one `writev`, in
    // stream order, through the same gates.
    (Command::Bus(frames), Command::Bus(more)) if frames.len() + more.len() <= MAX_BUS_RUN => {
      let merged: Vec<BusFrame> = frames.iter().chain(more.iter()).cloned().collect();
      Ok(Command::Bus(merged.into()))
    }
    (last, next) => match (frames_in(&last), frames_in(&next)) {
      (Some(a), Some(b)) if a + b <= MAX_RUN_FRAMES => {
        let mut run = deliveries(last);
        for delivery in deliveries(next) {
          // Adjacent broadcasts in a run share one delivery, and so do
          // adjacent sends to the same connections (publishes to one
          // channel), which then need no list per connection.
          match (run.last_mut(), delivery) {
            (
              Some(Delivery { to: None, frames }),
              Delivery {
                to: None,
                frames: more,
              },
            ) => frames.extend(more),
            (
              Some(Delivery {
                to: Some(wires),
                frames,
              }),
              Delivery {
                to: Some(same),
                frames: more,
              },
            ) if *wires == same => frames.extend(more),
            (_, delivery) => run.push(delivery),
          }
        }
        Ok(Command::Mixed(run))
      }
      _ => Err((last, next)),
    },
  }
}

/// How many frames a command carries; `None` for the other commands.
fn frames_in(command: &Command) -> Option<usize> {
  match command {
    Command::Broadcast(frames) => Some(frames.len()),
    Command::Send(..) => Some(1),
    Command::Mixed(run) => Some(run.iter().map(|d| d.frames.len()).sum()),
    _ => None,
  }
}

/// A frame command as deliveries (empty for the other commands).
fn deliveries(command: Command) -> Vec<Delivery> {
  match command {
    Command::Broadcast(frames) => vec![Delivery { to: None, frames }],
    Command::Send(wires, bytes) => vec![Delivery {
      to: Some(wires),
      frames: vec![bytes],
    }],
    Command::Mixed(run) => run,
    _ => Vec::new(),
  }
}

/// Writes a merged run with one [`write_to`] per connection, each getting
/// its frames in the run's order. Sends to one set of connections share
/// their frames; otherwise connections no send names get the run's
/// broadcast frames from one shared list, only the named ones get a list of
/// their own, and a run without a broadcast touches only them.
fn deliver(state: &Rc<WriterState>, run: &[Delivery]) {
  if let [Delivery {
    to: Some(wires),
    frames,
  }] = run
  {
    for wire in wires {
      let conn = state.conns.borrow().get(*wire);
      if let Some(conn) = conn {
        write_to(state, &conn, frames);
      }
    }
    return;
  }
  let everyone: Vec<Arc<[u8]>> = run
    .iter()
    .filter(|d| d.to.is_none())
    .flat_map(|d| d.frames.iter().cloned())
    .collect();
  let mut named: HashMap<WireId, Vec<Arc<[u8]>>> = HashMap::new();
  for wires in run.iter().filter_map(|d| d.to.as_ref()) {
    for wire in wires {
      named.entry(*wire).or_default();
    }
  }
  for delivery in run {
    match &delivery.to {
      None => {
        for frames in named.values_mut() {
          frames.extend(delivery.frames.iter().cloned());
        }
      }
      Some(wires) => {
        for wire in wires {
          if let Some(frames) = named.get_mut(wire) {
            frames.extend(delivery.frames.iter().cloned());
          }
        }
      }
    }
  }
  if everyone.is_empty() {
    for (wire, frames) in &named {
      let conn = state.conns.borrow().get(*wire);
      if let Some(conn) = conn {
        write_to(state, &conn, frames);
      }
    }
    return;
  }
  // A snapshot: writing may kill a connection, which reorders the table.
  let conns = state.conns.borrow().conns.clone();
  for conn in &conns {
    let frames = named.get(&conn.wire).unwrap_or(&everyone);
    write_to(state, conn, frames);
  }
}

fn handle(state: &Rc<WriterState>, command: Command) {
  match command {
    Command::Add(wire, SocketFd { fd, framing }, gauge, held) => {
      let stream = TcpStream::from(fd);
      // Shares the file description with Node's fd, which libuv already made
      // non-blocking; setting it again is harmless and makes that explicit.
      let registered = stream.set_nonblocking(true).and_then(|()| {
        // SAFETY: the TcpStream owns the fd for as long as the AsyncFd
        // holds it and always reports that same fd.
        unsafe { AsyncFd::register_with_interest(stream, Interest::WRITABLE) }
          .map_err(io::Error::from)
      });
      match registered {
        Ok(io) => state.conns.borrow_mut().insert(Rc::new(Conn {
          wire,
          io,
          framing,
          queue: RefCell::new(VecDeque::new()),
          gauge,
          ending: Cell::new(false),
          flush_task: RefCell::new(None),
          end_timer: RefCell::new(None),
          client: RefCell::new(Arc::from("")),
          channels: RefCell::new(Vec::new()),
          gate: Cell::new(if held { Gate::held() } else { Gate::default() }),
          held_local: RefCell::new(HeldLocal::default()),
        })),
        Err(_) => state.emit(WriterEvent::Dead(wire, DeadReason::WriteError)),
      }
    }
    Command::Write(wire, chunk) => {
      // A connection gone already needs nothing: nobody reads its gauge.
      let conn = state.conns.borrow().get(wire);
      if let Some(conn) = conn {
        conn
          .gauge
          .submitted
          .fetch_sub(chunk.len(), Ordering::SeqCst);
        write_frames(state, &conn, std::slice::from_ref(&chunk), true);
        state.maybe_drain(&conn);
      }
    }
    Command::Broadcast(frames) => {
      let conns = state.conns.borrow().conns.clone();
      for conn in conns {
        write_to(state, &conn, &frames);
      }
    }
    command @ (Command::Send(..) | Command::Mixed(_)) => deliver(state, &deliveries(command)),
    Command::End(wire) => {
      let conn = state.conns.borrow().get(wire);
      if let Some(conn) = conn {
        conn.ending.set(true);
        if conn.queue.borrow().is_empty() {
          state.finish_end(&conn);
        } else {
          let timeout = state.config.get().end_timeout;
          let (timer_state, timer_conn) = (state.clone(), conn.clone());
          *conn.end_timer.borrow_mut() = Some(tokio::task::spawn_local(async move {
            tokio::time::sleep(timeout).await;
            timer_state.kill(&timer_conn, DeadReason::EndTimeout);
          }));
        }
      }
    }
    Command::Remove(wire) => {
      let conn = state.conns.borrow_mut().remove(wire);
      if let Some(conn) = conn {
        state.release_queue(&conn);
      }
    }
    Command::Configure(config) => state.config.set(config),
    Command::Bus(frames) => deliver_bus(state, &frames),
    Command::Release(wire, frames, cursor) => {
      let conn = state.conns.borrow().get(wire);
      if let Some(conn) = conn {
        let mut gate = conn.gate.get();
        gate.release(cursor);
        conn.gate.set(gate);
        let mut frames = frames;
        frames.extend(conn.held_local.borrow_mut().take(reset_chunk));
        write_to(state, &conn, &frames);
      }
    }
    Command::Route(wire, client, channels) => {
      if let Some(conn) = state.conns.borrow().get(wire) {
        *conn.client.borrow_mut() = client;
        *conn.channels.borrow_mut() = channels;
      }
    }
    // A panic like any other to the thread and its owner, without the panic
    // hook's message on stderr: the fault is deliberate (tests inject it).
    Command::Crash => std::panic::resume_unwind(Box::new(
      "sse-socket-writer: fault injected by crashWriterForTest",
    )),
    // Handled by the command loop.
    Command::Stop => {}
  }
}

/// Bus entries: a connection whose gate is open gets every broadcast in
/// the batch from one shared list; the others (a channel or client entry in
/// the batch, a gate held for a replay) get their own.
fn deliver_bus(state: &Rc<WriterState>, frames: &[BusFrame]) {
  let everyone = frames
    .iter()
    .all(|f| f.route == crate::bus::entry::Route::All);
  let shared: Vec<Arc<[u8]>> = if everyone {
    frames.iter().map(|f| f.chunk.clone()).collect()
  } else {
    Vec::new()
  };
  // A snapshot: writing may kill a connection, which reorders the table.
  let conns = state.conns.borrow().conns.clone();
  for conn in &conns {
    if everyone && conn.gate.get().is_open() {
      write_to(state, conn, &shared);
      continue;
    }
    let mine: Vec<Arc<[u8]>> = frames
      .iter()
      .filter(|f| conn.takes(f, state.config.get().max_buffered_bytes))
      .map(|f| f.chunk.clone())
      .collect();
    if !mine.is_empty() {
      write_to(state, conn, &mine);
    }
  }
}

/// Writes `frames` to one connection: straight to the socket with one
/// `writev` when nothing is queued, else (or for what the socket did not
/// take) into its queue.
fn write_to(state: &Rc<WriterState>, conn: &Rc<Conn>, frames: &[Arc<[u8]>]) {
  write_frames(state, conn, frames, false);
  // A write straight to an empty socket may be what empties the backlog.
  state.maybe_drain(conn);
}

/// [`write_to`] for the hub's frames (`app` false: the slow-client policy
/// applies) or the app's own writes (`app` true: never dropped, since a
/// chunk of an app's stream cannot be skipped without corrupting it).
fn write_frames(state: &Rc<WriterState>, conn: &Rc<Conn>, frames: &[Arc<[u8]>], app: bool) {
  if conn.ending.get() {
    return;
  }
  if !conn.queue.borrow().is_empty() {
    for frame in frames {
      if !enqueue(state, conn, frame, app) {
        // Disconnected as too slow: nothing more goes to it.
        return;
      }
    }
    return;
  }
  let mut rest = frames;
  while !rest.is_empty() {
    let batch = &rest[..rest.len().min(MAX_IOVECS)];
    let slices: Vec<IoSlice<'_>> = batch
      .iter()
      .map(|f| IoSlice::new(conn.framing.wire(f)))
      .collect();
    let mut written = match conn.io.get_ref().write_vectored(&slices) {
      Ok(n) => n,
      Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
      Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
      Err(_) => {
        state.kill(conn, DeadReason::WriteError);
        return;
      }
    };
    state
      .stats
      .wire_bytes
      .fetch_add(written as u64, Ordering::Relaxed);
    for (i, frame) in batch.iter().enumerate() {
      let len = conn.framing.wire(frame).len();
      if written >= len {
        written -= len;
        state.frame_done(frame);
        continue;
      }
      // The socket is full. A frame it took in part is always finished,
      // whatever the bound says (never half a frame); the rest queue.
      if written > 0 {
        force_enqueue(state, conn, frame, written);
      }
      let mut left = rest[i + usize::from(written > 0)..].iter();
      for frame in left.by_ref() {
        if !enqueue(state, conn, frame, app) {
          break;
        }
      }
      if !conn.queue.borrow().is_empty() {
        start_flush(state, conn);
      }
      return;
    }
    rest = &rest[batch.len()..];
  }
}

/// Queues a whole frame, applying the bound and the slow-client policy.
/// False when the connection was disconnected (nothing more to queue).
fn enqueue(state: &Rc<WriterState>, conn: &Rc<Conn>, bytes: &Arc<[u8]>, app: bool) -> bool {
  let config = state.config.get();
  let policy = if app {
    SlowPolicy::Disconnect
  } else {
    config.slow_policy
  };
  match crate::backpressure::admit(
    conn.queued(),
    conn.framing.wire(bytes).len(),
    config.max_buffered_bytes,
    policy,
  ) {
    Admit::Queue => {
      force_enqueue(state, conn, bytes, 0);
      true
    }
    Admit::Drop => {
      state.stats.dropped(1);
      true
    }
    Admit::Disconnect => {
      state.kill(conn, DeadReason::Slow);
      false
    }
  }
}

fn force_enqueue(state: &Rc<WriterState>, conn: &Rc<Conn>, bytes: &Arc<[u8]>, offset: usize) {
  let len = conn.framing.wire(bytes).len() - offset;
  conn.queue.borrow_mut().push_back(Pending {
    bytes: bytes.clone(),
    offset,
  });
  conn.gauge.queued.fetch_add(len, Ordering::SeqCst);
  state.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
}

fn start_flush(state: &Rc<WriterState>, conn: &Rc<Conn>) {
  let mut task = conn.flush_task.borrow_mut();
  if task.as_ref().is_some_and(|t| !t.is_finished()) {
    return;
  }
  // Removing the connection from the table aborts this task, which drops
  // the last reference and closes the fd.
  *task = Some(tokio::task::spawn_local(flush(state.clone(), conn.clone())));
}

/// The payload size an HTTP chunk announces in its `<hex>\r\n` prefix; the
/// whole length for bytes that are not a chunk.
fn chunk_payload_len(chunk: &[u8]) -> usize {
  let line_end = chunk.iter().position(|&b| b == b'\r');
  line_end
    .and_then(|end| std::str::from_utf8(&chunk[..end]).ok())
    .and_then(|hex| usize::from_str_radix(hex, 16).ok())
    .unwrap_or(chunk.len())
}

/// At most this many frames per `writev`; the kernel's IOV_MAX is 1024.
const MAX_IOVECS: usize = 64;

async fn flush(state: Rc<WriterState>, conn: Rc<Conn>) {
  loop {
    let mut guard = match conn.io.writable().await {
      Ok(guard) => guard,
      Err(_) => {
        state.kill(&conn, DeadReason::WriteError);
        return;
      }
    };
    let result = guard.try_io(|io| {
      let queue = conn.queue.borrow();
      let slices: Vec<IoSlice<'_>> = queue
        .iter()
        .take(MAX_IOVECS)
        .map(|p| IoSlice::new(&conn.framing.wire(&p.bytes)[p.offset..]))
        .collect();
      io.get_ref().write_vectored(&slices)
    });
    match result {
      Ok(Ok(written)) => {
        consume(&state, &conn, written);
        if conn.queue.borrow().is_empty() {
          if conn.ending.get() {
            state.finish_end(&conn);
          } else {
            state.maybe_drain(&conn);
          }
          return;
        }
      }
      Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
      Ok(Err(_)) => {
        state.kill(&conn, DeadReason::WriteError);
        return;
      }
      Err(_would_block) => {}
    }
  }
}

fn consume(state: &WriterState, conn: &Conn, mut written: usize) {
  state
    .stats
    .wire_bytes
    .fetch_add(written as u64, Ordering::Relaxed);
  conn.gauge.queued.fetch_sub(written, Ordering::SeqCst);
  state
    .stats
    .queued_bytes
    .fetch_sub(written, Ordering::Relaxed);
  let mut queue = conn.queue.borrow_mut();
  while written > 0 {
    let Some(head) = queue.front_mut() else { break };
    let left = conn.framing.wire(&head.bytes).len() - head.offset;
    if written >= left {
      written -= left;
      if let Some(done) = queue.pop_front() {
        state.frame_done(&done.bytes);
      }
    } else {
      head.offset += written;
      written = 0;
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::test_util::{pair, wait_for};
  use std::io::Read;
  use std::os::fd::AsFd;
  use std::sync::mpsc as std_mpsc;
  use std::time::{Duration, Instant};

  fn writer(config: WriterConfig) -> (SocketWriter, std_mpsc::Receiver<()>) {
    let (tx, rx) = std_mpsc::channel();
    let tx = Mutex::new(tx);
    let writer = SocketWriter::start(
      config,
      Arc::default(),
      Box::new(move || {
        let _ = tx.lock().unwrap().send(());
      }),
    )
    .unwrap();
    (writer, rx)
  }

  fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
    client
      .set_read_timeout(Some(Duration::from_secs(5)))
      .unwrap();
    let mut out = vec![0; len];
    client.read_exact(&mut out).unwrap();
    out
  }

  fn wait_event(writer: &SocketWriter, rx: &std_mpsc::Receiver<()>) -> Vec<WriterEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
      let events = writer.take_events();
      if !events.is_empty() {
        return events;
      }
      assert!(Instant::now() < deadline, "no writer event");
      let _ = rx.recv_timeout(Duration::from_millis(50));
    }
  }

  #[test]
  fn broadcasts_and_sends_arrive_in_order() {
    let (writer, _rx) = writer(WriterConfig::default());
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    writer.add(
      1,
      a_server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    writer.add(
      2,
      b_server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    writer.broadcast(Arc::from(&b"one;"[..]));
    writer.send(vec![2], Arc::from(&b"two;"[..]));
    writer.broadcast(Arc::from(&b"three;"[..]));
    assert_eq!(read_exactly(&mut a, 10), b"one;three;");
    assert_eq!(read_exactly(&mut b, 14), b"one;two;three;");
  }

  #[test]
  fn a_full_socket_is_queued_then_flushed_completely() {
    let (writer, rx) = writer(WriterConfig {
      max_buffered_bytes: 64 << 20,
      slow_policy: SlowPolicy::Disconnect,
      ..WriterConfig::default()
    });
    let (server, mut client) = pair();
    writer.add(
      7,
      server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    // Far more than the kernel buffers hold while nobody reads.
    let frame: Arc<[u8]> = (0..64 * 1024)
      .map(|i| (i % 251) as u8)
      .collect::<Vec<_>>()
      .into();
    for _ in 0..200 {
      writer.broadcast(frame.clone());
    }
    writer.end(7);
    let got = read_exactly(&mut client, frame.len() * 200);
    for chunk in got.chunks(frame.len()) {
      assert_eq!(chunk, &frame[..]);
    }
    assert_eq!(wait_event(&writer, &rx), vec![WriterEvent::Ended(7)]);
    assert_eq!(writer.stats().queued_bytes.load(Ordering::Relaxed), 0);
  }

  #[test]
  fn a_client_that_stops_reading_is_disconnected_at_the_bound() {
    let (writer, rx) = writer(WriterConfig {
      max_buffered_bytes: 256 * 1024,
      slow_policy: SlowPolicy::Disconnect,
      ..WriterConfig::default()
    });
    let (server, _client) = pair();
    writer.add(
      3,
      server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    let frame: Arc<[u8]> = vec![b'x'; 32 * 1024].into();
    for _ in 0..400 {
      writer.broadcast(frame.clone());
      std::thread::sleep(Duration::from_micros(200));
    }
    let events = wait_event(&writer, &rx);
    assert_eq!(events, vec![WriterEvent::Dead(3, DeadReason::Slow)]);
    assert_eq!(writer.stats().queued_bytes.load(Ordering::Relaxed), 0);
  }

  #[test]
  fn the_drop_policy_skips_whole_frames_and_keeps_the_bound() {
    let bound = 256 * 1024;
    let (writer, _rx) = writer(WriterConfig {
      max_buffered_bytes: bound,
      slow_policy: SlowPolicy::Drop,
      ..WriterConfig::default()
    });
    let (server, mut client) = pair();
    writer.add(
      4,
      server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    let frame_len = 10_000;
    for i in 0..600u32 {
      let mut frame = vec![b'.'; frame_len];
      frame[..4].copy_from_slice(&i.to_be_bytes());
      writer.broadcast(frame.into());
      std::thread::sleep(Duration::from_micros(100));
      assert!(writer.stats().queued_bytes.load(Ordering::Relaxed) <= bound + frame_len);
    }
    wait_for("a frame dropped", || {
      writer.stats().frames_dropped.load(Ordering::Relaxed) > 0
    });
    // Read everything that was kept: whole frames, strictly increasing.
    writer.end(4);
    client
      .set_read_timeout(Some(Duration::from_secs(5)))
      .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
      match client.read(&mut buf) {
        Ok(0) => break,
        Ok(n) => got.extend_from_slice(&buf[..n]),
        Err(_) => break,
      }
      if writer.stats().queued_bytes.load(Ordering::Relaxed) == 0 && got.len() % frame_len == 0 {
        client
          .set_read_timeout(Some(Duration::from_millis(200)))
          .unwrap();
      }
    }
    assert_eq!(got.len() % frame_len, 0);
    let seq: Vec<u32> = got
      .chunks(frame_len)
      .map(|c| u32::from_be_bytes(c[..4].try_into().unwrap()))
      .collect();
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
    assert!(seq.len() < 600);
  }

  #[test]
  fn a_reset_connection_is_reported_dead() {
    let (writer, rx) = writer(WriterConfig::default());
    let (server, client) = pair();
    writer.add(
      9,
      server.as_fd().try_clone_to_owned().unwrap(),
      Arc::default(),
    );
    drop(client);
    drop(server);
    let frame: Arc<[u8]> = vec![b'y'; 1024].into();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
      writer.broadcast(frame.clone());
      let events = writer.take_events();
      if !events.is_empty() {
        assert_eq!(events, vec![WriterEvent::Dead(9, DeadReason::WriteError)]);
        break;
      }
      assert!(Instant::now() < deadline);
      let _ = rx.recv_timeout(Duration::from_millis(20));
    }
  }

  #[test]
  fn the_fd_budget_leaves_room_for_node() {
    assert_eq!(budget_for_limit(1024), 448);
    assert_eq!(budget_for_limit(20_000), 9_900);
    assert_eq!(budget_for_limit(100), 0);
  }

  #[test]
  #[cfg(target_os = "linux")]
  fn the_fd_budget_follows_this_process_limit() {
    // The limit getrlimit reports is the one the kernel shows for this process.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
      .lines()
      .find(|l| l.starts_with("Max open files"))
      .unwrap();
    let soft: usize = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(open_files_limit(), Some(soft));
    assert_eq!(fd_budget(), budget_for_limit(soft));
  }

  #[test]
  fn payload_bytes_exclude_the_chunk_framing() {
    assert_eq!(chunk_payload_len(b"c\r\ndata: \"hi\"\n\n\r\n"), 12);
    assert_eq!(chunk_payload_len(b"no chunk"), 8);
  }

  #[test]
  fn coalescing_merges_sends_with_their_neighbours_up_to_a_barrier() {
    let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
    let out = coalesce(vec![
      Command::Send(vec![1], bytes(b"a")),
      Command::Send(vec![2], bytes(b"b")),
      Command::Broadcast(vec![bytes(b"c")]),
      Command::Remove(1),
      Command::Broadcast(vec![bytes(b"d")]),
      Command::Send(vec![2], bytes(b"e")),
      Command::Broadcast(vec![bytes(b"f")]),
    ]);
    assert_eq!(out.len(), 3);
    let targets = |run: &[Delivery]| run.iter().map(|d| d.to.clone()).collect::<Vec<_>>();
    assert!(
      matches!(&out[0], Command::Mixed(run) if targets(run) == [Some(vec![1]), Some(vec![2]), None])
    );
    assert!(matches!(&out[1], Command::Remove(1)));
    assert!(matches!(&out[2], Command::Mixed(run) if targets(run) == [None, Some(vec![2]), None]));
  }

  #[test]
  fn bus_entries_that_queued_up_merge_in_order_up_to_a_barrier() {
    use crate::bus::entry::{Entry, EntryId, Route};
    let frame = |ms: u64| {
      let entry = Entry {
        route: Route::All,
        event: None,
        retry: None,
        data: ms.to_string(),
        origin: None,
      };
      BusFrame::new(Some(EntryId { ms, seq: 0 }), &entry)
    };
    let bus =
      |ids: &[u64]| Command::Bus(ids.iter().map(|&ms| frame(ms)).collect::<Vec<_>>().into());
    let ids = |c: &Command| match c {
      Command::Bus(frames) => frames.iter().map(|f| f.id.unwrap().ms).collect::<Vec<_>>(),
      _ => Vec::new(),
    };
    let out = coalesce(vec![
      bus(&[1]),
      bus(&[2, 3]),
      bus(&[4]),
      Command::Remove(7),
      bus(&[5]),
    ]);
    assert_eq!(out.len(), 3);
    assert_eq!(ids(&out[0]), [1, 2, 3, 4]);
    assert!(
      matches!(out[1], Command::Remove(7)),
      "other commands are barriers"
    );
    assert_eq!(ids(&out[2]), [5]);
    // A run stops growing at its cap.
    let many: Vec<u64> = (0..MAX_BUS_RUN as u64).collect();
    assert_eq!(coalesce(vec![bus(&many), bus(&[9_999])]).len(), 2);
  }

  /// Runs `f` on a writer state inside a runtime, without the thread, so a
  /// test controls exactly which commands arrive together.
  fn with_state(config: WriterConfig, f: impl FnOnce(&Rc<WriterState>)) {
    let runtime = tokio::runtime::Builder::new_current_thread()
      .enable_io()
      .enable_time()
      .build()
      .unwrap();
    LocalSet::new().block_on(&runtime, async {
      let state = Rc::new(WriterState {
        conns: RefCell::new(Table::default()),
        config: Cell::new(config),
        events: Arc::default(),
        notify: Rc::new(|| {}),
        stats: Arc::default(),
      });
      f(&state);
    });
  }

  fn add(state: &Rc<WriterState>, wire: WireId, server: &TcpStream) {
    handle(
      state,
      Command::Add(
        wire,
        server.as_fd().try_clone_to_owned().unwrap().into(),
        Arc::default(),
        false,
      ),
    );
  }

  #[test]
  fn a_merged_run_reaches_each_connection_in_order() {
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    let (c_server, mut c) = pair();
    with_state(WriterConfig::default(), |state| {
      add(state, 1, &a_server);
      add(state, 2, &b_server);
      add(state, 3, &c_server);
      let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
      let merged = coalesce(vec![
        Command::Broadcast(vec![bytes(b"1;")]),
        Command::Send(vec![2, 7], bytes(b"2;")),
        Command::Send(vec![1, 2], bytes(b"3;")),
        Command::Broadcast(vec![bytes(b"4;")]),
      ]);
      assert_eq!(merged.len(), 1);
      for command in merged {
        handle(state, command);
      }
      assert_eq!(state.stats.frames_sent.load(Ordering::Relaxed), 9);
    });
    assert_eq!(read_exactly(&mut a, 6), b"1;3;4;");
    assert_eq!(read_exactly(&mut b, 8), b"1;2;3;4;");
    // Named by no send: the shared broadcast frames only.
    assert_eq!(read_exactly(&mut c, 4), b"1;4;");
  }

  #[test]
  fn a_run_of_sends_only_writes_to_the_connections_it_names() {
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    with_state(WriterConfig::default(), |state| {
      add(state, 1, &a_server);
      add(state, 2, &b_server);
      let merged = coalesce(vec![
        Command::Send(vec![2], Arc::from(&b"x;"[..])),
        Command::Send(vec![2], Arc::from(&b"y;"[..])),
      ]);
      for command in merged {
        handle(state, command);
      }
    });
    assert_eq!(read_exactly(&mut b, 4), b"x;y;");
    a.set_nonblocking(true).unwrap();
    assert_eq!(
      a.read(&mut [0; 8]).unwrap_err().kind(),
      io::ErrorKind::WouldBlock
    );
  }

  #[test]
  fn a_connection_disconnected_in_a_merged_run_gets_nothing_more() {
    let (slow_server, _slow) = pair();
    let (b_server, mut b) = pair();
    with_state(
      WriterConfig {
        max_buffered_bytes: 256 * 1024,
        slow_policy: SlowPolicy::Disconnect,
        ..WriterConfig::default()
      },
      |state| {
        add(state, 1, &slow_server);
        add(state, 2, &b_server);
        // Fill the socket of the client that never reads until it has a queue.
        let fill: Arc<[u8]> = vec![b'x'; 32 * 1024].into();
        while state.stats.queued_bytes.load(Ordering::Relaxed) == 0 {
          handle(state, Command::Send(vec![1], fill.clone()));
        }
        let big: Arc<[u8]> = vec![b'y'; 300 * 1024].into();
        let merged = coalesce(vec![
          Command::Send(vec![1], big),
          Command::Broadcast(vec![Arc::from(&b"b;"[..])]),
          Command::Send(vec![2], Arc::from(&b"c;"[..])),
        ]);
        assert_eq!(merged.len(), 1);
        for command in merged {
          handle(state, command);
        }
        let events = std::mem::take(&mut *state.events.lock().unwrap());
        assert_eq!(events, vec![WriterEvent::Dead(1, DeadReason::Slow)]);
        assert_eq!(state.stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert!(state.conns.borrow().get(1).is_none());
      },
    );
    assert_eq!(read_exactly(&mut b, 4), b"b;c;");
  }

  #[test]
  fn sends_to_the_same_connections_share_one_delivery() {
    let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
    let out = coalesce(vec![
      Command::Send(vec![1, 2], bytes(b"a")),
      Command::Send(vec![1, 2], bytes(b"b")),
      Command::Send(vec![2], bytes(b"c")),
    ]);
    let shape = |run: &[Delivery]| {
      run
        .iter()
        .map(|d| (d.to.clone(), d.frames.len()))
        .collect::<Vec<_>>()
    };
    assert!(
      matches!(&out[..], [Command::Mixed(run)] if shape(run) == [(Some(vec![1, 2]), 2), (Some(vec![2]), 1)])
    );
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    with_state(WriterConfig::default(), |state| {
      add(state, 1, &a_server);
      add(state, 2, &b_server);
      for command in coalesce(vec![
        Command::Send(vec![1, 2], bytes(b"x;")),
        Command::Send(vec![1, 2], bytes(b"y;")),
      ]) {
        handle(state, command);
      }
    });
    assert_eq!(read_exactly(&mut a, 4), b"x;y;");
    assert_eq!(read_exactly(&mut b, 4), b"x;y;");
  }

  #[test]
  fn a_merged_run_holds_at_most_one_writev_of_frames() {
    let sends = (0..100u8)
      .map(|i| Command::Send(vec![1], Arc::from(&[i][..])))
      .collect();
    let out = coalesce(sends);
    let sizes: Vec<_> = out.iter().map(|c| frames_in(c).unwrap()).collect();
    assert_eq!(sizes, [MAX_RUN_FRAMES, 100 - MAX_RUN_FRAMES]);
  }

  #[test]
  fn coalescing_joins_only_adjacent_broadcasts() {
    let frame = |b: &[u8]| vec![Arc::<[u8]>::from(b)];
    let out = coalesce(vec![
      Command::Broadcast(frame(b"a")),
      Command::Broadcast(frame(b"b")),
      Command::End(1),
      Command::Broadcast(frame(b"c")),
    ]);
    assert_eq!(out.len(), 3);
    assert!(matches!(&out[0], Command::Broadcast(f) if f.len() == 2 && &f[1][..] == b"b"));
    assert!(matches!(&out[1], Command::End(1)));
    assert!(matches!(&out[2], Command::Broadcast(f) if f.len() == 1));
  }
}
