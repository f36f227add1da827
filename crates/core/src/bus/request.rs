//! What goes between the JS thread and the bus task: the requests it takes
//! and the events it reports.

use std::sync::Arc;

use super::entry::{BusFrame, Entry, EntryId};
use super::error::BusError;
use super::link::Notice;
use super::replay::ReplayFrom;
use crate::registry::ConnKey;
use crate::writer::{WireId, WriterPort};

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
  /// The answer to [`Bus::count`](super::Bus::count) or [`Bus::flush`](super::Bus::flush).
  Reply {
    request: u32,
    result: Result<f64, BusError>,
  },
  /// The thread has exited and closed its connections.
  Stopped,
}

pub(super) enum Request {
  Append(Entry),
  Replay(ReplayRequest),
  Count(u32),
  Flush(u32),
  /// The local count changed: refresh this instance's presence now.
  Presence,
  Stop,
}
