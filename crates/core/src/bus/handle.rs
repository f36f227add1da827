//! [`Bus`]: the JS thread's handle on the bus task.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::admission::{DeliveryLock, Mark};
use super::config::{client, BusConfig, BACKOFF_CAP, BACKOFF_FIRST, MAX_PENDING_APPENDS, RECENT};
use super::entry::Entry;
use super::error::BusError;
use super::link::{Link, LinkState, Notice};
use super::live::PresenceCheck;
use super::machine::BusMachine;
use super::read_size::ReadSize;
use super::request::{BusEvent, ReplayRequest, Request};
use super::shared::BusShared;
use super::stats::{BusStats, BusStatsSnapshot};
use super::task::BusTask;
use crate::writer::WriterPort;

/// The JS thread's handle on the bus thread. Dropping it stops the thread.
pub struct Bus {
  tx: mpsc::UnboundedSender<Request>,
  shared: Arc<BusShared>,
  /// This instance's id in `origin` fields and its presence key.
  instance: String,
  next_seq: u64,
}

impl Bus {
  /// Starts the bus thread. `notify` is called (from it) when events wait
  /// in [`Bus::take_events`].
  pub fn start(config: BusConfig, notify: Arc<dyn Fn() + Send + Sync>) -> io::Result<Bus> {
    let client = client(&config.url, config.ca.as_deref())
      .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(BusShared {
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
    let reader = BusTask {
      client,
      presence_key: format!("{}:presence:{}", config.stream, instance),
      config,
      shared: shared.clone(),
      rx,
      link: Link::new(BACKOFF_FIRST, BACKOFF_CAP),
      machine: BusMachine::default(),
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
        result: Err(BusError::Closed),
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
