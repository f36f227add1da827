//! Presence: each instance's count of clients under a key that expires,
//! and the total over every live instance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{RedisResult, Value};

use super::config::PRESENCE_TTL;
use super::resp::glob_escape;
use super::session::Session;
use super::task::BusTask;

impl BusTask {
  pub(super) async fn refresh_presence(&self, session: &mut Session) -> RedisResult<()> {
    let count = self.shared.local_count.load(Ordering::Relaxed);
    redis::cmd("SET")
      .arg(&self.presence_key)
      .arg(count)
      .arg("PX")
      .arg(PRESENCE_TTL.as_millis() as u64)
      .query_async::<Value>(&mut session.commands)
      .await
      .map(|_| ())
  }

  /// The clients of every live instance: this one's count refreshed first,
  /// then every presence key of the stream summed.
  pub(super) async fn count(&self, session: &mut Session) -> RedisResult<f64> {
    self.refresh_presence(session).await?;
    let prefix = &self.presence_prefix;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut total = 0.0;
    loop {
      let mut scan = redis::cmd("SCAN");
      scan
        .arg(cursor)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(200);
      // Keyless: on a Cluster, sent to the node of the stream's slot,
      // where every presence key lives.
      let (next, keys): (u64, Vec<String>) = session.commands.on_stream_node(&scan).await?;
      // Only keys in this bus's own format count: another program's
      // `<stream>:presence:alice = online` is not an instance.
      let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| is_presence_key(k, prefix))
        .collect();
      if !keys.is_empty() {
        let counts: Vec<Value> = redis::cmd("MGET")
          .arg(&keys)
          .query_async(&mut session.commands)
          .await?;
        total += counts.iter().filter_map(presence_count).sum::<u64>() as f64;
      }
      if next == 0 {
        return Ok(total);
      }
      cursor = next;
    }
  }

  /// Leaving for good: this instance drops out of the presence count now
  /// rather than when its key expires.
  pub(super) async fn leave(&self, session: &mut Session) {
    let mut del = redis::cmd("DEL");
    del.arg(&self.presence_key);
    let _ = tokio::time::timeout(
      Duration::from_secs(1),
      del.query_async::<Value>(&mut session.commands),
    )
    .await;
  }
}

/// Whether `key` is an instance's presence key, as this bus writes them:
/// `prefix` ([`presence_prefix`]) then 32 lowercase hex digits.
pub(super) fn is_presence_key(key: &str, prefix: &str) -> bool {
  key.strip_prefix(prefix).is_some_and(|instance| {
    instance.len() == 32
      && instance
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
  })
}

/// A presence value: a count as this bus writes it (decimal digits, at most
/// a billion); anything else counts for nothing.
pub(super) fn presence_count(value: &Value) -> Option<u64> {
  let Value::BulkString(bytes) = value else {
    return None;
  };
  if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
    return None;
  }
  std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::bus::keys::presence_prefix;
  use crate::bus::resp::bulk;

  #[test]
  fn presence_counts_only_its_own_keys_and_numbers() {
    let me = "0123456789abcdef0123456789abcdef";
    let single = presence_prefix("chat", false);
    assert!(is_presence_key(&format!("chat:presence:{me}"), &single));
    assert!(!is_presence_key("chat:presence:alice", &single));
    let chat = presence_prefix("chat", true);
    assert!(is_presence_key(&format!("{{chat}}:presence:{me}"), &chat));
    assert!(!is_presence_key(&format!("chat:presence:{me}"), &chat));
    assert!(!is_presence_key("{chat}:presence:alice", &chat));
    assert!(!is_presence_key(
      &format!("{{chat}}:presence:{}", me.to_uppercase()),
      &chat
    ));
    assert!(!is_presence_key(&format!("{{other}}:presence:{me}"), &chat));
    let tagged = presence_prefix("{app}:chat", true);
    assert!(is_presence_key(
      &format!("{{app}}:chat:presence:{me}"),
      &tagged
    ));
    assert_eq!(presence_count(&bulk("12")), Some(12));
    for bad in ["online", "", "-1", "1.5", "99999999999"] {
      assert_eq!(presence_count(&bulk(bad)), None, "{bad}");
    }
    assert_eq!(presence_count(&Value::Nil), None);
  }
}
