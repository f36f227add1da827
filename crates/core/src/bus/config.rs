//! How a hub uses Redis: its options, the bus's fixed limits and timings,
//! and where a URL points (checked the way the client reads it).

use std::time::Duration;

use redis::RedisResult;

use super::error::UrlError;
use super::target::{Cluster, Sentinels, Target};

/// How a hub uses Redis.
#[derive(Debug, Clone)]
pub struct BusConfig {
  pub url: String,
  /// The stream key.
  pub stream: String,
  /// `MAXLEN ~` of every `XADD`: about this many entries are kept, which
  /// is how far back a reconnecting client can be replayed.
  pub max_len: usize,
  /// Most entries one replay reads; a client that missed more gets `reset`.
  pub replay_limit: usize,
  /// Most bytes one replay sends (the hub's `maxBufferedBytes`).
  pub max_replay_bytes: usize,
  /// PEM certificates to trust for `rediss://` (and `rediss+cluster://`,
  /// `rediss+sentinel://`) instead of the system's roots (a private CA).
  pub ca: Option<String>,
}

/// How long one `XREAD` blocks. A request that needs the reader (a replay)
/// interrupts it with `CLIENT UNBLOCK`, so this only bounds how long a
/// dead connection can go unnoticed.
pub(super) const BLOCK: Duration = Duration::from_secs(5);
/// Entries the reader remembers having delivered ([`BusTask::went_back`]).
pub(super) const RECENT: usize = 1024;
/// Appends sent in one pipeline at most.
pub(super) const APPEND_BATCH: usize = 512;
/// The name of the bus's connections (`CLIENT SETNAME`).
pub const CONNECTION_NAME: &str = "sse-helper-native-bus";
/// Connect timeout.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Response timeout of the command connection: long enough that a loaded
/// machine's stalls are not taken for an outage (an outage that closes the
/// connection is noticed at once), short enough that a Redis that stopped
/// answering is.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Presence: each instance's count lives this long unless refreshed.
pub(super) const PRESENCE_TTL: Duration = Duration::from_secs(10);
pub(super) const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// Backoff between reconnect attempts.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Appends that may wait for the bus thread; past it, broadcasts are
/// delivered locally (as during an outage) instead of queueing without end.
pub const MAX_PENDING_APPENDS: usize = 100_000;
/// Replays that may wait for Redis to come back.
pub(super) const MAX_WAITING_REPLAYS: usize = 10_000;

/// Checks a Redis URL (and CA) the way the client will read them.
pub fn check_url(url: &str, ca: Option<&str>) -> Result<(), UrlError> {
  client(url, ca).map(|_| ()).map_err(UrlError)
}

/// Where a URL points; with `ca`, TLS trusts those roots only.
pub(super) fn client(url: &str, ca: Option<&str>) -> RedisResult<Target> {
  if let Some(sentinels) = Sentinels::parse(url, ca) {
    let sentinels = sentinels.map_err(|e| {
      redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "a bad Sentinel URL",
        e,
      ))
    })?;
    sentinels.check()?;
    return Ok(Target::Sentinel(sentinels));
  }
  if let Some(cluster) = Cluster::parse(url, ca) {
    let cluster = cluster.map_err(|e| {
      redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "a bad Cluster URL",
        e,
      ))
    })?;
    let client = cluster.client()?;
    return Ok(Target::Cluster(Box::new((cluster, client))));
  }
  direct_client(url, ca).map(Target::Direct)
}

pub(super) fn direct_client(url: &str, ca: Option<&str>) -> RedisResult<redis::Client> {
  match ca {
    None => redis::Client::open(url),
    #[cfg(target_os = "linux")]
    Some(ca) => redis::Client::build_with_tls(
      url,
      redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
      },
    ),
    #[cfg(not(target_os = "linux"))]
    Some(_) => Err(redis::RedisError::from((
      redis::ErrorKind::InvalidClientConfig,
      "TLS (rediss://, ca) is not available in this platform's build",
    ))),
  }
}
