//! What the JS thread and the bus thread ask of a writer thread, and how
//! commands that queued up together are merged before they run.

use crate::registry::ConnKey;
use std::sync::Arc;

use super::io::SocketFd;
use super::write::MAX_IOVECS;
use super::{ConnGauge, WriterConfig};
use crate::bus::entry::{BusFrame, EntryId};

/// One request to a writer thread, in submission order.
pub(super) enum Command {
  /// A new connection; `held` when it waits for a bus replay (its gate is
  /// held from the start, so no live entry can reach it first).
  Add(ConnKey, SocketFd, Arc<ConnGauge>, bool),
  /// The app's own `res.write`, as one HTTP chunk: never dropped, counted
  /// in the connection's gauge.
  Write(ConnKey, Arc<[u8]>),
  /// Frames for every connection; adjacent broadcasts are merged into one
  /// command (see [`coalesce`]).
  Broadcast(Vec<Arc<[u8]>>),
  /// One frame for the connections named.
  Send(Vec<ConnKey>, Arc<[u8]>),
  /// Adjacent broadcasts and sends, at least one of them a send, merged so
  /// each connection gets its share of all of them in one `writev`.
  Mixed(Vec<Delivery>),
  /// Flush what the connection has queued, then let it go.
  End(ConnKey),
  /// Forget the connection at once.
  Remove(ConnKey),
  /// New bounds for every connection.
  Configure(WriterConfig),
  /// Entries from the Redis bus, each to the connections its route names
  /// and whose replay gate admits it. A barrier: never merged with frames.
  Bus(Arc<[BusFrame]>),
  /// A replay's frames for one connection, then its gate opens (keeping
  /// `cursor`, when given, as the newest entry it already has).
  Release(ConnKey, Vec<Arc<[u8]>>, Option<EntryId>),
  /// A connection's client id and channels, which bus entries route by.
  Route(ConnKey, Arc<str>, Vec<Arc<str>>),
  /// Fault injection for tests: the writer thread panics.
  Crash,
  /// Stop after the commands before it: the thread drops every connection
  /// (closing the fds), reports [`WriterEvent::Stopped`] and exits.
  ///
  /// [`WriterEvent::Stopped`]: super::WriterEvent::Stopped
  Stop,
}

/// Frames for some connections (`to`), or for all of them (`None`).
pub(super) struct Delivery {
  pub(super) to: Option<Vec<ConnKey>>,
  pub(super) frames: Vec<Arc<[u8]>>,
}

/// Most frames one merged run of broadcasts and sends carries: what one
/// `writev` takes. It bounds the per-connection lists
/// [`fan_out`](super::fanout::fan_out) builds for the connections a send
/// names.
pub(super) const MAX_RUN_FRAMES: usize = MAX_IOVECS;

/// Most bus entries one merged [`Command::Bus`] carries.
pub(super) const MAX_BUS_RUN: usize = 1024;

/// Frame commands that arrived together are merged, so a writer that fell
/// behind catches up with one `writev` per socket per batch instead of one
/// `write` per frame; the frames are shared, never copied. Runs of
/// broadcasts stay a broadcast (no per-connection list); a run with a send
/// in it (a channel publish, a filter, `sendToClient`) becomes
/// [`Command::Mixed`], of at most [`MAX_RUN_FRAMES`]. Other commands are
/// barriers: a connection added after a broadcast must not get it, an end
/// must come after the frames before it.
pub(super) fn coalesce(commands: Vec<Command>) -> Vec<Command> {
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

/// `last` and `next` as one command, or both back when they do not merge.
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
      (Some(a), Some(b)) if a + b <= MAX_RUN_FRAMES => Ok(Command::Mixed(merge_run(last, next))),
      _ => Err((last, next)),
    },
  }
}

/// Two frame commands as one run of deliveries. Adjacent broadcasts in a
/// run share one delivery, and so do adjacent sends to the same
/// connections (publishes to one channel), which then need no list per
/// connection.
fn merge_run(last: Command, next: Command) -> Vec<Delivery> {
  let mut run = deliveries(last);
  for delivery in deliveries(next) {
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
  run
}

/// How many frames a command carries; `None` for the other commands.
pub(super) fn frames_in(command: &Command) -> Option<usize> {
  match command {
    Command::Broadcast(frames) => Some(frames.len()),
    Command::Send(..) => Some(1),
    Command::Mixed(run) => Some(run.iter().map(|d| d.frames.len()).sum()),
    _ => None,
  }
}

/// A frame command as deliveries (empty for the other commands).
pub(super) fn deliveries(command: Command) -> Vec<Delivery> {
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

#[cfg(test)]
mod tests {
  use super::*;
  use crate::registry::keys;

  #[test]
  fn coalescing_merges_sends_with_their_neighbours_up_to_a_barrier() {
    let bytes = |b: &[u8]| Arc::<[u8]>::from(b);
    let out = coalesce(vec![
      Command::Send(vec![ConnKey::test(1)], bytes(b"a")),
      Command::Send(vec![ConnKey::test(2)], bytes(b"b")),
      Command::Broadcast(vec![bytes(b"c")]),
      Command::Remove(ConnKey::test(1)),
      Command::Broadcast(vec![bytes(b"d")]),
      Command::Send(vec![ConnKey::test(2)], bytes(b"e")),
      Command::Broadcast(vec![bytes(b"f")]),
    ]);
    assert_eq!(out.len(), 3);
    let targets = |run: &[Delivery]| run.iter().map(|d| d.to.clone()).collect::<Vec<_>>();
    assert!(
      matches!(&out[0], Command::Mixed(run) if targets(run) == [Some(keys(&[1])), Some(keys(&[2])), None])
    );
    assert!(matches!(&out[1], Command::Remove(k) if *k == ConnKey::test(1)));
    assert!(
      matches!(&out[2], Command::Mixed(run) if targets(run) == [None, Some(keys(&[2])), None])
    );
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
      Command::Remove(ConnKey::test(7)),
      bus(&[5]),
    ]);
    assert_eq!(out.len(), 3);
    assert_eq!(ids(&out[0]), [1, 2, 3, 4]);
    assert!(
      matches!(out[1], Command::Remove(k) if k == ConnKey::test(7)),
      "other commands are barriers"
    );
    assert_eq!(ids(&out[2]), [5]);
    // A run stops growing at its cap.
    let many: Vec<u64> = (0..MAX_BUS_RUN as u64).collect();
    assert_eq!(coalesce(vec![bus(&many), bus(&[9_999])]).len(), 2);
  }

  #[test]
  fn a_merged_run_holds_at_most_one_writev_of_frames() {
    let sends = (0..100u8)
      .map(|i| Command::Send(vec![ConnKey::test(1)], Arc::from(&[i][..])))
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
      Command::End(ConnKey::test(1)),
      Command::Broadcast(frame(b"c")),
    ]);
    assert_eq!(out.len(), 3);
    assert!(matches!(&out[0], Command::Broadcast(f) if f.len() == 2 && &f[1][..] == b"b"));
    assert!(matches!(&out[1], Command::End(k) if *k == ConnKey::test(1)));
    assert!(matches!(&out[2], Command::Broadcast(f) if f.len() == 1));
  }
}
