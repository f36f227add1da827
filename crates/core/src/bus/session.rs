//! One session with Redis: its two connections, how they are opened, and
//! how the blocking read is interrupted.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
  AsyncConnectionConfig, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value,
};

use super::cluster::{self, Cluster};
use super::config::{COMMAND_TIMEOUT, CONNECTION_NAME, CONNECT_TIMEOUT};
use super::target::{self, Target};

/// The connections of one session with Redis.
pub(super) struct Session {
  /// Only ever carries the blocking `XREAD`.
  pub(super) reader: MultiplexedConnection,
  /// `CLIENT ID` of the reader, for `CLIENT UNBLOCK`.
  pub(super) reader_id: i64,
  /// Where `CLIENT UNBLOCK` goes: the reader's server (on one server, the
  /// command connection).
  pub(super) control: MultiplexedConnection,
  pub(super) commands: Commands,
  /// On a Cluster: the reader's node, and what moves it.
  pub(super) node: Option<ReaderNode>,
}

/// Everything but the blocking read: one server's multiplexed connection,
/// or the crate's cluster connection (routed by key).
#[derive(Clone)]
pub(super) enum Commands {
  Single(MultiplexedConnection),
  Cluster {
    conn: ClusterConnection,
    /// The stream key, whose slot keyless commands go to.
    stream: String,
  },
}

impl Commands {
  /// A keyless command (`SCAN`) sent where the stream's keys are: on a
  /// Cluster, the master of the stream's slot.
  pub(super) async fn on_stream_node<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
    match self {
      Commands::Single(conn) => cmd.query_async(conn).await,
      Commands::Cluster { conn, stream } => {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
          Route::with_key(stream.as_bytes(), SlotAddr::Master),
        ));
        let value = conn.route_command(cmd.clone(), routing).await?;
        T::from_redis_value(value).map_err(Into::into)
      }
    }
  }
}

impl ConnectionLike for Commands {
  fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
    match self {
      Commands::Single(conn) => conn.req_packed_command(cmd),
      Commands::Cluster { conn, .. } => conn.req_packed_command(cmd),
    }
  }

  fn req_packed_commands<'a>(
    &'a mut self,
    cmd: &'a Pipeline,
    offset: usize,
    count: usize,
  ) -> RedisFuture<'a, Vec<Value>> {
    match self {
      Commands::Single(conn) => conn.req_packed_commands(cmd, offset, count),
      Commands::Cluster { conn, .. } => conn.req_packed_commands(cmd, offset, count),
    }
  }

  fn get_db(&self) -> i64 {
    match self {
      Commands::Single(conn) => conn.get_db(),
      Commands::Cluster { conn, .. } => conn.get_db(),
    }
  }
}

/// The reader's node in a Cluster.
pub(super) struct ReaderNode {
  pub(super) cluster: Cluster,
  pub(super) host: String,
  pub(super) port: u16,
  /// The slot is migrating to this node (`ASK`): each read says `ASKING`.
  pub(super) asking: bool,
  /// Redirections since the last read that succeeded; past
  /// [`MAX_REDIRECTS`] the session ends (and starts over from the seeds).
  pub(super) redirects: u32,
  /// Wait this long before the next read (the slot has no master now).
  pub(super) pause: Option<Duration>,
}

/// Redirections of the reader in a row before the session gives up: about
/// [`COMMAND_TIMEOUT`] of [`cluster::LOCATE_PAUSE`]s, longer than a failover.
pub(super) const MAX_REDIRECTS: u32 = 50;

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
    .query_async(&mut session.control)
    .await?;
  *unblock = if unblocked == 1 {
    Unblock::Done
  } else {
    Unblock::Missed
  };
  Ok(())
}

/// The reader blocks server-side for up to BLOCK: no response timeout
/// (the default 500 ms would fail every XREAD that waits longer); a dead
/// server is noticed by the read's own deadline in `xread`.
fn reader_config() -> AsyncConnectionConfig {
  AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(None)
}

fn command_config() -> AsyncConnectionConfig {
  AsyncConnectionConfig::new()
    .set_connection_timeout(Some(CONNECT_TIMEOUT))
    .set_response_timeout(Some(COMMAND_TIMEOUT))
}

/// Names a connection, so an operator (and the tests) can tell the bus's
/// connections in CLIENT LIST. A server that refuses the name is served all
/// the same.
async fn set_name(conn: &mut MultiplexedConnection) {
  let _: RedisResult<Value> = redis::cmd("CLIENT")
    .arg("SETNAME")
    .arg(CONNECTION_NAME)
    .query_async(conn)
    .await;
}

/// The reader's connection to `client`, named, and its `CLIENT ID`.
async fn open_reader(client: &redis::Client) -> RedisResult<(MultiplexedConnection, i64)> {
  let mut reader = client
    .get_multiplexed_async_connection_with_config(&reader_config())
    .await?;
  set_name(&mut reader).await;
  let reader_id: i64 = redis::cmd("CLIENT")
    .arg("ID")
    .query_async(&mut reader)
    .await?;
  Ok((reader, reader_id))
}

/// Opens a session. `stream` is the stream key (on a Cluster, the reader
/// goes to its slot's node).
pub(super) async fn connect(target: Target, stream: String) -> RedisResult<Session> {
  if let Target::Cluster(cluster) = target {
    let (cluster, client) = *cluster;
    return connect_cluster(cluster, client, stream).await;
  }
  let client = target.client().await?;
  let (reader, reader_id) = open_reader(&client).await?;
  let mut commands = client
    .get_multiplexed_async_connection_with_config(&command_config())
    .await?;
  // Never a replica (a stale address, a demoted master): ask again.
  target::check_master(&mut commands).await?;
  set_name(&mut commands).await;
  Ok(Session {
    reader,
    reader_id,
    control: commands.clone(),
    commands: Commands::Single(commands),
    node: None,
  })
}

/// A session on a Cluster: the crate's cluster connection, and the reader
/// (with its control connection) on the node serving the stream's slot.
async fn connect_cluster(
  cluster: Cluster,
  client: redis::cluster::ClusterClient,
  stream: String,
) -> RedisResult<Session> {
  let mut conn = client.get_async_connection().await?;
  let (host, port) = cluster::locate(&mut conn, &stream).await?;
  let node_client = cluster.node_client(&host, port)?;
  let (reader, reader_id) = open_reader(&node_client).await?;
  let mut control = node_client
    .get_multiplexed_async_connection_with_config(&command_config())
    .await?;
  set_name(&mut control).await;
  Ok(Session {
    reader,
    reader_id,
    control,
    commands: Commands::Cluster { conn, stream },
    node: Some(ReaderNode {
      cluster,
      host,
      port,
      asking: false,
      redirects: 0,
      pause: None,
    }),
  })
}

impl Session {
  /// On a Cluster, after the reader's error: moves the reader where the
  /// error points (or where the slot is served now). `Err` when the error
  /// is not one that moves it (one server, or a Redis refusal), or after
  /// too many redirections in a row: the session ends.
  pub(super) async fn redirect_reader(&mut self, error: redis::RedisError) -> RedisResult<()> {
    let Some(redirect) = self
      .node
      .as_ref()
      .and_then(|_| cluster::redirect_of(&error))
    else {
      return Err(error);
    };
    let Some(node) = self.node.as_mut() else {
      return Err(error);
    };
    node.redirects += 1;
    if node.redirects > MAX_REDIRECTS {
      return Err(error);
    }
    // Straight away where a node said; after a pause where the slot's
    // owner was asked again (it may be the node that failed, or the slot
    // may have no master until a replica is promoted).
    let (host, port, asking, pause) = match redirect {
      cluster::Redirect::Moved(host, port) => (host, port, false, None),
      cluster::Redirect::Ask(host, port) => (host, port, true, None),
      cluster::Redirect::Locate => {
        let Commands::Cluster { conn, stream } = &mut self.commands else {
          return Err(error);
        };
        // Bounded: the cluster connection retries a dead node for up to
        // its whole timeout, and requests wait while this runs.
        let located = tokio::time::timeout(cluster::LOCATE_TIMEOUT, cluster::locate(conn, stream));
        match located.await {
          Ok(Ok((host, port))) => (host, port, false, Some(cluster::LOCATE_PAUSE)),
          // Not served now (a failover under way): asked again later.
          _ => {
            node.pause = Some(cluster::LOCATE_PAUSE);
            return Ok(());
          }
        }
      }
    };
    let opened = async {
      let client = node.cluster.node_client(&host, port)?;
      let reader = open_reader(&client).await?;
      let mut control = client
        .get_multiplexed_async_connection_with_config(&command_config())
        .await?;
      set_name(&mut control).await;
      RedisResult::Ok((reader, control))
    };
    match opened.await {
      Ok(((reader, reader_id), control)) => {
        self.reader = reader;
        self.reader_id = reader_id;
        self.control = control;
        node.host = host;
        node.port = port;
        node.asking = asking;
        node.pause = pause;
      }
      // That node is not reachable (it failed): asked again later.
      Err(_) => node.pause = Some(cluster::LOCATE_PAUSE),
    }
    Ok(())
  }

  /// A read succeeded: redirections in a row start again from zero.
  pub(super) fn read_served(&mut self) {
    if let Some(node) = self.node.as_mut() {
      node.redirects = 0;
    }
  }
}
