//! One connection's write path: straight to the socket with one `writev`
//! while nothing is queued, else into its queue by reference (no copy per
//! client), bounded by `max_buffered_bytes` and the slow-client policy, and
//! flushed by a task that waits for the socket to become writable.

use std::io::{self, IoSlice, Write};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::{Conn, Pending};
use super::state::WriterState;
use super::DeadReason;
use crate::backpressure::{Admit, SlowPolicy};

/// At most this many frames per `writev`; the kernel's IOV_MAX is 1024.
pub(super) const MAX_IOVECS: usize = 64;

/// Writes `frames` to one connection: straight to the socket with one
/// `writev` when nothing is queued, else (or for what the socket did not
/// take) into its queue.
pub(super) fn write_to(state: &Rc<WriterState>, conn: &Rc<Conn>, frames: &[Arc<[u8]>]) {
  write_frames(state, conn, frames, false);
  // A write straight to an empty socket may be what empties the backlog.
  state.maybe_drain(conn);
}

/// [`write_to`] for the hub's frames (`app` false: the slow-client policy
/// applies) or the app's own writes (`app` true: never dropped, since a
/// chunk of an app's stream cannot be skipped without corrupting it).
pub(super) fn write_frames(
  state: &Rc<WriterState>,
  conn: &Rc<Conn>,
  frames: &[Arc<[u8]>],
  app: bool,
) {
  if conn.ending.get() {
    return;
  }
  if conn.queue.borrow().is_empty() {
    write_through(state, conn, frames, app);
  } else {
    // Behind what is queued, to keep the order.
    queue_all(state, conn, frames, app);
  }
}

/// Queues every frame, until one disconnects the connection as too slow
/// (nothing more goes to it then).
fn queue_all(state: &Rc<WriterState>, conn: &Rc<Conn>, frames: &[Arc<[u8]>], app: bool) {
  for frame in frames {
    if !enqueue(state, conn, frame, app) {
      break;
    }
  }
}

/// Writes to an empty queue's socket, [`MAX_IOVECS`] frames per `writev`,
/// until it is full; what it did not take is queued.
fn write_through(state: &Rc<WriterState>, conn: &Rc<Conn>, frames: &[Arc<[u8]>], app: bool) {
  let mut rest = frames;
  while !rest.is_empty() {
    let batch = &rest[..rest.len().min(MAX_IOVECS)];
    let slices: Vec<IoSlice<'_>> = batch
      .iter()
      .map(|f| IoSlice::new(conn.framing.wire(f)))
      .collect();
    let written = match conn.socket.write_vectored(&slices) {
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
    if let Some((full_at, partial)) = count_written(state, conn, batch, written) {
      queue_rest(state, conn, &rest[full_at..], partial, app);
      return;
    }
    rest = &rest[batch.len()..];
  }
}

/// Counts the frames of `batch` that `written` bytes finished. Where the
/// socket stopped short: the index of the first frame it did not finish,
/// and how many of its bytes it took.
fn count_written(
  state: &WriterState,
  conn: &Conn,
  batch: &[Arc<[u8]>],
  mut written: usize,
) -> Option<(usize, usize)> {
  for (i, frame) in batch.iter().enumerate() {
    let len = conn.framing.wire(frame).len();
    if written < len {
      return Some((i, written));
    }
    written -= len;
    state.frame_done(frame);
  }
  None
}

/// The socket is full at `rest[0]`, of which it took `partial` bytes. A
/// frame it took in part is always finished, whatever the bound says
/// (never half a frame); the rest queue under the policy, and a flush task
/// waits for the socket.
fn queue_rest(
  state: &Rc<WriterState>,
  conn: &Rc<Conn>,
  rest: &[Arc<[u8]>],
  partial: usize,
  app: bool,
) {
  let mut left = rest;
  if partial > 0 {
    if let Some((frame, after)) = rest.split_first() {
      force_enqueue(state, conn, frame, partial);
      left = after;
    }
  }
  queue_all(state, conn, left, app);
  if !conn.queue.borrow().is_empty() {
    start_flush(state, conn);
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

/// Queues the rest of a frame from `offset`, whatever the bound.
fn force_enqueue(state: &WriterState, conn: &Conn, bytes: &Arc<[u8]>, offset: usize) {
  let len = conn.framing.wire(bytes).len() - offset;
  conn.queue.borrow_mut().push_back(Pending {
    bytes: bytes.clone(),
    offset,
  });
  conn.gauge.queued.fetch_add(len, Ordering::SeqCst);
  state.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
}

/// Starts the connection's flush task unless one runs.
fn start_flush(state: &Rc<WriterState>, conn: &Rc<Conn>) {
  let mut task = conn.flush_task.borrow_mut();
  if task.as_ref().is_some_and(|t| !t.is_finished()) {
    return;
  }
  // Removing the connection from the table aborts this task, which drops
  // the last reference and closes the fd.
  *task = Some(tokio::task::spawn_local(flush(state.clone(), conn.clone())));
}

/// Writes the queue out as the socket takes it, [`MAX_IOVECS`] frames per
/// `writev`; once it is empty, finishes an end or reports a `drain`.
async fn flush(state: Rc<WriterState>, conn: Rc<Conn>) {
  loop {
    let written = conn
      .socket
      .write_when_writable(|mut stream| {
        let queue = conn.queue.borrow();
        let slices: Vec<IoSlice<'_>> = queue
          .iter()
          .take(MAX_IOVECS)
          .map(|p| IoSlice::new(&conn.framing.wire(&p.bytes)[p.offset..]))
          .collect();
        stream.write_vectored(&slices)
      })
      .await;
    let Ok(written) = written else {
      state.kill(&conn, DeadReason::WriteError);
      return;
    };
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
}

/// Takes `written` bytes off the head of the queue, counting each frame
/// that has wholly left.
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
  use crate::registry::ConnKey;
  use std::io::Read;
  use std::sync::atomic::Ordering;
  use std::sync::Arc;
  use std::time::{Duration, Instant};

  use crate::test_util::{pair, wait_for};
  use crate::writer::io::dup;
  use crate::writer::testing::{read_exactly, wait_event, writer};
  use crate::writer::{DeadReason, SlowPolicy, WriterConfig, WriterEvent};

  #[test]
  fn a_full_socket_is_queued_then_flushed_completely() {
    let (writer, rx) = writer(WriterConfig {
      max_buffered_bytes: 64 << 20,
      slow_policy: SlowPolicy::Disconnect,
      ..WriterConfig::default()
    });
    let (server, mut client) = pair();
    writer.add(ConnKey::test(7), dup(&server), Arc::default());
    // Far more than the kernel buffers hold while nobody reads.
    let frame: Arc<[u8]> = (0..64 * 1024)
      .map(|i| (i % 251) as u8)
      .collect::<Vec<_>>()
      .into();
    for _ in 0..200 {
      writer.broadcast(frame.clone());
    }
    writer.end(ConnKey::test(7));
    let got = read_exactly(&mut client, frame.len() * 200);
    for chunk in got.chunks(frame.len()) {
      assert_eq!(chunk, &frame[..]);
    }
    assert_eq!(
      wait_event(&writer, &rx),
      vec![WriterEvent::Ended(ConnKey::test(7))]
    );
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
    writer.add(ConnKey::test(3), dup(&server), Arc::default());
    let frame: Arc<[u8]> = vec![b'x'; 32 * 1024].into();
    for _ in 0..400 {
      writer.broadcast(frame.clone());
      std::thread::sleep(Duration::from_micros(200));
    }
    let events = wait_event(&writer, &rx);
    assert_eq!(
      events,
      vec![WriterEvent::Dead(ConnKey::test(3), DeadReason::Slow)]
    );
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
    writer.add(ConnKey::test(4), dup(&server), Arc::default());
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
    writer.end(ConnKey::test(4));
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
    writer.add(ConnKey::test(9), dup(&server), Arc::default());
    drop(client);
    drop(server);
    let frame: Arc<[u8]> = vec![b'y'; 1024].into();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
      writer.broadcast(frame.clone());
      let events = writer.take_events();
      if !events.is_empty() {
        assert_eq!(
          events,
          vec![WriterEvent::Dead(ConnKey::test(9), DeadReason::WriteError)]
        );
        break;
      }
      assert!(Instant::now() < deadline);
      let _ = rx.recv_timeout(Duration::from_millis(20));
    }
  }
}
