//! The owner's side of one writer thread: [`SocketWriter`] for the JS
//! thread (through the hub's shards) and [`WriterPort`] for the Redis bus's
//! thread. Both only queue commands; nothing here waits for the thread.

use crate::registry::ConnKey;
use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::command::{Command, Delivery};
use super::io::SocketFd;
use super::{run, ConnGauge, WriterConfig, WriterEvent};
use crate::bus::entry::{BusFrame, EntryId};
use crate::mailbox::{Mailbox, Wake};
use crate::stats::Stats;

/// Handle owned by the binding. Dropping it (or [`SocketWriter::close`])
/// lets the thread finish what it holds and exit, closing every fd; nobody
/// waits for it, so the JS thread never blocks on a join.
pub struct SocketWriter {
  tx: Option<mpsc::UnboundedSender<Command>>,
  events: Arc<Mailbox<WriterEvent>>,
  stats: Arc<Stats>,
  /// New connections not yet handed to the thread: while the JS thread is
  /// the only sender, each send would wake the thread (a syscall and often
  /// a context switch on the JS thread's core), so the connections a burst
  /// of registrations adds wait here until the next command or
  /// [`SocketWriter::flush`] (the end of the JS turn), and go together:
  /// one wake-up. Nothing is written to a connection before its add, and
  /// every other command takes the held ones first, so the order the
  /// thread sees is the order they were submitted in.
  held: RefCell<Vec<Command>>,
  /// False once another thread has a sender ([`SocketWriter::port`]): its
  /// commands could then overtake a held add.
  holds: Cell<bool>,
}

impl SocketWriter {
  /// Starts the writer thread. `notify` is called (from that thread) when
  /// events become available after the queue was empty.
  /// Counts into `stats`, shared with the hub.
  pub fn start(config: WriterConfig, stats: Arc<Stats>, notify: Wake) -> io::Result<Self> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Arc::new(Mailbox::new(notify));
    run::spawn(config, stats.clone(), events.clone(), rx)?;
    Ok(Self {
      tx: Some(tx),
      events,
      stats,
      held: RefCell::new(Vec::new()),
      holds: Cell::new(true),
    })
  }

  /// Sends `command` after the held adds.
  fn submit(&self, command: Command) {
    self.flush();
    self.enqueue(command);
  }

  fn enqueue(&self, command: Command) {
    if let Some(tx) = &self.tx {
      // Fails only once the thread is gone, when there is nothing to write to.
      let _ = tx.send(command);
    }
  }

  /// Hands the held adds to the thread, in order (one wake-up for all).
  pub fn flush(&self) {
    let held = std::mem::take(&mut *self.held.borrow_mut());
    for command in held {
      self.enqueue(command);
    }
  }

  /// Whether adds wait for [`SocketWriter::flush`] (for the tests).
  #[cfg(test)]
  pub fn has_held(&self) -> bool {
    !self.held.borrow().is_empty()
  }

  /// Hands a connection to the writer. `fd` must be a duplicate of a
  /// connected, non-blocking TCP socket's fd; the writer closes it when done.
  pub fn add(&self, wire: ConnKey, fd: impl Into<SocketFd>, gauge: Arc<ConnGauge>) {
    self.add_with(wire, fd.into(), gauge, false);
  }

  /// [`SocketWriter::add`], with its replay gate held from the start when
  /// `held` (it reconnected with a `Last-Event-ID` to a hub with a bus).
  pub fn add_with(&self, wire: ConnKey, fd: SocketFd, gauge: Arc<ConnGauge>, held: bool) {
    let command = Command::Add(wire, fd, gauge, held);
    if self.holds.get() {
      self.held.borrow_mut().push(command);
    } else {
      self.enqueue(command);
    }
  }

  /// Writes the app's own bytes (one HTTP chunk) to `wire`, after what was
  /// submitted before; the caller has added them to the gauge's `submitted`.
  pub fn write(&self, wire: ConnKey, chunk: Arc<[u8]>) {
    self.submit(Command::Write(wire, chunk));
  }

  /// Writes several frames to the given connections, in order (a replay).
  pub fn send_frames(&self, wires: Vec<ConnKey>, frames: Vec<Arc<[u8]>>) {
    self.submit(Command::Mixed(vec![Delivery {
      to: Some(wires),
      frames,
    }]));
  }

  /// A sender the Redis bus's thread uses to hand this writer its entries
  /// and replays, ordered with everything else submitted.
  pub fn port(&self) -> Option<WriterPort> {
    // From now on another thread sends too: nothing is held any more.
    self.flush();
    self.holds.set(false);
    self.tx.clone().map(|tx| WriterPort { tx })
  }

  /// Sets the client id and channels bus entries are routed by.
  pub fn route(&self, wire: ConnKey, client: Arc<str>, channels: Vec<Arc<str>>) {
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
  pub fn send(&self, wires: Vec<ConnKey>, bytes: Arc<[u8]>) {
    self.submit(Command::Send(wires, bytes));
  }

  /// Flushes what is queued for `wire`, then reports [`WriterEvent::Ended`].
  pub fn end(&self, wire: ConnKey) {
    self.submit(Command::End(wire));
  }

  /// Forgets `wire` at once (its client is gone), closing the fd.
  pub fn remove(&self, wire: ConnKey) {
    self.submit(Command::Remove(wire));
  }

  /// Applies new bounds to every connection, after what was submitted
  /// before.
  pub fn configure(&self, config: WriterConfig) {
    self.submit(Command::Configure(config));
  }

  /// The events reported since the last call.
  pub fn take_events(&self) -> Vec<WriterEvent> {
    self.events.take()
  }

  /// What this thread has counted.
  pub fn stats(&self) -> &Stats {
    &self.stats
  }
}

impl Drop for SocketWriter {
  fn drop(&mut self) {
    // Closing the channel ends the command loop; the runtime then drops
    // every connection (closing the fds) and the thread exits on its own.
    self.tx = None;
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
  pub fn release(&self, wire: ConnKey, frames: Vec<Arc<[u8]>>, cursor: Option<EntryId>) {
    let _ = self.tx.send(Command::Release(wire, frames, cursor));
  }
}
