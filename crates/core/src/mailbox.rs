//! [`Mailbox`]: how a background thread (a socket writer, the Redis bus)
//! reports to the JS thread. Events queue under a short lock; the owner is
//! woken once per batch, when an event lands in an empty queue, and takes
//! the whole batch at once. The lock is never held while the wake-up runs,
//! so the owner may take events from inside it.

use std::sync::Mutex;

/// Called from the reporting thread when events wait (after the queue was empty).
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// A queue of events from one thread to their owner.
pub struct Mailbox<E> {
  events: Mutex<Vec<E>>,
  wake: Wake,
}

impl<E> Mailbox<E> {
  /// An empty mailbox that calls `wake` when its first waiting event arrives.
  pub fn new(wake: Wake) -> Self {
    Self {
      events: Mutex::new(Vec::new()),
      wake,
    }
  }

  /// Queues `event`, waking the owner when the queue was empty (a wake-up
  /// is already on its way otherwise).
  pub fn post(&self, event: E) {
    let was_empty = {
      let mut events = self.lock();
      let was_empty = events.is_empty();
      events.push(event);
      was_empty
    };
    if was_empty {
      (self.wake)();
    }
  }

  /// Every waiting event, oldest first; the queue is empty after.
  pub fn take(&self) -> Vec<E> {
    std::mem::take(&mut *self.lock())
  }

  // A panic while holding the lock cannot leave the Vec half-pushed, so a
  // poisoned lock's contents are still good.
  fn lock(&self) -> std::sync::MutexGuard<'_, Vec<E>> {
    self.events.lock().unwrap_or_else(|e| e.into_inner())
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::atomic::{AtomicUsize, Ordering};
  use std::sync::Arc;

  #[test]
  fn wakes_once_per_batch_and_takes_in_order() {
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let mailbox = Mailbox::new(Box::new(move || {
      counter.fetch_add(1, Ordering::Relaxed);
    }));
    mailbox.post(1);
    mailbox.post(2);
    assert_eq!(wakes.load(Ordering::Relaxed), 1);
    assert_eq!(mailbox.take(), vec![1, 2]);
    assert!(mailbox.take().is_empty());
    mailbox.post(3);
    assert_eq!(wakes.load(Ordering::Relaxed), 2);
  }

  #[test]
  fn the_owner_may_take_from_inside_the_wake_up() {
    let mailbox: Arc<Mailbox<u8>> = Arc::new_cyclic(|weak: &std::sync::Weak<Mailbox<u8>>| {
      let weak = weak.clone();
      Mailbox::new(Box::new(move || {
        // No deadlock: the lock is released before the wake-up runs.
        if let Some(mailbox) = weak.upgrade() {
          assert_eq!(mailbox.take(), vec![7]);
        }
      }))
    });
    mailbox.post(7);
    assert!(mailbox.take().is_empty());
  }
}
