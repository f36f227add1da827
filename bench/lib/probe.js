// Figure (c), the sustained rate, shared by both sections (run.js for one
// server, lib/scaleout.js for two instances on one Redis): the broadcasting
// server makes `count` broadcasts on its own timer-driven schedule of `hz`
// per second (`run <hz> <count>`, bench/server.js), and the load generator
// times three of them on every client it holds, whatever instance serves it.
//
// Offered rates lie on a geometric grid, 10 Hz x 1.25^k. A step passes when
// the server kept >= 95 % of the schedule and delivery kept up: after a
// warm-up third of the step, the last broadcast reached every client no
// later, relative to when it was due, than the broadcast that ended the
// warm-up did, give or take 5 % of that span plus jitter (half of one
// broadcast's delivery time (b), at least 25 ms); and the warm-up added at
// most one delivery time (b) to the first broadcast's lag, give or take the
// same. Falling behind grows the lag linearly with the step, so it fails; a
// constant delivery delay does not.

const { setTimeout: sleep } = require('node:timers/promises');
const { diffMs, cpuShare } = require('./common.js');

/** Pause after each probe step so the next starts from a quiet machine. */
const GAP_MS = 20;
const GRID_BASE_HZ = 10;
const GRID_RATIO = 1.25;
const K_MIN = -10; // ~1 Hz
const K_MAX = 27; // ~4100 Hz: setImmediate scheduling gets coarse beyond
const KEEP_UP = 0.95;
const LAG_SLACK_MS = 25;
const MIN_STEP_BROADCASTS = 5;
/**
 * Largest move on the grid between steps (1.25^2 = x1.56). A bigger jump past
 * the capacity would flood the server; the addon's socket writer, for one,
 * disconnects clients whose queue passes 1 MiB, by design.
 */
const MAX_JUMP = 2;
const gridHz = (k) => Math.round(GRID_BASE_HZ * GRID_RATIO ** k * 100) / 100;

/**
 * The probe of one repeat, on connections already open.
 *
 * ctx: {
 *   server        the Child that broadcasts (`run`, `cpu`)
 *   loadgen       the load-generator Child (`cpu`)
 *   n             clients that must get every frame (all instances')
 *   perBroadcast  clients the broadcasting server writes per broadcast
 *   stepMs        about how long a step offers its rate
 *   sent          () => frames sent so far; addSent(count) counts more
 *   arm(...targets), waitDelivered(timeoutMs) -> the load generator's targets
 *   fail(msg), setPhase?(msg)
 *   others?       [{ name, child }]: more processes whose CPU share each step records
 *   describe?     ({ first, marked, last, dueNs }) -> extra fields for the step's record
 * }
 */
function createProbe(ctx) {
  const { server, loadgen, n, perBroadcast } = ctx;
  const others = ctx.others ?? [];
  const fail = (msg) => ctx.fail(msg);
  const cpus = () =>
    Promise.all([loadgen.request('cpu'), server.request('cpu'), ...others.map((o) => o.child.request('cpu'))]);

  /** One step: `hz` offered for about ctx.stepMs. */
  const step = async (hz, latencyMs) => {
    const count = Math.max(MIN_STEP_BROADCASTS, Math.round((hz * ctx.stepMs) / 1000));
    ctx.setPhase?.(`the throughput probe (${count} broadcasts at ${hz}/s)`);
    const [lc0, sc0, ...oc0] = await cpus();
    // The first third of the step is warm-up: a system that batches once it
    // falls behind takes a few broadcasts to settle into it. Delivery is
    // timed for the first broadcast, the one at `mark` and the last.
    const mark = Math.floor(count / 3);
    const t0 = performance.now();
    const sent = ctx.sent();
    await ctx.arm(sent + 1, sent + 1 + mark, sent + count);
    const r = await server.request(`run ${hz} ${count}`, (count / hz) * 20_000 + 60_000);
    ctx.addSent(count);
    const [first, marked, last] = await ctx.waitDelivered(Math.max(30_000, (count / hz) * 5000));
    const wallMs = performance.now() - t0;
    const [lc1, sc1, ...oc1] = await cpus();
    if (r.written !== perBroadcast * count) fail(`run wrote ${r.written} frames, expected ${perBroadcast * count}`);
    const sendSpanMs = diffMs(r.lastNs, r.firstNs);
    const sendHz = sendSpanMs > 0 ? ((count - 1) * 1000) / sendSpanMs : Number.POSITIVE_INFINITY;
    const delivered = [first, marked, last].every((t) => t.atNs && t.reached === n);
    const deliverSpanMs = delivered ? diffMs(last.atNs, first.atNs) : null;
    const deliveredFps = delivered && deliverSpanMs > 0 ? (n * (count - 1) * 1000) / deliverSpanMs : null;
    // Each timed broadcast's delivery lag, against the time the schedule had
    // it due (a late send is lag too). After the warm-up the lag must hold
    // steady: growth from the mark to the last is the backlog of a system
    // that falls behind. The warm-up may add at most one delivery time (b):
    // a batching server's steady lag is up to one batch longer than an idle
    // delivery, and a system that only delivers in a heap at the end fails.
    const dueNs = (i) => BigInt(r.firstNs) + BigInt(Math.round((i * 1e9) / hz));
    const lagFirstMs = delivered ? diffMs(first.atNs, dueNs(0)) : null;
    const lagMarkMs = delivered ? diffMs(marked.atNs, dueNs(mark)) : null;
    const lagLastMs = delivered ? diffMs(last.atNs, dueNs(count - 1)) : null;
    const jitterMs = Math.max(LAG_SLACK_MS, latencyMs / 2);
    const lagGrowthMs = delivered ? lagLastMs - lagMarkMs : null;
    const allowedGrowthMs = ((1 - KEEP_UP) * ((count - 1 - mark) * 1000)) / hz + jitterMs;
    const settleMs = delivered ? lagMarkMs - lagFirstMs : null;
    const allowedSettleMs = latencyMs + ((1 - KEEP_UP) * (mark * 1000)) / hz + jitterMs;
    const pass =
      Boolean(delivered) && sendHz >= KEEP_UP * hz && lagGrowthMs <= allowedGrowthMs && settleMs <= allowedSettleMs;
    await sleep(GAP_MS);
    const record = {
      hz,
      count,
      pass,
      sendHz,
      deliveredFps,
      lagFirstMs,
      lagMarkMs,
      lagLastMs,
      lagGrowthMs,
      allowedGrowthMs,
      settleMs,
      allowedSettleMs,
      serverCpu: cpuShare(sc0, sc1, wallMs),
      loadgenCpu: cpuShare(lc0, lc1, wallMs),
    };
    if (others.length) {
      record.otherCpu = Object.fromEntries(others.map((o, i) => [o.name, cpuShare(oc0[i], oc1[i], wallMs)]));
    }
    if (ctx.describe && delivered) Object.assign(record, ctx.describe({ first, marked, last, dueNs, mark, count }));
    return record;
  };

  /**
   * The highest grid rate that passes: grow the step while passing (or
   * shrink while failing), then bisect between the last pass and first fail.
   * Starts from the previous repeat's answer when `memo` has one under
   * `memoKey`. blockedMs and latencyMs are (a) and (b), or their analogues.
   */
  const probe = async ({ memo, memoKey, blockedMs, latencyMs, maxSteps, maxStepsResumed }) => {
    const previous = memo.get(memoKey);
    // One broadcast per blocked time or per delivery time, whichever is
    // longer (a system that only queues has a tiny blocked time); half of it
    // to start below the answer and climb.
    const estimateHz = 0.5 * (1000 / Math.max(blockedMs, latencyMs ?? 0, 0.05));
    let k =
      previous ??
      Math.min(K_MAX, Math.max(K_MIN, Math.floor(Math.log(estimateHz / GRID_BASE_HZ) / Math.log(GRID_RATIO))));
    let jump = previous === undefined ? 2 : 1;
    const stepLimit = previous === undefined ? maxSteps : maxStepsResumed;
    let pass = -Infinity;
    let failAt = Infinity;
    const steps = [];
    while (new Set(steps.map((x) => x.k)).size < stepLimit) {
      let s = await step(gridHz(k), latencyMs ?? 0);
      if (!s.pass && s.sendHz >= KEEP_UP * s.hz) {
        // On a small machine one scheduling hiccup in a short step can fail
        // a rate the system sustains; a rate fails only when a second try
        // fails too. Both tries are kept in the record.
        steps.push({ k, ...s, retried: true });
        s = await step(gridHz(k), latencyMs ?? 0);
      }
      steps.push({ k, ...s });
      if (s.pass) pass = Math.max(pass, k);
      else failAt = Math.min(failAt, k);
      let next;
      if (failAt === Infinity) next = k + jump;
      else if (pass === -Infinity) next = k - jump;
      else next = Math.floor((pass + failAt) / 2);
      jump = Math.min(2 * jump, MAX_JUMP);
      next = Math.min(K_MAX, Math.max(K_MIN, next));
      if (next <= pass || next >= failAt || steps.some((x) => x.k === next)) break;
      k = next;
    }
    const best = steps.filter((s) => s.pass).sort((a, b) => b.k - a.k)[0] ?? null;
    if (best) memo.set(memoKey, best.k);
    // The step just above the best one shows what limited it.
    const above = steps.filter((s) => !s.pass && (!best || s.k > best.k)).sort((a, b) => a.k - b.k)[0] ?? null;
    const result = {
      maxHz: best?.hz ?? null,
      // Nothing above the best rate failed (the grid's top, or the steps ran
      // out while passing): the real limit is higher.
      unbounded: best !== null && failAt === Infinity,
      deliveredFps: best?.deliveredFps ?? null,
      peakDeliveredFps: Math.max(0, ...steps.map((s) => s.deliveredFps ?? 0)),
      loadgenCpuAbove: above?.loadgenCpu ?? null,
      serverCpuAbove: above?.serverCpu ?? null,
      steps,
    };
    if (others.length) result.otherCpuAbove = above?.otherCpu ?? null;
    return result;
  };

  return { step, probe };
}

module.exports = {
  GAP_MS,
  GRID_BASE_HZ,
  GRID_RATIO,
  K_MAX,
  KEEP_UP,
  LAG_SLACK_MS,
  gridHz,
  createProbe,
};
