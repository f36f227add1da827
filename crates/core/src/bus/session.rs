//! One session with Redis: its two connections, how they are opened, and
//! how the blocking read is interrupted.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};

use super::config::{COMMAND_TIMEOUT, CONNECTION_NAME, CONNECT_TIMEOUT};
use super::target::{self, Target};

/// The two connections of one session with Redis.
pub(super) struct Session {
  /// Only ever carries the blocking `XREAD`.
  pub(super) reader: MultiplexedConnection,
  /// `CLIENT ID` of the reader, for `CLIENT UNBLOCK`.
  pub(super) reader_id: i64,
  pub(super) commands: MultiplexedConnection,
}

/// Whether a command failed because the connection did (rather than Redis
/// refusing that command).
pub(super) fn connection_failed(error: &redis::RedisError) -> bool {
  error.is_io_error()
    || error.is_connection_dropped()
    || error.is_timeout()
    || error.is_unrecoverable_error()
}

/// Whether the blocking read was interrupted for a replay waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unblock {
  NotAsked,
  /// `CLIENT UNBLOCK` found the reader not blocked: its `XREAD` had not
  /// reached Redis yet (or was already answered). Asked again after
  /// [`UNBLOCK_RETRY`] until the read returns, so a replay never waits out
  /// the whole `BLOCK`.
  Missed,
  Done,
}

/// How soon a missed `CLIENT UNBLOCK` is tried again.
pub(super) const UNBLOCK_RETRY: Duration = Duration::from_millis(2);

/// `CLIENT UNBLOCK` of the reader; its reply says whether it was blocked.
pub(super) async fn unblock_reader(
  session: &mut Session,
  unblock: &mut Unblock,
) -> RedisResult<()> {
  let unblocked: i64 = redis::cmd("CLIENT")
    .arg("UNBLOCK")
    .arg(session.reader_id)
    .query_async(&mut session.commands)
    .await?;
  *unblock = if unblocked == 1 {
    Unblock::Done
  } else {
    Unblock::Missed
  };
  Ok(())
}

pub(super) async fn connect(target: Target) -> RedisResult<Session> {
  let client = target.client().await?;
  // The reader blocks server-side for up to BLOCK: no response timeout
  // (the default 500 ms would fail every XREAD that waits longer); a dead
  // server is noticed by the read's own deadline in `xread`.
  let reader_config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(None);
  let command_config = AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(Some(COMMAND_TIMEOUT));
  let mut reader = client
    .get_multiplexed_async_connection_with_config(&reader_config)
    .await?;
  let mut commands = client
    .get_multiplexed_async_connection_with_config(&command_config)
    .await?;
  // Never a replica (a stale address, a demoted master): ask again.
  target::check_master(&mut commands).await?;
  // Named, so an operator (and the tests) can tell the bus's connections
  // in CLIENT LIST. A server that refuses the name is served all the same.
  for conn in [&mut reader, &mut commands] {
    let _: RedisResult<Value> = redis::cmd("CLIENT")
      .arg("SETNAME")
      .arg(CONNECTION_NAME)
      .query_async(conn)
      .await;
  }
  let reader_id: i64 = redis::cmd("CLIENT")
    .arg("ID")
    .query_async(&mut reader)
    .await?;
  Ok(Session {
    reader,
    reader_id,
    commands,
  })
}
