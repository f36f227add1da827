//! Frames for many connections: a broadcast walks the table once with one
//! shared list, and a merged run gives each connection its share of every
//! frame in the run, in order, in one `writev`.

use crate::registry::ConnKey;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::command::Delivery;
use super::state::WriterState;
use super::write::write_to;

/// Writes `frames` to every connection, from the one list they share.
pub(super) fn broadcast(state: &Rc<WriterState>, frames: &[Arc<[u8]>]) {
  // A snapshot: writing may kill a connection, which reorders the table.
  let conns = state.conns.borrow().snapshot();
  for conn in conns {
    write_to(state, &conn, frames);
  }
}

/// Writes a merged run with one [`write_to`] per connection, each getting
/// its frames in the run's order. Sends to one set of connections share
/// their frames; otherwise connections no send names get the run's
/// broadcast frames from one shared list, only the named ones get a list of
/// their own, and a run without a broadcast touches only them.
pub(super) fn fan_out(state: &Rc<WriterState>, run: &[Delivery]) {
  if let [Delivery {
    to: Some(wires),
    frames,
  }] = run
  {
    for wire in wires {
      write_one(state, *wire, frames);
    }
    return;
  }
  let everyone = broadcast_frames(run);
  let named = frames_of_named(run);
  if everyone.is_empty() {
    for (wire, frames) in &named {
      write_one(state, *wire, frames);
    }
    return;
  }
  // A snapshot: writing may kill a connection, which reorders the table.
  let conns = state.conns.borrow().snapshot();
  for conn in &conns {
    let frames = named.get(&conn.wire).unwrap_or(&everyone);
    write_to(state, conn, frames);
  }
}

/// Writes `frames` to `wire`, if the writer still holds it.
fn write_one(state: &Rc<WriterState>, wire: ConnKey, frames: &[Arc<[u8]>]) {
  let conn = state.conns.borrow().get(wire);
  if let Some(conn) = conn {
    write_to(state, &conn, frames);
  }
}

/// The run's broadcast frames, in order: what a connection no send names
/// gets.
fn broadcast_frames(run: &[Delivery]) -> Vec<Arc<[u8]>> {
  run
    .iter()
    .filter(|d| d.to.is_none())
    .flat_map(|d| d.frames.iter().cloned())
    .collect()
}

/// For each connection a send in the run names, its share of the run in
/// order: every broadcast frame and the frames of the sends naming it.
fn frames_of_named(run: &[Delivery]) -> HashMap<ConnKey, Vec<Arc<[u8]>>> {
  let mut named: HashMap<ConnKey, Vec<Arc<[u8]>>> = HashMap::new();
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
  named
}

#[cfg(test)]
mod tests {
  use std::io::{self, Read};
  use std::sync::atomic::Ordering;
  use std::sync::Arc;

  use crate::registry::{keys, ConnKey};
  use crate::test_util::pair;
  use crate::writer::command::{coalesce, Command, Delivery};
  use crate::writer::io::dup;
  use crate::writer::run::apply;
  use crate::writer::testing::{add, read_exactly, with_state, writer};
  use crate::writer::{DeadReason, SlowPolicy, WriterConfig, WriterEvent};

  #[test]
  fn broadcasts_and_sends_arrive_in_order() {
    let (writer, _rx) = writer(WriterConfig::default());
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    writer.add(ConnKey::test(1), dup(&a_server), Arc::default());
    writer.add(ConnKey::test(2), dup(&b_server), Arc::default());
    writer.broadcast(Arc::from(&b"one;"[..]));
    writer.send(vec![ConnKey::test(2)], Arc::from(&b"two;"[..]));
    writer.broadcast(Arc::from(&b"three;"[..]));
    assert_eq!(read_exactly(&mut a, 10), b"one;three;");
    assert_eq!(read_exactly(&mut b, 14), b"one;two;three;");
  }

  #[test]
  fn a_merged_run_reaches_each_connection_in_order() {
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    let (c_server, mut c) = pair();
    with_state(WriterConfig::default(), |state| {
      add(state, ConnKey::test(1), &a_server);
      add(state, ConnKey::test(2), &b_server);
      add(state, ConnKey::test(3), &c_server);
      let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
      let merged = coalesce(vec![
        Command::Broadcast(vec![bytes(b"1;")]),
        Command::Send(keys(&[2, 7]), bytes(b"2;")),
        Command::Send(keys(&[1, 2]), bytes(b"3;")),
        Command::Broadcast(vec![bytes(b"4;")]),
      ]);
      assert_eq!(merged.len(), 1);
      for command in merged {
        apply(state, command);
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
      add(state, ConnKey::test(1), &a_server);
      add(state, ConnKey::test(2), &b_server);
      let merged = coalesce(vec![
        Command::Send(vec![ConnKey::test(2)], Arc::from(&b"x;"[..])),
        Command::Send(vec![ConnKey::test(2)], Arc::from(&b"y;"[..])),
      ]);
      for command in merged {
        apply(state, command);
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
        add(state, ConnKey::test(1), &slow_server);
        add(state, ConnKey::test(2), &b_server);
        // Fill the socket of the client that never reads until it has a queue.
        let fill: Arc<[u8]> = vec![b'x'; 32 * 1024].into();
        while state.stats.queued_bytes.load(Ordering::Relaxed) == 0 {
          apply(state, Command::Send(vec![ConnKey::test(1)], fill.clone()));
        }
        let big: Arc<[u8]> = vec![b'y'; 300 * 1024].into();
        let merged = coalesce(vec![
          Command::Send(vec![ConnKey::test(1)], big),
          Command::Broadcast(vec![Arc::from(&b"b;"[..])]),
          Command::Send(vec![ConnKey::test(2)], Arc::from(&b"c;"[..])),
        ]);
        assert_eq!(merged.len(), 1);
        for command in merged {
          apply(state, command);
        }
        let events = state.events.take();
        assert_eq!(
          events,
          vec![WriterEvent::Dead(ConnKey::test(1), DeadReason::Slow)]
        );
        assert_eq!(state.stats.queued_bytes.load(Ordering::Relaxed), 0);
        assert!(state.conns.borrow().get(ConnKey::test(1)).is_none());
      },
    );
    assert_eq!(read_exactly(&mut b, 4), b"b;c;");
  }

  #[test]
  fn sends_to_the_same_connections_share_one_delivery() {
    let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
    let out = coalesce(vec![
      Command::Send(keys(&[1, 2]), bytes(b"a")),
      Command::Send(keys(&[1, 2]), bytes(b"b")),
      Command::Send(vec![ConnKey::test(2)], bytes(b"c")),
    ]);
    let shape = |run: &[Delivery]| {
      run
        .iter()
        .map(|d| (d.to.clone(), d.frames.len()))
        .collect::<Vec<_>>()
    };
    assert!(
      matches!(&out[..], [Command::Mixed(run)] if shape(run) == [(Some(keys(&[1, 2])), 2), (Some(keys(&[2])), 1)])
    );
    let (a_server, mut a) = pair();
    let (b_server, mut b) = pair();
    with_state(WriterConfig::default(), |state| {
      add(state, ConnKey::test(1), &a_server);
      add(state, ConnKey::test(2), &b_server);
      for command in coalesce(vec![
        Command::Send(keys(&[1, 2]), bytes(b"x;")),
        Command::Send(keys(&[1, 2]), bytes(b"y;")),
      ]) {
        apply(state, command);
      }
    });
    assert_eq!(read_exactly(&mut a, 4), b"x;y;");
    assert_eq!(read_exactly(&mut b, 4), b"x;y;");
  }
}
