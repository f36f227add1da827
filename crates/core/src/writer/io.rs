//! The writer's only contact with the operating system's sockets: the fd a
//! connection arrives as, its registration with the thread's reactor, and
//! the wait for it to become writable. Everything Unix-only in the writer
//! (`std::os::fd`, tokio's `AsyncFd`) is here, plus `getrlimit` in
//! [`budget`](super::budget); the rest of the writer sees a [`Socket`].
//!
//! Elsewhere (Windows) Node gives no fd for a socket (`_handle.fd` is -1),
//! so every connection stays on the stream transport: there a [`SocketFd`]
//! cannot be made at all (it holds an uninhabited field), and the writer
//! compiles but never holds a connection.

use std::io::{self, IoSlice};
use std::net::TcpStream;

use crate::frame::Framing;

#[cfg(unix)]
pub(super) use unix::Socket;
#[cfg(unix)]
pub use unix::SocketFd;

#[cfg(not(unix))]
pub(super) use other::Socket;
#[cfg(not(unix))]
pub use other::SocketFd;

#[cfg(unix)]
mod unix {
  use super::*;
  use std::io::Write;
  use std::os::fd::OwnedFd;

  use tokio::io::unix::AsyncFd;
  use tokio::io::Interest;

  /// A connection's socket as the writer gets it: the fd, and how its body is
  /// delimited.
  #[derive(Debug)]
  pub struct SocketFd {
    /// A duplicate of a connected, non-blocking TCP socket's fd; the writer
    /// closes it when done.
    pub fd: OwnedFd,
    /// Whether each frame goes out as an HTTP chunk or as it is.
    pub framing: Framing,
  }

  impl From<OwnedFd> for SocketFd {
    /// A chunked connection (Node's HTTP/1.1 default).
    fn from(fd: OwnedFd) -> SocketFd {
      SocketFd {
        fd,
        framing: Framing::Chunked,
      }
    }
  }

  impl SocketFd {
    /// Registers the fd with the current thread's reactor, for writing.
    pub(in crate::writer) fn register(self) -> io::Result<(Socket, Framing)> {
      let stream = TcpStream::from(self.fd);
      // Shares the file description with Node's fd, which libuv already made
      // non-blocking; setting it again is harmless and makes that explicit.
      stream.set_nonblocking(true)?;
      // SAFETY: the TcpStream owns the fd for as long as the AsyncFd holds it
      // and always reports that same fd.
      let io = unsafe { AsyncFd::register_with_interest(stream, Interest::WRITABLE) }
        .map_err(io::Error::from)?;
      Ok((Socket { io }, self.framing))
    }
  }

  /// One connection's registered socket; dropping it closes the fd.
  pub(in crate::writer) struct Socket {
    io: AsyncFd<TcpStream>,
  }

  impl Socket {
    /// One `writev` now, whatever the socket's readiness.
    pub(in crate::writer) fn write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
      self.io.get_ref().write_vectored(slices)
    }

    /// Waits until the socket takes bytes, then writes with `write` (again
    /// after a wake-up that finds it still full, or an interrupted write),
    /// returning how many bytes went out.
    pub(in crate::writer) async fn write_when_writable(
      &self,
      mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
      loop {
        let mut guard = self.io.writable().await?;
        match guard.try_io(|io| write(io.get_ref())) {
          Ok(Ok(written)) => return Ok(written),
          Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
          Ok(Err(e)) => return Err(e),
          Err(_would_block) => {}
        }
      }
    }
  }
}

#[cfg(not(unix))]
mod other {
  use super::*;
  use std::convert::Infallible;

  /// A connection's socket as the writer would get it. There is no fd to
  /// hand over on this platform, so no value of this type exists.
  #[derive(Debug)]
  pub struct SocketFd {
    never: Infallible,
    /// Whether each frame goes out as an HTTP chunk or as it is.
    pub framing: Framing,
  }

  impl SocketFd {
    /// Cannot be called: no `SocketFd` exists here.
    pub(in crate::writer) fn register(self) -> io::Result<(Socket, Framing)> {
      match self.never {}
    }
  }

  /// A registered socket; none exists on this platform.
  pub(in crate::writer) struct Socket {
    never: Infallible,
  }

  impl Socket {
    /// Cannot be called: no `Socket` exists here.
    pub(in crate::writer) fn write_vectored(&self, _slices: &[IoSlice<'_>]) -> io::Result<usize> {
      match self.never {}
    }

    /// Cannot be called: no `Socket` exists here.
    pub(in crate::writer) async fn write_when_writable(
      &self,
      _write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
      match self.never {}
    }
  }
}

/// A duplicate of a test socket's fd, as the binding would hand it over.
#[cfg(test)]
pub(super) fn dup(server: &TcpStream) -> SocketFd {
  use std::os::fd::AsFd;
  server.as_fd().try_clone_to_owned().unwrap().into()
}
