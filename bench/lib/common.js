// Small pieces both sections of the harness use (run.js for the
// single-server figures, lib/scaleout.js for the scale-out section): the
// file-descriptor budget of a server, time conversions, the clock check.

const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');

/** File descriptors a child needs besides its sockets (stdio, epoll, V8...). */
const FD_RESERVE = 128;

/**
 * The addon's socket transport keeps a dup() of each socket for its writer
 * thread, and hands a connection over only while the duplicates fit in half
 * the open-files limit after a reserve of 1% (at least 128); this mirrors
 * `fd_budget` in crates/core/src/writer/budget.rs (the addon reports it as
 * `getStats().socketCapacity`).
 */
function socketCapacity(openFiles) {
  return Math.max(0, Math.floor((openFiles - Math.max(128, Math.floor(openFiles / 100))) / 2));
}

/** The open-files limit a server needs so that all `n` connections can be native. */
function serverOpenFiles(n) {
  let openFiles = 2 * n + FD_RESERVE;
  while (socketCapacity(openFiles) < n) openFiles++;
  return openFiles;
}

/** Handshakes the load generator keeps in flight while connecting. */
const CONNECT_CONCURRENCY = 256;

/** The server dropped clients: nothing measured on this run after that counts. */
class ClientsLost extends Error {}

const nsToMs = (ns) => Number(BigInt(ns)) / 1e6;
const diffMs = (a, b) => Number(BigInt(a) - BigInt(b)) / 1e6;

/** Open descriptors of a process, or null off Linux. */
function openFds(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/**
 * Checks that a child's clock reading falls between two of ours: the
 * harness compares send and receive times taken in different processes, which
 * is only sound if they read the same clock.
 */
async function checkClock(child) {
  const before = process.hrtime.bigint();
  const { ns } = await child.request('clock');
  const after = process.hrtime.bigint();
  const t = BigInt(ns);
  return { ok: t >= before && t <= after, child: child.name, windowUs: Number(after - before) / 1000 };
}

async function until(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** CPU time a child used between two `cpu` replies, as a fraction of one core. */
function cpuShare(before, after, wallMs) {
  const us = after.userUs + after.systemUs - before.userUs - before.systemUs;
  return wallMs > 0 ? us / 1000 / wallMs : null;
}

/**
 * CPU a process other than a child has used (nginx, which does not speak the
 * line protocol), in the shape of a child's `cpu` reply: the scheduler's
 * per-thread run time from /proc (ns, not ticks), summed over its threads.
 * Zero off Linux.
 */
function processCpu(pid) {
  let ns = 0;
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    }
  } catch {
    // Gone, or not Linux.
  }
  return { userUs: ns / 1000, systemUs: 0 };
}

module.exports = {
  FD_RESERVE,
  CONNECT_CONCURRENCY,
  ClientsLost,
  socketCapacity,
  serverOpenFiles,
  nsToMs,
  diffMs,
  openFds,
  checkClock,
  until,
  cpuShare,
  processCpu,
};
