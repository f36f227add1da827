//! How many connections the writer may hold: each costs a second fd, so the
//! budget follows the process's open-files limit (`getrlimit`). Where there
//! is no fd to hand over (Windows), the budget is zero: every connection
//! stays on the stream transport.

/// How many connections the writer may hold at once. Each one costs a
/// second fd (the duplicate) besides Node's own, so the writer stays under
/// half of the soft `RLIMIT_NOFILE` once a reserve (1%, at least 128) is set
/// aside for everything else the process opens; past it, new connections
/// stay on the stream transport, at one fd each. Unlimited where the limit
/// is infinite or cannot be read (a failed duplication still falls back
/// cleanly).
#[cfg(unix)]
pub fn fd_budget() -> usize {
  open_files_limit().map_or(usize::MAX, budget_for_limit)
}

/// How many connections the writer may hold at once: none, where Node
/// gives no fd for a socket.
#[cfg(not(unix))]
pub fn fd_budget() -> usize {
  0
}

#[cfg_attr(not(unix), allow(dead_code))]
fn budget_for_limit(soft: usize) -> usize {
  let reserve = (soft / 100).max(128);
  soft.saturating_sub(reserve) / 2
}

/// The soft open-files limit, from `getrlimit(2)`; `None` when unlimited or
/// unreadable.
#[cfg(unix)]
fn open_files_limit() -> Option<usize> {
  let mut limit = libc::rlimit {
    rlim_cur: 0,
    rlim_max: 0,
  };
  // SAFETY: `limit` is a valid, writable `struct rlimit`; getrlimit only
  // writes to it.
  if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
    return None;
  }
  if limit.rlim_cur == libc::RLIM_INFINITY {
    return None;
  }
  usize::try_from(limit.rlim_cur).ok()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_fd_budget_leaves_room_for_node() {
    assert_eq!(budget_for_limit(1024), 448);
    assert_eq!(budget_for_limit(20_000), 9_900);
    assert_eq!(budget_for_limit(100), 0);
  }

  #[test]
  #[cfg(target_os = "linux")]
  fn the_fd_budget_follows_this_process_limit() {
    // The limit getrlimit reports is the one the kernel shows for this process.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
      .lines()
      .find(|l| l.starts_with("Max open files"))
      .unwrap();
    let soft: usize = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(open_files_limit(), Some(soft));
    assert_eq!(fd_budget(), budget_for_limit(soft));
  }
}
