//! Helpers shared by the core's tests.

use std::fmt::Debug;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A connected loopback pair: `server` (non-blocking, as Node's sockets
/// are) is what the writer gets a duplicate of; `client` reads.
pub fn pair() -> (TcpStream, TcpStream) {
  let listener = TcpListener::bind("127.0.0.1:0").unwrap();
  let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
  let (server, _) = listener.accept().unwrap();
  server.set_nonblocking(true).unwrap();
  (server, client)
}

/// Polls `take` (a writer's or hub's event source) until `done` holds for
/// everything collected, failing after 5 s.
pub fn collect_until<T: Debug>(
  mut take: impl FnMut() -> Vec<T>,
  done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
  let deadline = Instant::now() + Duration::from_secs(5);
  let mut all = Vec::new();
  while !done(&all) {
    assert!(Instant::now() < deadline, "no event: {all:?}");
    std::thread::sleep(Duration::from_millis(5));
    all.extend(take());
  }
  all
}

/// Waits until `holds` (a figure another thread updates), failing after
/// 5 s with `what`: a test never races the thread it observes.
pub fn wait_for(what: &str, mut holds: impl FnMut() -> bool) {
  let deadline = Instant::now() + Duration::from_secs(5);
  while !holds() {
    assert!(Instant::now() < deadline, "timed out waiting for {what}");
    std::thread::sleep(Duration::from_millis(2));
  }
}
