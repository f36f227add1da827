//! How much one blocking `XREAD` asks for, and how long its reply may take.
//!
//! A read asks for [`READ_COUNT`] entries at first; every full reply (the
//! reader is behind: more entries were waiting) doubles the count, up to
//! [`READ_MAX`] entries and about [`READ_BYTES`]: after a bigger reply the
//! next asks for as many as fit. A reader that is behind does not block:
//! its next read is a catch-up read ([`ReadSize::behind`]), one atomic step
//! with the check that its position is still in the stream. A reply that does
//! not arrive in time (a slow link, huge entries) is not asked for again at
//! the same size: the next read asks for one entry, and the count doubles
//! after every full reply, so a slow link always makes progress. The time a
//! reply may take grows with what it is expected to bring at the rate full
//! replies arrived at, so a steady slow link does not time out at all.

use std::time::Duration;

/// Entries the first `XREAD` asks for (and the least a full reply doubles from).
pub const READ_COUNT: usize = 1000;
/// Entries one `XREAD` returns at most.
pub const READ_MAX: usize = 16_384;
/// Bytes one `XREAD` should bring at most.
pub const READ_BYTES: usize = 8 << 20;
/// The most a transfer estimate adds to a read's deadline.
const MAX_EXTRA: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct ReadSize {
  count: usize,
  /// Data bytes per second of the last full reply (its entries were
  /// waiting, so its time was transfer time).
  rate: Option<f64>,
  /// Data bytes per entry of the last reply with entries.
  mean: usize,
  /// The last reply was full: more entries are probably waiting.
  behind: bool,
}

impl Default for ReadSize {
  fn default() -> Self {
    ReadSize {
      count: READ_COUNT,
      rate: None,
      mean: 0,
      behind: false,
    }
  }
}

impl ReadSize {
  /// Entries the next read asks for.
  pub fn count(&self) -> usize {
    self.count
  }

  /// Whether the last reply was full, so the next read should not block:
  /// entries are waiting, and a read that does not block can be atomic
  /// with its presence check.
  pub fn behind(&self) -> bool {
    self.behind
  }

  /// How long the next read's reply may take: `base`, plus twice the time
  /// its expected bytes take at the measured rate.
  pub fn deadline(&self, base: Duration) -> Duration {
    let extra = match self.rate {
      Some(rate) if rate > 0.0 => {
        let expected = (self.count.saturating_mul(self.mean)) as f64;
        Duration::try_from_secs_f64(2.0 * expected / rate)
          .unwrap_or(MAX_EXTRA)
          .min(MAX_EXTRA)
      }
      _ => Duration::ZERO,
    };
    base.saturating_add(extra)
  }

  /// A reply came: `entries` entries of `bytes` data bytes, `elapsed` after
  /// the read was sent.
  pub fn replied(&mut self, entries: usize, bytes: usize, elapsed: Duration) {
    let full = entries > 0 && entries >= self.count;
    self.behind = full;
    if entries == 0 {
      return;
    }
    self.mean = bytes / entries;
    if full && elapsed >= Duration::from_millis(1) {
      self.rate = Some(bytes as f64 / elapsed.as_secs_f64());
    }
    if bytes > READ_BYTES {
      self.count = (entries * READ_BYTES / bytes).clamp(1, READ_MAX);
    } else if full {
      // Doubled, but never past what fits in the bytes at this mean.
      let fit = READ_BYTES.checked_div(self.mean).unwrap_or(READ_MAX);
      self.count = (self.count * 2)
        .min(READ_MAX)
        .min(fit.max(self.count))
        .max(1);
    }
  }

  /// The reply did not come in time: one entry next.
  pub fn timed_out(&mut self) {
    self.count = 1;
    self.behind = false;
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  const BASE: Duration = Duration::from_secs(15);

  #[test]
  fn a_timeout_drops_to_one_entry_then_full_replies_double_it() {
    let mut size = ReadSize::default();
    assert_eq!(size.count(), READ_COUNT);
    size.timed_out();
    assert_eq!(size.count(), 1);
    let mut counts = Vec::new();
    for _ in 0..4 {
      let n = size.count();
      size.replied(n, n * 10_000, Duration::from_millis(100 * n as u64));
      counts.push(size.count());
    }
    assert_eq!(counts, [2, 4, 8, 16]);
    // A reply shorter than asked (the stream's end) keeps the count.
    size.replied(3, 30_000, Duration::from_millis(5));
    assert_eq!(size.count(), 16);
  }

  #[test]
  fn the_deadline_grows_with_the_expected_bytes_at_the_measured_rate() {
    let mut size = ReadSize::default();
    assert_eq!(size.deadline(BASE), BASE, "nothing measured yet");
    size.timed_out();
    // 10 KB in 1 s: 10 KB/s; the next read asks for 2 entries of 10 KB.
    size.replied(1, 10_000, Duration::from_secs(1));
    assert_eq!(size.count(), 2);
    assert_eq!(size.deadline(BASE), BASE + Duration::from_secs(4));
  }

  #[test]
  fn a_reply_over_the_byte_budget_shrinks_the_next_and_nothing_overflows() {
    let mut size = ReadSize::default();
    size.replied(1000, 4 * READ_BYTES, Duration::from_secs(1));
    assert_eq!(size.count(), 250);
    size.replied(1, usize::MAX, Duration::from_nanos(1));
    assert_eq!(size.count(), 1);
    let mut huge = ReadSize::default();
    huge.replied(1000, 1000 * 8000, Duration::from_millis(1));
    huge.rate = Some(f64::MIN_POSITIVE);
    assert_eq!(huge.deadline(BASE), BASE + MAX_EXTRA);
  }

  #[test]
  fn full_replies_double_the_count_up_to_the_entry_and_byte_bounds_and_mark_it_behind() {
    let mut size = ReadSize::default();
    assert!(!size.behind(), "the first read blocks");
    let mut counts = Vec::new();
    while counts.last() != Some(&READ_MAX) {
      let n = size.count();
      size.replied(n, n * 100, Duration::from_millis(2));
      assert!(size.behind(), "a full reply: entries are waiting");
      counts.push(size.count());
    }
    assert_eq!(counts, [2000, 4000, 8000, 16_000, READ_MAX]);
    // A short reply: caught up, the next read blocks again (same count).
    size.replied(10, 1000, Duration::from_millis(1));
    assert!(!size.behind());
    assert_eq!(size.count(), READ_MAX);
    // Nothing (a timed-out or unblocked read) is not behind either.
    size.replied(READ_MAX, READ_MAX * 100, Duration::from_millis(2));
    size.replied(0, 0, Duration::from_secs(5));
    assert!(!size.behind());
    // 4 KB entries: doubling stops at what fits in READ_BYTES.
    let mut big = ReadSize::default();
    for _ in 0..6 {
      let n = big.count();
      big.replied(n, n * 4096, Duration::from_millis(5));
    }
    assert_eq!(big.count(), READ_BYTES / 4096);
    assert!(big.count() * 4096 <= READ_BYTES);
    big.timed_out();
    assert!(!big.behind(), "after a timeout the one-entry read blocks");
  }
}
