//! Handing a connection's socket to the writer: a duplicate of its fd, but
//! only once it is proven to be the socket the response is on.

#[cfg(unix)]
use std::net::{IpAddr, TcpStream};
#[cfg(unix)]
use std::os::fd::{BorrowedFd, OwnedFd};

use napi_derive::napi;
#[cfg(unix)]
use sse_helper_core::frame::Framing;
use sse_helper_core::writer::SocketFd;

/// Where the JS surface says a connection's socket is, for checking that
/// the fd it found really is that socket.
#[napi(object)]
pub struct SocketInfo {
  /// The socket's fd (`res.socket._handle.fd`).
  pub fd: i32,
  /// `res.socket.remoteAddress`.
  pub remote_address: String,
  /// `res.socket.remotePort`.
  pub remote_port: u32,
  /// `res.socket.localPort`.
  pub local_port: u32,
  /// True for a response Node does not chunk whose body ends when the
  /// connection closes (an HTTP/1.0 client, such as nginx's default
  /// `proxy_pass`): the writer sends each frame bare.
  pub identity: Option<bool>,
}

/// A duplicate of the connection's fd for the writer, with its framing, or
/// `None` when the fd
/// is not a connected TCP socket, or not the one `info` describes (the
/// connection then stays on the stream). The check matters: writing to
/// another connection's fd would hand one client another's data.
#[cfg(unix)]
pub fn handoff(info: &SocketInfo) -> Option<SocketFd> {
  if info.fd < 0 {
    return None;
  }
  // SAFETY: the fd is only borrowed for the duplication, during this call
  // on the JS thread, while the live socket that owns it keeps it open; the
  // duplicate is ours. If the JS side named a wrong fd, the checks below
  // refuse the duplicate (and dropping it closes only the duplicate).
  let dup = unsafe { BorrowedFd::borrow_raw(info.fd) }
    .try_clone_to_owned()
    .ok()?;
  let stream = TcpStream::from(dup);
  let peer = stream.peer_addr().ok()?;
  let local = stream.local_addr().ok()?;
  let remote_ip: IpAddr = info.remote_address.parse().ok()?;
  let same = peer.ip().to_canonical() == remote_ip.to_canonical()
    && u32::from(peer.port()) == info.remote_port
    && u32::from(local.port()) == info.local_port;
  let framing = if info.identity == Some(true) {
    Framing::Identity
  } else {
    Framing::Chunked
  };
  same.then(|| SocketFd {
    fd: OwnedFd::from(stream),
    framing,
  })
}

/// Never a socket for the writer where Node gives no fd (Windows: `fd` is
/// -1 there): every connection stays on the stream transport.
#[cfg(not(unix))]
pub fn handoff(_info: &SocketInfo) -> Option<SocketFd> {
  None
}
