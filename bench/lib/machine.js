// How busy the machine is apart from the benchmark. On a shared box (CI
// runners, a developer's laptop, another build) someone else's CPU use lands
// in the figures, so the harness waits for quiet before each run and records
// the foreign load during it.

const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');

/** Linux reports /proc/stat in USER_HZ ticks, 100 per second on every mainstream build. */
const TICK_MS = 10;

/** Busy CPU time of the whole machine so far, in ms, or null off Linux. */
function machineBusyMs() {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields;
    return (user + nice + system + irq + softirq + steal) * TICK_MS;
  } catch {
    return null;
  }
}

/** CPU the machine used over `ms` (while this process sleeps), in cores. */
async function sampleLoad(ms) {
  const a = machineBusyMs();
  const t0 = performance.now();
  await sleep(ms);
  const b = machineBusyMs();
  return a == null ? null : (b - a) / (performance.now() - t0);
}

/**
 * Waits until the machine has been nearly idle for one sample, at most
 * `timeoutMs`. Returns how long it waited and the last load seen.
 */
async function waitForQuiet({ maxCores = 0.2, sampleMs = 300, timeoutMs = 120_000 } = {}) {
  const t0 = performance.now();
  for (;;) {
    const load = await sampleLoad(sampleMs);
    const waitedMs = performance.now() - t0;
    if (load == null || load <= maxCores || waitedMs >= timeoutMs)
      return { load, waitedMs, quiet: load == null || load <= maxCores };
  }
}

module.exports = { machineBusyMs, sampleLoad, waitForQuiet };
