//! The benchmark's floor: what one thread can do when it writes one
//! pre-framed SSE chunk to N loopback sockets with plain blocking `write()`
//! calls, with no event loop, no JavaScript and no per-client bookkeeping
//! beyond a `Vec` of sockets. With `--threads T` (T > 1) each broadcast
//! splits the sockets into T equal runs written by T threads at once: the
//! floor for a sharded writer.
//!
//! It is driven exactly like the Node servers in `bench/server.js`: one
//! command per stdin line, one JSON reply per stdout line (see that file for
//! the protocol). Times are CLOCK_MONOTONIC nanoseconds, the same clock as
//! Node's `process.hrtime.bigint()`, so the load generator's receive times
//! can be compared with this process's send times.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The headers `initResponse(res)` sends (lib/response.js), plus chunked
/// encoding as Node uses for a response without a length.
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Cache-Control: no-cache, no-transform\r\n\
Connection: keep-alive\r\n\
X-Accel-Buffering: no\r\n\
Transfer-Encoding: chunked\r\n\r\n";

#[repr(C)]
struct Timespec {
  tv_sec: i64,
  tv_nsec: i64,
}

extern "C" {
  // From the C library std already links; declared here to stay std-only.
  fn clock_gettime(clock_id: i32, tp: *mut Timespec) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;

/// CLOCK_MONOTONIC in nanoseconds. `Instant` reads the same clock but hides
/// the value, and the harness needs the value to compare across processes.
fn mono_ns() -> u64 {
  let mut ts = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
  };
  // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
  let rc = unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
  assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
  ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

type Clients = Arc<Mutex<Vec<TcpStream>>>;

fn main() {
  let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
  let port = listener.local_addr().expect("local_addr").port();
  let clients: Clients = Arc::new(Mutex::new(Vec::new()));

  // Connection setup runs beside the command loop so the harness can poll
  // `count`; broadcasts themselves only ever run on the main thread.
  let accepted = clients.clone();
  thread::spawn(move || accept_loop(listener, accepted));

  reply(&format!(
    "{{\"event\":\"ready\",\"port\":{port},\"pid\":{},\"nofile\":{}}}",
    std::process::id(),
    open_files_limit()
  ));

  let threads = thread_count();
  let mut chunk: Vec<u8> = frame_chunk("null");
  let mut sent: u64 = 0;
  for line in io::stdin().lock().lines() {
    let Ok(line) = line else { break };
    let line = line.trim_end();
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
      "clock" => reply(&format!("{{\"ns\":\"{}\"}}", mono_ns())),
      "count" => reply(&format!(
        "{{\"clients\":{}}}",
        clients.lock().unwrap().len()
      )),
      "sent" => reply(&format!("{{\"sent\":{sent}}}")),
      "mem" => reply(&format!("{{\"rss\":{},\"heapUsed\":null}}", rss_bytes())),
      "cpu" => {
        let (user, system) = cpu_us();
        reply(&format!("{{\"userUs\":{user},\"systemUs\":{system}}}"));
      }
      "payload" => {
        chunk = frame_chunk(rest);
        reply(&format!("{{\"bytes\":{}}}", rest.len()));
      }
      "bcast" => {
        let start = mono_ns();
        let written = broadcast(&clients, &chunk, threads);
        let end = mono_ns();
        sent += 1;
        // Nothing is deferred here: the write loop is the whole cost.
        reply(&format!(
          "{{\"startNs\":\"{start}\",\"syncNs\":\"{d}\",\"blockedNs\":\"{d}\",\"written\":{written}}}",
          d = end - start
        ));
      }
      "run" => {
        let mut args = rest.split(' ').map(|a| a.parse::<f64>().unwrap_or(0.0));
        let hz = args.next().unwrap_or(0.0);
        let count = args.next().unwrap_or(0.0) as u64;
        if hz <= 0.0 || count == 0 {
          reply("{\"error\":\"usage: run <hz> <count>\"}");
          continue;
        }
        let period = 1e9 / hz;
        let t0 = mono_ns();
        let (mut first, mut last, mut written) = (0u64, 0u64, 0u64);
        for i in 0..count {
          let due = t0 + (i as f64 * period) as u64;
          let now = mono_ns();
          if due > now {
            thread::sleep(Duration::from_nanos(due - now));
          }
          let start = mono_ns();
          if i == 0 {
            first = start;
          }
          last = start;
          written += broadcast(&clients, &chunk, threads) as u64;
          sent += 1;
        }
        reply(&format!(
          "{{\"count\":{count},\"firstNs\":\"{first}\",\"lastNs\":\"{last}\",\"written\":{written}}}"
        ));
      }
      // No event loop, so no event-loop delay to report.
      "eld" => reply("{\"unsupported\":true}"),
      "exit" => {
        reply("{\"ok\":true}");
        break;
      }
      _ => reply(&format!("{{\"error\":\"unknown command {cmd:?}\"}}")),
    }
  }
}

/// `data: <json>\n\n` wrapped as one HTTP chunk: `<hex len>\r\n<frame>\r\n`.
fn frame_chunk(json: &str) -> Vec<u8> {
  let frame = format!("data: {json}\n\n");
  let mut chunk = format!("{:x}\r\n", frame.len()).into_bytes();
  chunk.extend_from_slice(frame.as_bytes());
  chunk.extend_from_slice(b"\r\n");
  chunk
}

/// `--threads T` on the command line; 1 without it.
fn thread_count() -> usize {
  let args: Vec<String> = std::env::args().collect();
  args
    .iter()
    .position(|a| a == "--threads")
    .and_then(|i| args.get(i + 1))
    .and_then(|t| t.parse().ok())
    .unwrap_or(1usize)
    .max(1)
}

/// One `write_all` per socket, in order: on this thread, or split into
/// `threads` equal runs written at once. A socket whose write fails (the
/// peer left) is dropped. Returns how many were written.
fn broadcast(clients: &Clients, chunk: &[u8], threads: usize) -> usize {
  let mut clients = clients.lock().unwrap();
  if threads <= 1 || clients.len() < threads {
    clients.retain_mut(|s| s.write_all(chunk).is_ok());
    return clients.len();
  }
  let per = clients.len().div_ceil(threads);
  let failed: Vec<Vec<usize>> = thread::scope(|scope| {
    let runs: Vec<_> = clients
      .chunks_mut(per)
      .enumerate()
      .map(|(run, sockets)| {
        scope.spawn(move || {
          let mut failed = Vec::new();
          for (i, s) in sockets.iter_mut().enumerate() {
            if s.write_all(chunk).is_err() {
              failed.push(run * per + i);
            }
          }
          failed
        })
      })
      .collect();
    runs.into_iter().map(|r| r.join().unwrap_or_default()).collect()
  });
  let failed: std::collections::HashSet<usize> = failed.into_iter().flatten().collect();
  if !failed.is_empty() {
    let mut i = 0;
    clients.retain(|_| {
      let keep = !failed.contains(&i);
      i += 1;
      keep
    });
  }
  clients.len()
}

fn accept_loop(listener: TcpListener, clients: Clients) {
  for stream in listener.incoming() {
    let Ok(mut stream) = stream else { continue };
    if handshake(&mut stream).is_ok() {
      clients.lock().unwrap().push(stream);
    }
  }
}

/// Reads the request head (the load generator sends a bare GET) and answers
/// with the SSE response head.
fn handshake(stream: &mut TcpStream) -> io::Result<()> {
  stream.set_nodelay(true)?;
  stream.set_read_timeout(Some(Duration::from_secs(10)))?;
  let mut head = Vec::with_capacity(256);
  let mut buf = [0u8; 1024];
  while !head.windows(4).any(|w| w == b"\r\n\r\n") {
    let n = stream.read(&mut buf)?;
    if n == 0 || head.len() > 16 * 1024 {
      return Err(io::ErrorKind::InvalidData.into());
    }
    head.extend_from_slice(&buf[..n]);
  }
  stream.write_all(RESPONSE_HEAD)
}

fn reply(line: &str) {
  let mut out = io::stdout().lock();
  // The harness is gone if this fails; nothing useful is left to do.
  let _ = writeln!(out, "{line}");
  let _ = out.flush();
}

fn rss_bytes() -> u64 {
  proc_field("/proc/self/status", "VmRSS:").map_or(0, |kb| kb * 1024)
}

/// User and system CPU time of this process in microseconds, from
/// /proc/self/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_us() -> (u64, u64) {
  let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
  // The command name (field 2) may contain spaces; fields resume after ')'.
  let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
  let mut fields = after.split_whitespace().skip(11);
  let mut next = || {
    fields
      .next()
      .and_then(|f| f.parse::<u64>().ok())
      .unwrap_or(0)
      * 10_000
  };
  (next(), next())
}

fn open_files_limit() -> u64 {
  proc_field("/proc/self/limits", "Max open files").unwrap_or(0)
}

/// The first number after `prefix` on the line that starts with it.
fn proc_field(path: &str, prefix: &str) -> Option<u64> {
  let text = std::fs::read_to_string(path).ok()?;
  let line = text.lines().find(|l| l.starts_with(prefix))?;
  line[prefix.len()..].split_whitespace().next()?.parse().ok()
}
