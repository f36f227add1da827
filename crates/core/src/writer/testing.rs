//! Helpers shared by the writer's tests.

use crate::registry::ConnKey;
use std::io::Read;
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::LocalSet;

use super::command::Command;
use super::io::dup;
use super::run::apply;
use super::state::WriterState;
use super::{SocketWriter, WriterConfig, WriterEvent};
use crate::mailbox::Mailbox;

/// A writer thread, and a receiver that hears its `notify`.
pub(super) fn writer(config: WriterConfig) -> (SocketWriter, std_mpsc::Receiver<()>) {
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

/// The next `len` bytes the client reads, failing after 5 s.
pub(super) fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
  client
    .set_read_timeout(Some(Duration::from_secs(5)))
    .unwrap();
  let mut out = vec![0; len];
  client.read_exact(&mut out).unwrap();
  out
}

/// The writer's next events, failing after 5 s without one.
pub(super) fn wait_event(writer: &SocketWriter, rx: &std_mpsc::Receiver<()>) -> Vec<WriterEvent> {
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

/// Runs `f` on a writer state inside a runtime, without the thread, so a
/// test controls exactly which commands arrive together.
pub(super) fn with_state(config: WriterConfig, f: impl FnOnce(&Rc<WriterState>)) {
  let runtime = tokio::runtime::Builder::new_current_thread()
    .enable_io()
    .enable_time()
    .build()
    .unwrap();
  LocalSet::new().block_on(&runtime, async {
    let state = Rc::new(WriterState::new(
      config,
      Arc::new(Mailbox::new(Box::new(|| {}))),
      Arc::default(),
    ));
    f(&state);
  });
}

/// Hands `state` a duplicate of `server`'s fd as connection `wire`.
pub(super) fn add(state: &Rc<WriterState>, wire: ConnKey, server: &TcpStream) {
  apply(
    state,
    Command::Add(wire, dup(server), Arc::default(), false),
  );
}
