//! What framing one Redis stream entry costs the bus reader
//! (`BusFrame::new`: the SSE event, then the HTTP chunk its clients share),
//! at the bench's two payloads, in a loop on one thread. A figure for
//! comparing two builds of the core on one machine, not a throughput claim.
//!
//!   cargo run --release -p sse-helper-core --example framing

use std::time::Instant;

use sse_helper_core::bus::entry::{BusFrame, Entry, EntryId, Route};

fn main() {
  const FRAMES: u64 = 200_000;
  for bytes in [100usize, 4096] {
    let entry = Entry {
      route: Route::All,
      event: None,
      retry: None,
      data: format!("\"{}\"", "x".repeat(bytes - 2)),
      origin: None,
    };
    let started = Instant::now();
    let mut total = 0;
    for seq in 0..FRAMES {
      let id = EntryId {
        ms: 1_700_000_000_000,
        seq,
      };
      total += BusFrame::new(Some(id), &entry).chunk.len();
    }
    let ns = started.elapsed().as_nanos() as f64 / FRAMES as f64;
    println!("{bytes} B payload: {ns:.0} ns per entry ({FRAMES} entries, {total} bytes framed)");
  }
}
