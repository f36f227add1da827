//! One connection as its writer thread holds it, and the table of them.

use crate::registry::ConnKey;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle as TaskHandle;

use super::io::Socket;
use super::ConnGauge;
use crate::bus::gate::{Gate, HeldLocal};
use crate::frame::Framing;

/// A chunk waiting for the socket; `offset` counts bytes of its wire form
/// ([`Framing::wire`]) already written.
pub(super) struct Pending {
  pub(super) bytes: Arc<[u8]>,
  pub(super) offset: usize,
}

/// One connection: its socket, what waits for it, its end, and what bus
/// entries route by.
pub(super) struct Conn {
  pub(super) wire: ConnKey,
  pub(super) socket: Socket,
  pub(super) framing: Framing,
  pub(super) queue: RefCell<VecDeque<Pending>>,
  pub(super) gauge: Arc<ConnGauge>,
  pub(super) ending: Cell<bool>,
  pub(super) flush_task: RefCell<Option<TaskHandle<()>>>,
  pub(super) end_timer: RefCell<Option<TaskHandle<()>>>,
  /// What bus entries route by, and its replay gate.
  pub(super) client: RefCell<Arc<str>>,
  pub(super) channels: RefCell<Vec<Arc<str>>>,
  pub(super) gate: Cell<Gate>,
  /// Events without an id (delivered locally while Redis was away) that
  /// came while the gate was held: they follow the replay.
  pub(super) held_local: RefCell<HeldLocal>,
}

impl Conn {
  /// A connection with nothing queued and no route yet; its gate held from
  /// the start when `held`.
  pub(super) fn new(
    wire: ConnKey,
    socket: Socket,
    framing: Framing,
    gauge: Arc<ConnGauge>,
    held: bool,
  ) -> Conn {
    Conn {
      wire,
      socket,
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
    }
  }

  /// Bytes in its queue.
  pub(super) fn queued(&self) -> usize {
    self.gauge.queued.load(Ordering::Relaxed)
  }
}

/// Connections in a dense vector (a broadcast walks them all) with an index
/// for the targeted commands; removal swaps the last one in.
#[derive(Default)]
pub(super) struct Table {
  conns: Vec<Rc<Conn>>,
  index: HashMap<ConnKey, usize>,
}

impl Table {
  pub(super) fn get(&self, wire: ConnKey) -> Option<Rc<Conn>> {
    self.index.get(&wire).map(|&i| self.conns[i].clone())
  }

  /// Every connection, as a list that stays valid while writing kills some
  /// (which reorders the table).
  pub(super) fn snapshot(&self) -> Vec<Rc<Conn>> {
    self.conns.clone()
  }

  /// The wires of every connection held.
  pub(super) fn wires(&self) -> Vec<ConnKey> {
    self.index.keys().copied().collect()
  }

  pub(super) fn insert(&mut self, conn: Rc<Conn>) {
    if let Some(old) = self.remove(conn.wire) {
      drop(old);
    }
    self.index.insert(conn.wire, self.conns.len());
    self.conns.push(conn);
  }

  /// Takes a connection out and stops its flush task, so nothing keeps its
  /// fd open once the caller drops it.
  pub(super) fn remove(&mut self, wire: ConnKey) -> Option<Rc<Conn>> {
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
