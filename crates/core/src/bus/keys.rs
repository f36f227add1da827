//! The keys the bus uses, all in the stream's hash slot.
//!
//! Redis Cluster hashes a key by its hash tag (the text between its first
//! `{` and the first `}` after it, when not empty), else by the whole key.
//! The stream key is the user's stream name, unchanged. On a Cluster the
//! presence keys carry the stream's tag: `<stream>:presence:<instance>`
//! when the stream name already has one, else
//! `{<stream>}:presence:<instance>`, whose tag is the whole stream name and
//! so hashes exactly like the stream key. So a stream and its presence keys
//! always share one slot (one node), and the bus's multi-key commands
//! (`MGET` of the presence keys) and pipelines never cross slots. On one
//! server they keep their earlier name, `<stream>:presence:<instance>`.

/// The hash tag of `key`, as Redis Cluster finds it: the text between the
/// first `{` and the first `}` after it, when that text is not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
  let open = key.find('{')?;
  let rest = &key[open + 1..];
  let close = rest.find('}')?;
  Some(&rest[..close]).filter(|tag| !tag.is_empty())
}

/// CRC16-CCITT (XMODEM), Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
  let mut crc: u16 = 0;
  for &byte in bytes {
    crc ^= u16::from(byte) << 8;
    for _ in 0..8 {
      crc = if crc & 0x8000 != 0 {
        (crc << 1) ^ 0x1021
      } else {
        crc << 1
      };
    }
  }
  crc
}

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key` in a Redis Cluster.
pub fn slot(key: &str) -> u16 {
  crc16(hash_tag(key).unwrap_or(key).as_bytes()) % SLOTS
}

/// What every presence key of `stream` starts with. On a Cluster the
/// stream's hash tag: `<stream>:presence:` when the name has one, else
/// `{<stream>}:presence:`. On one server (and Sentinel) `<stream>:presence:`,
/// as before Cluster support, so a rolling upgrade counts every instance.
pub fn presence_prefix(stream: &str, cluster: bool) -> String {
  if !cluster || hash_tag(stream).is_some() {
    format!("{stream}:presence:")
  } else {
    format!("{{{stream}}}:presence:")
  }
}

/// Whether every key of `stream` lands in the stream's slot. Not for a name
/// without a hash tag that holds a `}` (`a}b`): its presence keys' tag
/// would end early. Such a stream works on one server, not on a Cluster.
pub fn shares_one_slot(stream: &str) -> bool {
  hash_tag(stream).is_some() || !stream.contains('}')
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn slots_follow_redis_cluster() {
    // The reference values of the Redis Cluster specification and of
    // `CLUSTER KEYSLOT` on redis-server 7.0.
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(slot("foo"), 12182);
    assert_eq!(slot("sse"), slot("{sse}:presence:0123"));
    assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
    assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
    assert_eq!(slot("foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
    assert_eq!(slot("foo{bar}{zap}"), crc16(b"bar") % SLOTS);
  }

  #[test]
  fn presence_keys_share_the_streams_slot() {
    assert_eq!(presence_prefix("sse", true), "{sse}:presence:");
    assert_eq!(presence_prefix("{app}:sse", true), "{app}:sse:presence:");
    // One server: the names of earlier versions.
    assert_eq!(presence_prefix("sse", false), "sse:presence:");
    for stream in ["sse", "{app}:sse", "app:{t}", "a{b", "chat.room-1"] {
      assert!(shares_one_slot(stream), "{stream}");
      assert_eq!(
        slot(stream),
        slot(&format!(
          "{}0123456789abcdef0123456789abcdef",
          presence_prefix(stream, true)
        )),
        "{stream}"
      );
    }
    for stream in ["a}b", "{}b}", "{}", "x{}y{z}"] {
      assert!(!shares_one_slot(stream), "{stream}");
    }
  }
}
