//! Helpers shared by the core's tests.

use std::net::{TcpListener, TcpStream};

/// A connected loopback pair: `server` (non-blocking, as Node's sockets
/// are) is what the writer gets a duplicate of; `client` reads.
pub fn pair() -> (TcpStream, TcpStream) {
  let listener = TcpListener::bind("127.0.0.1:0").unwrap();
  let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
  let (server, _) = listener.accept().unwrap();
  server.set_nonblocking(true).unwrap();
  (server, client)
}
