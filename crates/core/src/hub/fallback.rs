//! Why a connection is on the stream transport (the response's own
//! `write`) rather than the native socket writer: one reason per
//! connection, decided once at registration, kept with it and counted by
//! reason, so an operator sees from `getStats()` or `/metrics` why the
//! writer is not in use (a proxy speaking HTTP/2, `compression`, TLS, a
//! runtime without fds) instead of reading debug logs.
//!
//! Most reasons are found by the JS surface, which reads the response
//! (`lib/socket.js` names them); the rest only the core knows (the
//! transport configured, the writer's capacity and health).

use crate::writer::SocketFd;

macro_rules! stream_reasons {
  ($($(#[doc = $doc:literal])+ $variant:ident => $name:literal, $words:literal,)+) => {
    /// Why a connection is on the stream transport.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum StreamReason {
      $($(#[doc = $doc])+ $variant,)+
    }

    impl StreamReason {
      /// Every reason, in the order stats and metrics list them.
      pub const ALL: &'static [StreamReason] = &[$(StreamReason::$variant,)+];

      /// Its name in `getStats().streamFallbacks`, in the metrics' `reason`
      /// label and from the JS surface.
      pub fn name(self) -> &'static str {
        match self {
          $(StreamReason::$variant => $name,)+
        }
      }

      /// The reason named `name`, if there is one.
      pub fn from_name(name: &str) -> Option<StreamReason> {
        match name {
          $($name => Some(StreamReason::$variant),)+
          _ => None,
        }
      }

      /// What the debug log says of it, `{platform}` standing for the
      /// platform's name (see [`StreamReason::describe`]).
      fn words(self) -> &'static str {
        match self {
          $(StreamReason::$variant => $words,)+
        }
      }
    }
  };
}

impl StreamReason {
  /// What the debug log says of it, on `platform` (Node's
  /// `process.platform`) under `runtime`.
  pub fn describe(self, platform: &str, runtime: Runtime) -> String {
    match (self, runtime) {
      (StreamReason::NoFd, Runtime::Bun) => {
        "no file descriptor (Bun's node:http sockets expose none)".into()
      }
      (StreamReason::NoFd, Runtime::Deno) => {
        "no file descriptor (Deno's node:http sockets have no fd property)".into()
      }
      _ => self.words().replace("{platform}", platform),
    }
  }
}

/// The JavaScript runtime the hub runs in, for [`StreamReason::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
  Node,
  Bun,
  Deno,
}

stream_reasons! {
  /// `configure({ transport: 'stream' })`.
  Configured => "configured",
    "configure({ transport: 'stream' })",
  /// The platform has no native writer (Windows).
  Platform => "platform",
    "no native writer on {platform}",
  /// Not an HTTP/1.x response (HTTP/2).
  NotHttp1 => "notHttp1",
    "not an HTTP/1.x response (HTTP/2?)",
  /// `res.write` or `res.end` is not Node's (a wrapper such as `compression`).
  Wrapped => "wrapped",
    "res.write or res.end is not Node's (a wrapper such as compression)",
  /// The response is frozen, sealed or not extensible.
  NotExtensible => "notExtensible",
    "res is frozen, sealed or not extensible: the writer could not install its write and end",
  /// The headers were not sent when it was registered.
  HeadersNotSent => "headersNotSent",
    "headers not sent (call initResponse first)",
  /// The response has no socket.
  NoSocket => "noSocket",
    "no socket",
  /// A TLS socket (HTTPS).
  Tls => "tls",
    "TLS",
  /// The socket exposes no file descriptor (Bun, Deno, a non-TCP socket).
  NoFd => "noFd",
    "no file descriptor (not a TCP socket?)",
  /// The response has no body (a `HEAD` request).
  NoBody => "noBody",
    "no body (a HEAD request?)",
  /// A `Content-Length` was set: the body has a fixed length.
  ContentLength => "contentLength",
    "a Content-Length was set: the body has a fixed length",
  /// A `Transfer-Encoding` the writer does not frame.
  TransferEncoding => "transferEncoding",
    "a Transfer-Encoding the writer does not frame",
  /// The body is neither chunked nor delimited by the connection's close.
  NotDelimited => "notDelimited",
    "neither chunked nor close-delimited",
  /// Writes were still pending in Node.
  Pending => "pending",
    "writes still pending in Node",
  /// The socket has no TCP addresses.
  NoAddresses => "noAddresses",
    "no TCP addresses",
  /// The fd was not the socket the response is on (checked by its addresses).
  FdMismatch => "fdMismatch",
    "the fd was not the response's socket (its addresses differ)",
  /// The writer held `socketCapacity` connections.
  Capacity => "capacity",
    "socketCapacity reached",
  /// The writer could not start, or stopped.
  WriterDown => "writerDown",
    "the native writer is not running (it could not start, or it stopped)",
}

/// What a new connection brings to its registration: a duplicate of its
/// socket's fd for the writer, or why it has none.
pub type SocketOffer = Result<SocketFd, StreamReason>;

/// Connections registered on the stream transport, by reason, since the
/// hub was made.
#[derive(Debug, Clone, Default)]
pub struct StreamFallbacks {
  counts: [u64; StreamReason::ALL.len()],
}

impl StreamFallbacks {
  pub(super) fn count(&mut self, reason: StreamReason) {
    self.counts[reason as usize] += 1;
  }

  /// Every reason with its count, zeros included, in [`StreamReason::ALL`]'s order.
  pub fn by_reason(&self) -> Vec<(StreamReason, u64)> {
    StreamReason::ALL
      .iter()
      .map(|&reason| (reason, self.counts[reason as usize]))
      .collect()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn names_round_trip_and_are_distinct() {
    let mut seen = std::collections::HashSet::new();
    for &reason in StreamReason::ALL {
      assert_eq!(StreamReason::from_name(reason.name()), Some(reason));
      assert!(seen.insert(reason.name()));
    }
    assert_eq!(StreamReason::from_name("nope"), None);
    assert_eq!(
      StreamReason::Platform.describe("win32", Runtime::Node),
      "no native writer on win32"
    );
    assert!(StreamReason::NoFd
      .describe("linux", Runtime::Bun)
      .contains("Bun's"));
    assert_eq!(
      StreamReason::NoFd.describe("linux", Runtime::Node),
      "no file descriptor (not a TCP socket?)"
    );
    assert_eq!(StreamReason::from_name(""), None);
  }

  #[test]
  fn counts_by_reason() {
    let mut fallbacks = StreamFallbacks::default();
    fallbacks.count(StreamReason::Tls);
    fallbacks.count(StreamReason::Tls);
    fallbacks.count(StreamReason::WriterDown);
    let counts = fallbacks.by_reason();
    assert_eq!(counts.len(), StreamReason::ALL.len());
    assert!(counts.contains(&(StreamReason::Tls, 2)));
    assert!(counts.contains(&(StreamReason::WriterDown, 1)));
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 3);
  }
}
