//! Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port…]`
//! (`rediss+cluster://` for TLS).
//!
//! Appends, presence and replay reads go through the redis crate's async
//! cluster connection, which routes each command by its key's slot and
//! follows `MOVED` and `ASK` itself. Every key of the bus is in the stream's
//! slot ([`super::keys`]), so they all reach one node. The blocking reader
//! cannot share that connection (its response timeout would fail every
//! `BLOCK`, and a blocked command holds up the ones behind it): it has its
//! own, to the node that owns the slot, found with `CLUSTER SLOTS`, and
//! moved on `MOVED` / `ASK` (a slot migration), `TRYAGAIN` / `CLUSTERDOWN`
//! and a node that fails (a failover) ([`super::session::ReaderNode`]).

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisError, RedisResult, Value};

use super::config::{direct_client, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use super::keys;
use super::target::{host_port, parse_hosts, split_userinfo, userinfo};

/// A parsed `redis+cluster://` URL, with what connects to it.
#[derive(Debug, Clone)]
pub struct Cluster {
  /// `host:port` of each node given (the seeds), in order.
  pub seeds: Vec<(String, u16)>,
  /// `rediss+cluster://`: every node speaks TLS.
  pub tls: bool,
  pub username: Option<String>,
  pub password: Option<String>,
  /// PEM roots for TLS instead of the system's.
  pub ca: Option<String>,
}

/// The schemes of a Cluster URL.
const CLUSTER_SCHEME: &str = "redis+cluster://";
const CLUSTER_TLS_SCHEME: &str = "rediss+cluster://";

impl Cluster {
  /// Parses `redis+cluster://…` or `rediss+cluster://…`; `None` for any
  /// other scheme.
  pub fn parse(url: &str, ca: Option<&str>) -> Option<Result<Cluster, String>> {
    let (rest, tls) = match url.strip_prefix(CLUSTER_SCHEME) {
      Some(rest) => (rest, false),
      None => (url.strip_prefix(CLUSTER_TLS_SCHEME)?, true),
    };
    Some(Self::parse_rest(rest, tls, ca))
  }

  fn parse_rest(rest: &str, tls: bool, ca: Option<&str>) -> Result<Cluster, String> {
    if ca.is_some() && !tls {
      return Err("ca is for TLS: use rediss+cluster://".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // A Cluster has database 0 only.
    if !matches!(path, "" | "0") {
      return Err(
        "a Cluster URL names no database (or /0): redis+cluster://host:port[,host:port…]".into(),
      );
    }
    let (username, password, hosts) = split_userinfo(authority)?;
    let seeds = parse_hosts(hosts, 6379, "Cluster node")?;
    Ok(Cluster {
      seeds,
      tls,
      username,
      password,
      ca: ca.map(str::to_string),
    })
  }

  /// The URL of one node, with the credentials and scheme of all.
  fn node_url(&self, host: &str, port: u16) -> String {
    let auth = userinfo(self.username.as_deref(), self.password.as_deref());
    let scheme = if self.tls { "rediss" } else { "redis" };
    format!("{scheme}://{auth}{}", host_port(host, port))
  }

  /// The crate's cluster client over the seeds (no connection yet).
  pub fn client(&self) -> RedisResult<ClusterClient> {
    let seeds: Vec<String> = self
      .seeds
      .iter()
      .map(|(host, port)| self.node_url(host, *port))
      .collect();
    let builder = ClusterClientBuilder::new(seeds)
      .connection_timeout(CONNECT_TIMEOUT)
      .response_timeout(COMMAND_TIMEOUT)
      // Redirections and retries within the command timeout: a failover
      // takes seconds, and an append that outlives it fails (and is
      // delivered locally) rather than waiting without end.
      .overall_response_timeout(Some(COMMAND_TIMEOUT));
    #[cfg(target_os = "linux")]
    let builder = match &self.ca {
      Some(ca) => builder.certs(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.as_bytes().to_vec()),
      }),
      None => builder,
    };
    builder.build()
  }

  /// A client for one node (the reader's), as the seeds are reached.
  pub fn node_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
    direct_client(&self.node_url(host, port), self.ca.as_deref())
  }
}

/// Where the stream's slot is served, as the node the cluster connection
/// takes for its owner sees it: `host:port` of the slot's master.
pub(super) async fn locate(
  conn: &mut ClusterConnection,
  stream: &str,
) -> RedisResult<(String, u16)> {
  let slot = keys::slot(stream);
  let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
    stream.as_bytes(),
    SlotAddr::Master,
  )));
  let slots = conn
    .route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing)
    .await?;
  owner_of(&slots, slot).ok_or_else(|| {
    RedisError::from((
      redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
      "no node serves the stream's hash slot",
      format!("slot {slot}"),
    ))
  })
}

/// The master of `slot` in a `CLUSTER SLOTS` reply:
/// `[[start, end, [host, port, id, …], replicas…], …]`.
pub(super) fn owner_of(slots: &Value, slot: u16) -> Option<(String, u16)> {
  let Value::Array(ranges) = slots else {
    return None;
  };
  ranges.iter().find_map(|range| {
    let Value::Array(parts) = range else {
      return None;
    };
    let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
      (parts.first(), parts.get(1), parts.get(2))
    else {
      return None;
    };
    if !(*start..=*end).contains(&i64::from(slot)) {
      return None;
    }
    let host = match master.first()? {
      Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
      Value::SimpleString(s) => s.clone(),
      _ => return None,
    };
    let Some(Value::Int(port)) = master.get(1) else {
      return None;
    };
    let port = u16::try_from(*port).ok()?;
    (!host.is_empty()).then_some((host, port))
  })
}

/// How a reader's error redirects it (a Cluster's answer naming a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Redirect {
  /// `MOVED`: the slot is served there now.
  Moved(String, u16),
  /// `ASK`: the slot is migrating there; the key is asked for with `ASKING`.
  Ask(String, u16),
  /// `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`, `READONLY`, or the
  /// node failed: where the slot is served is asked again, after a pause.
  Locate,
}

/// How soon the reader asks again where the slot is, when no node said.
pub(super) const LOCATE_PAUSE: Duration = Duration::from_millis(200);
/// How long asking where the slot is may take.
pub(super) const LOCATE_TIMEOUT: Duration = Duration::from_secs(1);

/// How `error` (of the reader's own connection) redirects the reader.
pub(super) fn redirect_of(error: &RedisError) -> Option<Redirect> {
  use redis::ServerErrorKind as K;
  let kind = match error.kind() {
    redis::ErrorKind::Server(kind) => kind,
    _ if super::session::connection_failed(error) => return Some(Redirect::Locate),
    _ => return None,
  };
  let node = || {
    // A pipeline's error keeps each command's; `MOVED <slot> <host:port>`.
    let errors = error.clone().into_server_errors()?;
    let detail = errors.iter().find_map(|(_, e)| e.details())?.to_string();
    let address = detail.split_ascii_whitespace().nth(1)?;
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse::<u16>().ok()?))
  };
  match kind {
    K::Moved => Some(node().map_or(Redirect::Locate, |(h, p)| Redirect::Moved(h, p))),
    K::Ask => Some(node().map_or(Redirect::Locate, |(h, p)| Redirect::Ask(h, p))),
    K::TryAgain | K::ClusterDown | K::MasterDown | K::BusyLoading | K::ReadOnly => {
      Some(Redirect::Locate)
    }
    _ => None,
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::bus::resp::bulk;

  #[test]
  fn cluster_urls_name_the_seeds_and_the_credentials() {
    let parsed = Cluster::parse(
      "redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,node-c",
      None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
      parsed.seeds,
      vec![
        ("10.0.0.1".to_string(), 7000),
        ("::1".to_string(), 7001),
        ("node-c".to_string(), 6379)
      ]
    );
    assert!(!parsed.tls);
    assert_eq!(parsed.username.as_deref(), Some("u"));
    assert_eq!(parsed.password.as_deref(), Some("p@ss"));
    assert_eq!(parsed.node_url("::1", 7001), "redis://u:p%40ss@[::1]:7001");
    let tls = Cluster::parse("rediss+cluster://h:1/0", Some("pem"))
      .unwrap()
      .unwrap();
    assert!(tls.tls);
    assert_eq!(tls.node_url("h", 1), "rediss://h:1");
    assert!(Cluster::parse("redis://h:1", None).is_none());
    for bad in [
      "redis+cluster://",
      "redis+cluster://h:x",
      "redis+cluster://:1",
      "redis+cluster://h:1/2",
      "redis+cluster://h:1,",
    ] {
      assert!(Cluster::parse(bad, None).unwrap().is_err(), "{bad}");
    }
    assert!(Cluster::parse("redis+cluster://h:1", Some("pem"))
      .unwrap()
      .is_err());
  }

  #[test]
  fn the_slots_owner_is_found_in_cluster_slots() {
    let node = |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
    let slots = Value::Array(vec![
      Value::Array(vec![
        Value::Int(0),
        Value::Int(5460),
        node("127.0.0.1", 7000),
      ]),
      Value::Array(vec![
        Value::Int(5461),
        Value::Int(10922),
        node("127.0.0.1", 7001),
        node("127.0.0.1", 7004),
      ]),
      Value::Array(vec![Value::Int(10923), Value::Int(16383), node("", 7002)]),
    ]);
    assert_eq!(owner_of(&slots, 0), Some(("127.0.0.1".into(), 7000)));
    assert_eq!(owner_of(&slots, 8000), Some(("127.0.0.1".into(), 7001)));
    assert_eq!(owner_of(&slots, 12000), None);
    assert_eq!(owner_of(&Value::Nil, 1), None);
  }

  #[test]
  fn redirects_are_read_from_cluster_errors() {
    let server = |reply: &[u8]| {
      redis::parse_redis_value(reply)
        .unwrap()
        .extract_error()
        .unwrap_err()
    };
    assert_eq!(
      redirect_of(&server(b"-MOVED 8273 127.0.0.1:17301\r\n")),
      Some(Redirect::Moved("127.0.0.1".into(), 17301))
    );
    assert_eq!(
      redirect_of(&server(b"-ASK 8273 [::1]:17302\r\n")),
      Some(Redirect::Ask("::1".into(), 17302))
    );
    assert_eq!(
      redirect_of(&server(b"-CLUSTERDOWN The cluster is down\r\n")),
      Some(Redirect::Locate)
    );
    assert_eq!(
      redirect_of(&server(
        b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
      )),
      Some(Redirect::Locate)
    );
    let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(redirect_of(&io), Some(Redirect::Locate));
    assert_eq!(redirect_of(&server(b"-NOSCRIPT x\r\n")), None);
    assert_eq!(redirect_of(&server(b"-ERR unknown command\r\n")), None);
  }
}
