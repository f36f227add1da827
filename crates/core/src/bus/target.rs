//! Where the bus connects: one Redis (`redis://`, `rediss://`, `unix:`),
//! the master a set of Sentinels names
//! (`redis+sentinel://[user:password@]host:port[,host:port…]/<master>[/<db>]`,
//! or `rediss+sentinel://` for TLS to the Sentinels and to the master),
//! or a Redis Cluster (`redis+cluster://…`, [`Cluster`]).
//!
//! With Sentinel the master is asked for at every connect, never
//! remembered: after a failover the bus goes to the promoted replica, and a
//! failed master that comes back (empty, and calling itself a master until
//! the Sentinels demote it) is never written to. Every connect, on either
//! kind, checks `ROLE`: a server that is not a master is refused, so a
//! stale address leads to asking again, not to appends a replica refuses
//! (`READONLY`) in a reconnect loop.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::{AsyncConnectionConfig, RedisResult, Value};

pub use super::cluster::Cluster;
use super::config::direct_client;

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinels {
  /// `host:port` of each Sentinel, in the order given.
  pub addresses: Vec<(String, u16)>,
  pub master: String,
  pub db: i64,
  /// Credentials of the master (and its replicas), not of the Sentinels.
  pub username: Option<String>,
  pub password: Option<String>,
  /// The Sentinels' own credentials (`?sentinelUsername=…&sentinelPassword=…`),
  /// for Sentinels that require a password.
  pub sentinel_username: Option<String>,
  pub sentinel_password: Option<String>,
  /// TLS to the Sentinels and to the master they name (`rediss+sentinel://`).
  pub tls: bool,
  /// PEM roots TLS trusts instead of the system's (a private CA).
  pub ca: Option<String>,
}

/// Where the bus connects.
#[derive(Debug, Clone)]
pub enum Target {
  /// One server, as the URL names it.
  Direct(redis::Client),
  /// The current master of a Sentinel-monitored group.
  Sentinel(Sentinels),
  /// A Redis Cluster, through the crate's cluster client.
  Cluster(Box<(Cluster, ClusterClient)>),
}

/// The schemes of a Sentinel URL: without TLS, and with TLS to the
/// Sentinels and to the master.
const SENTINEL_SCHEME: &str = "redis+sentinel://";
const SENTINEL_TLS_SCHEME: &str = "rediss+sentinel://";
/// How long one Sentinel may take to answer where the master is.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// `host:port`, the host in brackets when it is an IPv6 address.
pub(super) fn host_port(host: &str, port: u16) -> String {
  if host.contains(':') {
    format!("[{host}]:{port}")
  } else {
    format!("{host}:{port}")
  }
}

/// Percent-encodes user information for a URL (all but unreserved bytes).
pub(super) fn encode(text: &str) -> String {
  text
    .bytes()
    .map(|b| {
      if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
        (b as char).to_string()
      } else {
        format!("%{b:02X}")
      }
    })
    .collect()
}

/// Percent-decodes a URL's user information.
pub(super) fn decode(text: &str) -> Result<String, String> {
  let bytes = text.as_bytes();
  let mut out = Vec::with_capacity(bytes.len());
  let mut i = 0;
  while i < bytes.len() {
    if bytes[i] == b'%' {
      let hex = text
        .get(i + 1..i + 3)
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        // The text is not shown: it may be a password.
        .ok_or("a bad percent escape (a % not followed by two hex digits)")?;
      out.push(hex);
      i += 3;
    } else {
      out.push(bytes[i]);
      i += 1;
    }
  }
  String::from_utf8(out).map_err(|_| "the credentials are not UTF-8".to_string())
}

/// A URL's authority `[user[:password]@]hosts` split at its last `@`: the
/// decoded user (`None` when empty), the decoded password, and the hosts.
pub(super) fn split_userinfo(
  authority: &str,
) -> Result<(Option<String>, Option<String>, &str), String> {
  let (userinfo, hosts) = match authority.rsplit_once('@') {
    Some((userinfo, hosts)) => (Some(userinfo), hosts),
    None => (None, authority),
  };
  let (username, password) = match userinfo {
    None => (None, None),
    Some(info) => match info.split_once(':') {
      Some((user, pass)) => (
        Some(decode(user)?).filter(|u| !u.is_empty()),
        Some(decode(pass)?),
      ),
      None => (Some(decode(info)?).filter(|u| !u.is_empty()), None),
    },
  };
  Ok((username, password, hosts))
}

/// `user:password@` for a URL, percent-encoded (`user@` without a
/// password, `:password@` without a user), empty without either.
pub(super) fn userinfo(username: Option<&str>, password: Option<&str>) -> String {
  match (username, password) {
    (None, None) => String::new(),
    (user, None) => format!("{}@", encode(user.unwrap_or_default())),
    (user, Some(pass)) => format!("{}:{}@", encode(user.unwrap_or_default()), encode(pass)),
  }
}

/// `host[:port],…` (IPv6 hosts in brackets), `default_port` where none is
/// given; `what` names the hosts in errors.
pub(super) fn parse_hosts(
  hosts: &str,
  default_port: u16,
  what: &str,
) -> Result<Vec<(String, u16)>, String> {
  let mut addresses = Vec::new();
  for host in hosts.split(',') {
    // `[::1]:7000`, `[::1]`, `host:7000`, `host`.
    let (name, port) = match host.rsplit_once(':') {
      Some((name, port)) if !name.starts_with('[') || name.ends_with(']') => {
        (name, port.parse::<u16>())
      }
      _ => (host, Ok(default_port)),
    };
    let port = port.map_err(|_| format!("a bad {what} port in {host:?}"))?;
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() {
      return Err(format!("a {what} address without a host: {host:?}"));
    }
    addresses.push((name.to_string(), port));
  }
  Ok(addresses)
}

/// The Sentinels' credentials from a Sentinel URL's query
/// (`sentinelUsername=…&sentinelPassword=…`, percent-encoded); any other
/// parameter is refused.
fn sentinel_credentials(query: &str) -> Result<(Option<String>, Option<String>), String> {
  let (mut username, mut password) = (None, None);
  for pair in query.split('&').filter(|p| !p.is_empty()) {
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    let slot = match key {
      "sentinelUsername" => &mut username,
      "sentinelPassword" => &mut password,
      // Not named: a `&` left unencoded in a password would show its tail.
      _ => {
        return Err(
          "an unknown parameter in a Sentinel URL's query (sentinelUsername and sentinelPassword are known; percent-encode & and % in their values)"
            .into(),
        )
      }
    };
    let value = decode(value).map_err(|e| format!("{key}: {e}"))?;
    if slot.replace(value).is_some() {
      return Err(format!("{key} given twice in a Sentinel URL"));
    }
  }
  Ok((username.filter(|u: &String| !u.is_empty()), password))
}

impl Sentinels {
  /// Parses `redis+sentinel://…` or `rediss+sentinel://…` (whose TLS
  /// trusts `ca` when given); `None` for any other scheme. `ca` without TLS
  /// is refused: it would be silently unused.
  pub fn parse(url: &str, ca: Option<&str>) -> Option<Result<Sentinels, String>> {
    let (rest, tls) = match url.strip_prefix(SENTINEL_TLS_SCHEME) {
      Some(rest) => (rest, true),
      None => (url.strip_prefix(SENTINEL_SCHEME)?, false),
    };
    if ca.is_some() && !tls {
      return Some(Err(
        "ca is for TLS: use rediss+sentinel:// (redis+sentinel:// connects without TLS)".into(),
      ));
    }
    Some(Self::parse_rest(rest).map(|parsed| Sentinels {
      tls,
      ca: ca.map(str::to_owned),
      ..parsed
    }))
  }

  fn parse_rest(rest: &str) -> Result<Sentinels, String> {
    let (authority, path) = rest.split_once('/').ok_or(
      "a redis+sentinel:// URL needs the master's name: redis+sentinel://host:port/<master>",
    )?;
    let (username, password, hosts) = split_userinfo(authority)?;
    let addresses = parse_hosts(hosts, 26379, "Sentinel")?;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let (sentinel_username, sentinel_password) = sentinel_credentials(query)?;
    let mut parts = path.split('/');
    let master = parts.next().unwrap_or_default();
    if master.is_empty() {
      return Err("a redis+sentinel:// URL needs the master's name after the hosts".into());
    }
    let db = match parts.next() {
      None | Some("") => 0,
      Some(db) => db
        .parse()
        .map_err(|_| format!("a bad database number {db:?}"))?,
    };
    if parts.next().is_some() {
      return Err("a redis+sentinel:// URL's path is /<master>[/<db>]".into());
    }
    Ok(Sentinels {
      addresses,
      master: decode(master)?,
      db,
      username,
      password,
      sentinel_username,
      sentinel_password,
      tls: false,
      ca: None,
    })
  }

  /// `rediss` with TLS, else `redis`.
  fn scheme(&self) -> &'static str {
    if self.tls {
      "rediss"
    } else {
      "redis"
    }
  }

  /// The client for a Sentinel at `host:port`, with the Sentinels' own
  /// credentials (those before the hosts are the master's).
  fn sentinel_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
    let (user, password) = (&self.sentinel_username, &self.sentinel_password);
    self.client_at(host, port, user, password, "")
  }

  /// The client for a master at `host:port`.
  fn master_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
    let db = format!("/{}", self.db);
    self.client_at(host, port, &self.username, &self.password, &db)
  }

  fn client_at(
    &self,
    host: &str,
    port: u16,
    user: &Option<String>,
    password: &Option<String>,
    path: &str,
  ) -> RedisResult<redis::Client> {
    let auth = userinfo(user.as_deref(), password.as_deref());
    let url = format!("{}://{auth}{}{path}", self.scheme(), host_port(host, port));
    direct_client(&url, self.ca.as_deref())
  }

  /// Checks that a client can be made as the URL asks (TLS where this
  /// build has it, the CA), before anything connects.
  pub fn check(&self) -> RedisResult<()> {
    let (host, port) = self.addresses.first().ok_or_else(|| {
      redis::RedisError::from((redis::ErrorKind::EmptySentinelList, "no Sentinel given"))
    })?;
    self.sentinel_client(host, *port).map(|_| ())
  }

  /// Asks the Sentinels in turn where the master is; the first answer wins.
  async fn resolve(&self) -> RedisResult<redis::Client> {
    let config = AsyncConnectionConfig::new()
      .set_connection_timeout(Some(SENTINEL_TIMEOUT))
      .set_response_timeout(Some(SENTINEL_TIMEOUT));
    let mut last_error = None;
    for (host, port) in &self.addresses {
      let asked = async {
        let sentinel = self.sentinel_client(host, *port)?;
        let mut conn = sentinel
          .get_multiplexed_async_connection_with_config(&config)
          .await?;
        let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
          .arg("get-master-addr-by-name")
          .arg(&self.master)
          .query_async(&mut conn)
          .await?;
        answer.ok_or_else(|| {
          redis::RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "the Sentinel does not know this master",
            self.master.clone(),
          ))
        })
      };
      match asked.await {
        Ok((host, port)) => return self.master_client(&host, port),
        Err(e) => last_error = Some(e),
      }
    }
    Err(last_error.unwrap_or_else(|| {
      redis::RedisError::from((redis::ErrorKind::EmptySentinelList, "no Sentinel given"))
    }))
  }
}

impl Target {
  /// The client to connect with now: the one server, or the master the
  /// Sentinels name at this moment (a Cluster connects otherwise).
  pub async fn client(&self) -> RedisResult<redis::Client> {
    match self {
      Target::Direct(client) => Ok(client.clone()),
      Target::Sentinel(sentinels) => sentinels.resolve().await,
      Target::Cluster(_) => Err(redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "a Redis Cluster has no single server",
      ))),
    }
  }
}

/// Refuses a server that is not a master (`ROLE`'s first element): a
/// replica would refuse every append with `READONLY`. A server that does
/// not answer `ROLE` (a proxy that hides it) is taken as it is.
pub async fn check_master(conn: &mut MultiplexedConnection) -> RedisResult<()> {
  let role: RedisResult<Value> = redis::cmd("ROLE").query_async(conn).await;
  let Ok(Value::Array(parts)) = role else {
    return match role {
      Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Err(e),
      _ => Ok(()),
    };
  };
  let name = match parts.first() {
    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
    Some(Value::SimpleString(s)) => s.clone(),
    _ => return Ok(()),
  };
  if name == "master" {
    Ok(())
  } else {
    Err(redis::RedisError::from((
      redis::ErrorKind::Client,
      "the server is not a master (ROLE)",
      name,
    )))
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn sentinel_urls_name_the_sentinels_the_master_and_the_credentials() {
    let parsed = Sentinels::parse(
      "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-c/mymaster/2",
      None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
      parsed,
      Sentinels {
        addresses: vec![
          ("10.0.0.1".into(), 26379),
          ("::1".into(), 26380),
          ("sentinel-c".into(), 26379),
        ],
        master: "mymaster".into(),
        db: 2,
        username: None,
        password: Some("p@ss".into()),
        sentinel_username: None,
        sentinel_password: None,
        tls: false,
        ca: None,
      }
    );
    let with_auth = Sentinels::parse(
      "redis+sentinel://s1/m/1?sentinelUsername=app&sentinelPassword=s%26cret",
      None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
      (
        with_auth.sentinel_username.as_deref(),
        with_auth.sentinel_password.as_deref(),
        with_auth.db
      ),
      (Some("app"), Some("s&cret"), 1)
    );
    assert!(Sentinels::parse("redis://localhost", None).is_none());
    for bad in [
      "redis+sentinel://h:1",
      "redis+sentinel://h:1/",
      "redis+sentinel://h:x/m",
      "redis+sentinel://:1/m",
      "redis+sentinel://h:1/m/x",
      "redis+sentinel://h:1/m/0/extra",
      "redis+sentinel://h:1/m?password=x",
      "redis+sentinel://h:1/m?sentinelPassword=a&sentinelPassword=b",
      "redis+sentinel://h:1/m?sentinelPassword=%zz",
    ] {
      assert!(Sentinels::parse(bad, None).unwrap().is_err(), "{bad}");
    }
  }

  #[test]
  fn rediss_sentinel_urls_mean_tls_to_the_sentinels_and_the_master() {
    let parsed = Sentinels::parse("rediss+sentinel://u:p@s1:26380/m/1", Some("PEM"))
      .unwrap()
      .unwrap();
    assert!(parsed.tls);
    assert_eq!(parsed.scheme(), "rediss");
    assert_eq!(parsed.ca.as_deref(), Some("PEM"));
    assert_eq!(
      (parsed.addresses, parsed.master.as_str(), parsed.db),
      (vec![("s1".to_string(), 26380)], "m", 1)
    );
    let plain = Sentinels::parse("redis+sentinel://s1/m", None)
      .unwrap()
      .unwrap();
    assert!(!plain.tls && plain.scheme() == "redis");
    // A CA for a plain URL would be unused: refused, not ignored.
    let refused = Sentinels::parse("redis+sentinel://s1/m", Some("PEM"))
      .unwrap()
      .unwrap_err();
    assert!(refused.contains("rediss+sentinel://"), "{refused}");
  }

  #[test]
  fn a_malformed_query_is_refused_without_showing_the_credentials() {
    for url in [
      "redis+sentinel://s1/m?sentinelPassword=100%zzsecret",
      "redis+sentinel://s1/m?sentinelPassword=ab&secret",
      "redis+sentinel://:100%zzsecret@s1/m",
    ] {
      let err = Sentinels::parse(url, None).unwrap().unwrap_err();
      assert!(!err.contains("secret"), "{url}: {err}");
    }
  }
}
