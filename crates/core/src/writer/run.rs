//! The writer thread: its runtime, its command loop, and what each command
//! does to the state.

use crate::registry::ConnKey;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use super::bus::{deliver_bus_frames, release_replay, set_route};
use super::command::{coalesce, deliveries, Command};
use super::conn::Conn;
use super::fanout::{broadcast, fan_out};
use super::io::SocketFd;
use super::state::WriterState;
use super::write::write_frames;
use super::{ConnGauge, DeadReason, WriterConfig, WriterEvent};
use crate::mailbox::Mailbox;
use crate::stats::Stats;

/// Starts the thread (its runtime built here, so a failure to build it is
/// the caller's error). It reports [`WriterEvent::Stopped`] or, after a
/// panic, [`WriterEvent::Died`] as its last event.
pub(super) fn spawn(
  config: WriterConfig,
  stats: Arc<Stats>,
  events: Arc<Mailbox<WriterEvent>>,
  rx: mpsc::UnboundedReceiver<Command>,
) -> io::Result<()> {
  let runtime = tokio::runtime::Builder::new_current_thread()
    .enable_io()
    .enable_time()
    .build()?;
  std::thread::Builder::new()
    .name("sse-socket-writer".into())
    .spawn(move || thread_main(runtime, config, stats, events, rx))?;
  Ok(())
}

fn thread_main(
  runtime: Runtime,
  config: WriterConfig,
  stats: Arc<Stats>,
  events: Arc<Mailbox<WriterEvent>>,
  rx: mpsc::UnboundedReceiver<Command>,
) {
  let state = Rc::new(WriterState::new(config, events.clone(), stats.clone()));
  // A panic here must not go unnoticed (its connections would hang)
  // nor cross into Node: the binding hears of it and tears down.
  let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
    let local = LocalSet::new();
    local.block_on(&runtime, run(state, rx));
  }));
  // Unwinding dropped the state, the connections and their fds.
  stats.queued_bytes.store(0, Ordering::Relaxed);
  let last = match outcome {
    Ok(()) => WriterEvent::Stopped,
    Err(_) => WriterEvent::Died,
  };
  events.post(last);
}

/// Runs the commands as they come, merging those that queued up together,
/// until [`Command::Stop`] or the channel closes; then drops every
/// connection, closing the fds.
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
      apply(&state, command);
    }
  }
  // The binding went away: drop every connection, closing the fds.
  let wires = state.conns.borrow().wires();
  for wire in wires {
    let conn = state.conns.borrow_mut().remove(wire);
    drop(conn);
  }
}

/// Does what one command asks.
pub(super) fn apply(state: &Rc<WriterState>, command: Command) {
  match command {
    Command::Add(wire, fd, gauge, held) => add(state, wire, fd, gauge, held),
    Command::Write(wire, chunk) => app_write(state, wire, &chunk),
    Command::Broadcast(frames) => broadcast(state, &frames),
    command @ (Command::Send(..) | Command::Mixed(_)) => fan_out(state, &deliveries(command)),
    Command::End(wire) => end(state, wire),
    Command::Remove(wire) => {
      let conn = state.conns.borrow_mut().remove(wire);
      if let Some(conn) = conn {
        state.release_queue(&conn);
      }
    }
    Command::Configure(config) => state.config.set(config),
    Command::Bus(frames) => deliver_bus_frames(state, &frames),
    Command::Release(wire, frames, cursor) => release_replay(state, wire, frames, cursor),
    Command::Route(wire, client, channels) => set_route(state, wire, client, channels),
    // A panic like any other to the thread and its owner, without the panic
    // hook's message on stderr: the fault is deliberate (tests inject it).
    Command::Crash => std::panic::resume_unwind(Box::new(
      "sse-socket-writer: fault injected by crashWriterForTest",
    )),
    // Handled by the command loop.
    Command::Stop => {}
  }
}

/// Takes a new connection, or reports it dead when its fd cannot be
/// registered.
fn add(state: &WriterState, wire: ConnKey, fd: SocketFd, gauge: Arc<ConnGauge>, held: bool) {
  match fd.register() {
    Ok((socket, framing)) => {
      let conn = Conn::new(wire, socket, framing, gauge, held);
      state.conns.borrow_mut().insert(Rc::new(conn));
    }
    Err(_) => state.emit(WriterEvent::Dead(wire, DeadReason::WriteError)),
  }
}

/// The app's own write: uncounted from `submitted`, never dropped.
fn app_write(state: &Rc<WriterState>, wire: ConnKey, chunk: &Arc<[u8]>) {
  // A connection gone already needs nothing: nobody reads its gauge.
  let conn = state.conns.borrow().get(wire);
  if let Some(conn) = conn {
    conn
      .gauge
      .submitted
      .fetch_sub(chunk.len(), Ordering::SeqCst);
    write_frames(state, &conn, std::slice::from_ref(chunk), true);
    state.maybe_drain(&conn);
  }
}

/// Lets go of a connection once its queue is out, or tears it down when
/// that takes longer than `end_timeout`.
fn end(state: &Rc<WriterState>, wire: ConnKey) {
  let conn = state.conns.borrow().get(wire);
  let Some(conn) = conn else { return };
  conn.ending.set(true);
  if conn.queue.borrow().is_empty() {
    state.finish_end(&conn);
    return;
  }
  let timeout = state.config.get().end_timeout;
  let (timer_state, timer_conn) = (state.clone(), conn.clone());
  *conn.end_timer.borrow_mut() = Some(tokio::task::spawn_local(async move {
    tokio::time::sleep(timeout).await;
    timer_state.kill(&timer_conn, DeadReason::EndTimeout);
  }));
}
