// The scale-out section: the same N clients served by two instances (N/2
// each) on one local Redis, against one instance with all N. Every instance
// is a fresh server process (bench/server.js), the clients one load
// generator process (bench/loadgen.js) with a group per instance, and the
// harness starts a throwaway redis-server for every repeat and stops it.
// Broadcasts are always made on instance A; B is "the other instance".
//
// Per repeat, after connecting and a few warm-up broadcasts:
// 1. Idle window: event-loop and CPU use of every process with nothing
//    sent: the idle rates (CPU figures are net of them; loop figures are
//    not, and the report gives the idle loop's busy share beside them).
// 2. Series: K broadcasts on A, each issued once the previous one reached
//    every client of every instance and a short gap passed. Gives the
//    latency from the call on A to the last client on B (p50, p99), the
//    event-loop time B spent per remote broadcast (from B's own
//    performance.eventLoopUtilization(): all its loop's active time over the
//    series, per broadcast), the origin's loop time per broadcast (the same
//    on A, minus the harness's per-command cost on A), B's CPU and Redis's
//    CPU (INFO cpu) per broadcast, both net of their idle rates.
// 3. Closed loop, as figure (f): at most 3 broadcasts outstanding, the next
//    issued when the oldest reached every client of every instance.
// 4. Sustained rate, as figure (c) (lib/probe.js, the main section's probe):
//    A broadcasts at offered rates on its own timer-driven schedule; a rate
//    is sustained when every client of every instance kept up with it.
// 5. Delivery check: every client of every instance has every frame.

const { setTimeout: sleep } = require('node:timers/promises');
const path = require('node:path');
const { Child } = require('./child.js');
const { PAYLOADS } = require('./payloads.js');
const { median, summarize } = require('./stats.js');
const { machineBusyMs } = require('./machine.js');
const { createProbe } = require('./probe.js');
const {
  FD_RESERVE,
  CONNECT_CONCURRENCY,
  serverOpenFiles,
  socketCapacity,
  nsToMs,
  diffMs,
  checkClock,
  until,
  cpuShare,
} = require('./common.js');

const SERVER = path.join(__dirname, '..', 'server.js');
/**
 * V8 flags of every instance. The memory reducer is off: a few seconds after
 * a process goes quiet it runs up to three full GCs of the whole heap
 * (measured here: 80-150 ms of event-loop time, 30-60 ms of it on the main
 * thread, with 4,900 Express connections), whatever the process serves and
 * with no broadcast at all. On it lands in some repeats' series and not in
 * others, and it is not a cost of a broadcast. GCs that allocation triggers
 * (a broadcast's garbage) happen as usual and are counted.
 */
const INSTANCE_NODE_FLAGS = ['--expose-gc', '--no-memory-reducer'];
const LOADGEN = path.join(__dirname, '..', 'loadgen.js');

/** The rows, in report order: the reference, the package on its bus, what users build today. */
const SCALE_OUT_ROWS = [
  { system: 'addon', instances: 1 },
  { system: 'addon-bus', instances: 2 },
  // Another build on its bus, side by side (SSE_BENCH_BASELINE_DIR).
  ...(process.env.SSE_BENCH_BASELINE_DIR ? [{ system: 'addon-bus-before', instances: 2 }] : []),
  { system: 'helper-ioredis', instances: 2 },
];
const SINGLE = 'addon';
const BUS = 'addon-bus';
const JS_REDIS = 'helper-ioredis';

/**
 * stepMs, maxSteps, maxStepsResumed: the (c) probe, with the main section's
 * settings for the same mode (bench/run.js).
 */
const MODES = {
  quick: {
    n: 400,
    repeats: 1,
    warmup: 2,
    seriesCount: 20,
    gapMs: 50,
    idleMs: 300,
    closedMs: 500,
    stepMs: 200,
    maxSteps: 3,
    maxStepsResumed: 3,
  },
  default: {
    n: 9800,
    repeats: null,
    warmup: 3,
    seriesCount: 200,
    gapMs: 50,
    idleMs: 2000,
    closedMs: 2000,
    stepMs: 600,
    maxSteps: 12,
    maxStepsResumed: 3,
  },
};
/** Harness commands (at most) timed on A to learn the per-command loop cost that is subtracted from A's figure. */
const COMMAND_PROBE = 50;
/** (f): broadcasts outstanding at most; the next waits for the oldest to reach every client. */
const IN_FLIGHT = 3;
const MIN_CLOSED_BROADCASTS = 6;
/** The goals of the issue, checked at N = 2 × 4,900, 100 B. */
const GOALS = { remoteLoopMs: 0.2, rateRatio: 5, p99OverSingle: 2 };
const GOAL_N = 9800;

/** Nearest-rank percentile. */
function percentile(values, p) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}

/** Redis's own CPU (main and background threads) so far, in ms, from INFO cpu. */
async function redisCpuMs(redis) {
  const info = await redis.command('INFO', 'cpu');
  const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? Number.NaN);
  return (field('used_cpu_sys') + field('used_cpu_user')) * 1000;
}

/** Redis's per-command counters (INFO commandstats): { xadd: { calls, usec } }. */
async function redisCommandStats(redis) {
  const info = await redis.command('INFO', 'commandstats');
  const stats = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  }
  return stats;
}

/** Calls and µs per broadcast of each command Redis ran between two commandstats. */
function commandsPerBroadcast(before, after, broadcasts) {
  const out = {};
  for (const [name, a] of Object.entries(after)) {
    const b = before[name] ?? { calls: 0, usec: 0 };
    const calls = a.calls - b.calls;
    if (calls > 0) out[name] = { calls: calls / broadcasts, usec: (a.usec - b.usec) / broadcasts };
  }
  return out;
}

/**
 * N for the section: the same N for every row, so the single instance (all
 * N clients in one process) must fit the open-files limit too; even, so it
 * splits in two.
 */
function planScaleOut(requested, limit) {
  const fits = Math.floor(socketCapacity(limit.soft) / 200) * 200;
  const n = Math.min(requested, fits);
  return {
    requested,
    n,
    perInstance: n / 2,
    note:
      n < requested
        ? `the open-files limit (${limit.soft}) lets one instance hold ${fits.toLocaleString('en-US')} native connections, so N = ${requested.toLocaleString('en-US')} ran as ${n.toLocaleString('en-US')}`
        : null,
  };
}

/**
 * One repeat of one row: fresh Redis (for the two-instance rows), fresh
 * instances, a fresh load generator. `memo` carries each row's (c) answer to
 * its next repeat, which starts the probe there.
 */
async function runScaleOutCell(row, rep, plan, sconfig, memo) {
  const { system, instances } = row;
  const { n } = plan;
  const perInstance = n / instances;
  const tag = `scale-out ${system} ${instances}×${perInstance} #${rep + 1}`;
  const log = (msg) => console.error(`[${tag}] ${msg}`);
  const failures = [];
  const fail = (msg) => {
    if (failures.length < 10) failures.push(msg);
    log(`FAIL ${msg}`);
  };
  const cellStart = performance.now();
  const names = instances === 2 ? ['A', 'B'] : ['A'];
  let redis = null;
  const servers = [];
  let loadgen = null;
  let sent = 0;
  try {
    if (instances === 2) {
      // The test helpers' throwaway redis-server: free loopback port, no
      // persistence, SIGKILLed at exit if still running.
      const { startRedis } = require('../../__test__/redis-helpers.js');
      redis = await startRedis();
    }
    for (const name of names) {
      const argv = [process.execPath, ...INSTANCE_NODE_FLAGS, SERVER, system, ...(redis ? [redis.url] : [])];
      servers.push(new Child(`${system}/${name}`, argv, { nofile: serverOpenFiles(perInstance) }));
    }
    loadgen = new Child('loadgen', [process.execPath, LOADGEN], { nofile: n + FD_RESERVE });
    const [A, B = null] = servers;
    const readies = await Promise.all(servers.map((s) => s.ready));
    await loadgen.ready;

    const cpuNow = async () => {
      let ours = (process.cpuUsage().user + process.cpuUsage().system) / 1000;
      for (const child of [...servers, loadgen]) {
        const c = await child.request('cpu');
        ours += (c.userUs + c.systemUs) / 1000;
      }
      if (redis) ours += await redisCpuMs(redis);
      return { machineMs: machineBusyMs(), wallMs: performance.now(), ours };
    };
    const cpuStart = await cpuNow();
    const clocks = [];
    for (const child of [...servers, loadgen]) clocks.push(await checkClock(child));
    for (const c of clocks) if (!c.ok) fail(`${c.child} does not share the harness clock`);

    for (let i = 0; i < servers.length; i++) {
      const conn = await loadgen.request(
        `connect ${readies[i].port} ${perInstance} ${CONNECT_CONCURRENCY} ${names[i]}`,
        300_000,
      );
      if (conn.connected !== perInstance) {
        fail(`${conn.connected}/${perInstance} clients connected to ${names[i]} (${conn.failed} failed)`);
      }
      await until(
        async () => (await servers[i].request('count')).clients >= conn.connected,
        30_000,
        `registration on ${names[i]}`,
      );
    }
    await sleep(200);
    const payload = JSON.stringify(PAYLOADS.small.make());
    for (const s of servers) await s.request(`payload ${payload}`);

    const waitDelivered = async (timeoutMs, what) => {
      const w = await loadgen.request(`wait ${timeoutMs}`, timeoutMs + 10_000);
      for (const t of w.targets) {
        if (t.reached === n) continue;
        const missing = Object.entries(t.groups)
          .filter(([, g]) => g.reached < g.size)
          .map(([name, g]) => `${g.size - g.reached} on ${name}`)
          .join(', ');
        throw new Error(`frame #${t.target} (${what}) did not reach every client within ${timeoutMs} ms: ${missing}`);
      }
      return w.targets;
    };
    /** One broadcast on A, waited for on every client; the load generator's record of it. */
    const once = async (what) => {
      const r = await loadgen.request(`arm ${sent + 1}`);
      if (r.alreadyReached > 0) fail(`armed after delivery of #${sent + 1}`);
      const b = await A.request('bcast');
      sent++;
      if (b.written !== perInstance) fail(`${what}: A's broadcast targeted ${b.written}, expected ${perInstance}`);
      const [t] = await waitDelivered(30_000, what);
      return { b, t };
    };
    const loops = () => Promise.all(servers.map((s) => s.request('loop')));
    const loopDelta = (before, after) =>
      before.map((b, i) => ({
        activeMs: after[i].activeMs - b.activeMs,
        wallMs: after[i].activeMs + after[i].idleMs - b.activeMs - b.idleMs,
        cpuMs: (after[i].userUs + after[i].systemUs - b.userUs - b.systemUs) / 1000,
        mainCpuMs: b.mainThreadNs == null ? null : (after[i].mainThreadNs - b.mainThreadNs) / 1e6,
        gcMs: after[i].gcMs - b.gcMs,
        gcCount: after[i].gcCount - b.gcCount,
      }));

    for (let i = 0; i < sconfig.warmup; i++) {
      await once('warm-up');
      await sleep(sconfig.gapMs);
    }

    // 1. Idle window: each process's loop and CPU, and Redis's CPU, with nothing sent.
    const idle0 = await loops();
    const redisIdle0 = redis ? await redisCpuMs(redis) : null;
    await sleep(sconfig.idleMs);
    const idle1 = await loops();
    const redisIdle1 = redis ? await redisCpuMs(redis) : null;
    const idle = loopDelta(idle0, idle1);
    const idleWallMs = idle[0].wallMs;
    const redisIdleRate = redis ? (redisIdle1 - redisIdle0) / idleWallMs : null;

    // What one harness command costs A's loop at the series' pace (the
    // series sends A one `bcast` per broadcast). Paced, not back to back: a
    // loop woken from idle takes several times longer over the same work.
    const probeCount = Math.min(COMMAND_PROBE, sconfig.seriesCount);
    const c0 = await A.request('loop');
    for (let i = 0; i < probeCount; i++) {
      await A.request('clock');
      await sleep(sconfig.gapMs);
    }
    const c1 = await A.request('loop');
    const [commandProbe] = loopDelta([c0], [c1]);
    const commandMs = commandProbe.activeMs / probeCount;
    const commandMainCpuMs = commandProbe.mainCpuMs == null ? null : commandProbe.mainCpuMs / probeCount;

    // 2. The series.
    const series = [];
    const s0 = await loops();
    const redisS0 = redis ? await redisCpuMs(redis) : null;
    const commandsS0 = redis ? await redisCommandStats(redis) : null;
    const seriesT0 = performance.now();
    for (let i = 0; i < sconfig.seriesCount; i++) {
      const { b, t } = await once('the latency series');
      const at = (name) => (t.groups[name]?.atNs ? diffMs(t.groups[name].atNs, b.startNs) : null);
      series.push({
        toAllMs: t.atNs ? diffMs(t.atNs, b.startNs) : null,
        toAMs: at('A'),
        toBMs: at('B'),
        blockedMs: nsToMs(b.blockedNs),
      });
      await sleep(sconfig.gapMs);
    }
    const seriesWallMs = performance.now() - seriesT0;
    const s1 = await loops();
    const redisS1 = redis ? await redisCpuMs(redis) : null;
    const commandsS1 = redis ? await redisCommandStats(redis) : null;
    const seriesLoops = loopDelta(s0, s1);
    const K = sconfig.seriesCount;
    // Loop figures are gross: everything the loop did during the series,
    // per broadcast (an upper bound: idle work such as timers is in it), on A
    // minus the harness's command per broadcast. The idle-rate-net values
    // are kept too; they can come out slightly negative from noise.
    const loopMs = (i, perBroadcast = 0) => seriesLoops[i].activeMs / K - perBroadcast;
    const netLoopMs = (i, perBroadcast = 0) =>
      loopMs(i, perBroadcast) - ((idle[i].activeMs / idle[i].wallMs) * seriesLoops[i].wallMs) / K;
    const netCpuMs = (i) => (seriesLoops[i].cpuMs - (idle[i].cpuMs / idle[i].wallMs) * seriesLoops[i].wallMs) / K;
    const lastClient = series.map((s) => (B ? s.toBMs : s.toAllMs));
    const result = {
      series: {
        count: K,
        gapMs: sconfig.gapMs,
        wallMs: seriesWallMs,
        p50Ms: percentile(lastClient, 50),
        p99Ms: percentile(lastClient, 99),
        maxMs: percentile(lastClient, 100),
        toAllP50Ms: percentile(
          series.map((s) => s.toAllMs),
          50,
        ),
        toAllP99Ms: percentile(
          series.map((s) => s.toAllMs),
          99,
        ),
        toAP50Ms: percentile(
          series.map((s) => s.toAMs),
          50,
        ),
        originBlockedMs: median(series.map((s) => s.blockedMs)),
        originLoopMs: loopMs(0, commandMs),
        originLoopNetMs: netLoopMs(0, commandMs),
        originCpuMs: netCpuMs(0),
        commandMs,
        remoteLoopMs: B ? loopMs(1) : null,
        remoteLoopNetMs: B ? netLoopMs(1) : null,
        remoteCpuMs: B ? netCpuMs(1) : null,
        // The JS thread's own CPU per broadcast (no waiting for a core in it).
        remoteMainCpuMs: B && seriesLoops[1].mainCpuMs != null ? seriesLoops[1].mainCpuMs / K : null,
        // GC pauses (as perf_hooks reports them) in those loop times.
        remoteGcMs: B ? seriesLoops[1].gcMs / K : null,
        originGcMs: seriesLoops[0].gcMs / K,
        loops: seriesLoops,
        originMainCpuMs:
          seriesLoops[0].mainCpuMs != null && commandMainCpuMs != null
            ? seriesLoops[0].mainCpuMs / K - commandMainCpuMs
            : null,
        redisCpuMs: redis ? (redisS1 - redisS0 - redisIdleRate * seriesWallMs) / K : null,
        redisCpuRawMs: redis ? (redisS1 - redisS0) / K : null,
        // What Redis ran per broadcast (the INFO calls themselves included).
        redisCommands: redis ? commandsPerBroadcast(commandsS0, commandsS1, K) : null,
        samples: series,
      },
      idle: {
        wallMs: idleWallMs,
        loops: idle,
        loopBusy: idle.map((d) => d.activeMs / d.wallMs),
        redisCpuMsPerS: redis ? redisIdleRate * 1000 : null,
        commandMs,
        commandMainCpuMs,
        commandProbe: probeCount,
      },
    };

    // 3. Closed loop, as (f).
    const cl0 = await loops();
    const lc0 = await loadgen.request('cpu');
    const redisC0 = redis ? await redisCpuMs(redis) : null;
    const t0 = performance.now();
    const issued = [];
    let done = 0;
    let firstStartNs = null;
    let lastAtNs = null;
    const waitOldest = async () => {
      const r = await loadgen.request(`arm ${issued[done]}`);
      const [t] = await waitDelivered(30_000, 'the closed loop');
      lastAtNs = t.atNs ?? null;
      if (r.alreadyReached > 0 && !lastAtNs) fail(`closed loop: no time for broadcast #${issued[done]}`);
      done++;
    };
    while (performance.now() - t0 < sconfig.closedMs || issued.length < MIN_CLOSED_BROADCASTS) {
      if (issued.length - done >= IN_FLIGHT) await waitOldest();
      const b = await A.request('bcast');
      sent++;
      issued.push(sent);
      firstStartNs ??= b.startNs;
      if (b.written !== perInstance) fail(`closed loop: A's broadcast targeted ${b.written}, expected ${perInstance}`);
    }
    while (done < issued.length) await waitOldest();
    const closedWallMs = performance.now() - t0;
    const cl1 = await loops();
    const lc1 = await loadgen.request('cpu');
    const redisC1 = redis ? await redisCpuMs(redis) : null;
    const spanMs = lastAtNs && firstStartNs ? diffMs(lastAtNs, firstStartNs) : null;
    const closedLoops = loopDelta(cl0, cl1);
    result.closed = {
      broadcasts: issued.length,
      hz: spanMs > 0 ? (issued.length * 1000) / spanMs : null,
      cpu: {
        A: closedLoops[0].cpuMs / closedWallMs,
        B: B ? closedLoops[1].cpuMs / closedWallMs : null,
        loadgen: cpuShare(lc0, lc1, closedWallMs),
        redis: redis ? (redisC1 - redisC0) / closedWallMs : null,
      },
      remoteLoopMs: B ? closedLoops[1].activeMs / issued.length : null,
      redisCpuMs: redis ? (redisC1 - redisC0 - redisIdleRate * closedWallMs) / issued.length : null,
    };
    // 4. Sustained rate, as (c): A broadcasts at offered rates on its own
    // schedule (`run`); every client of every instance is timed. Starts at
    // half the rate the series suggests: A's blocked time or the delivery
    // to the last client of every instance, whichever is longer.
    const { probe } = createProbe({
      server: A,
      loadgen,
      n,
      perBroadcast: perInstance,
      stepMs: sconfig.stepMs,
      sent: () => sent,
      addSent: (count) => {
        sent += count;
      },
      arm: async (...targets) => {
        const r = await loadgen.request(`arm ${targets.join(' ')}`);
        if (r.alreadyReached > 0) fail(`(c): armed after delivery of ${targets}`);
      },
      waitDelivered: (timeoutMs) => waitDelivered(timeoutMs, 'the sustained-rate probe (c)'),
      fail: (msg) => fail(`(c) on A: ${msg}`),
      others: B ? [{ name: 'B', child: B }] : [],
      // The last broadcast's lag on each instance's last client: who fell behind.
      describe: ({ last, dueNs, count }) => ({
        lagLastByInstanceMs: Object.fromEntries(
          names.map((name) => {
            const at = last.groups[name]?.atNs;
            return [name, at ? diffMs(at, dueNs(count - 1)) : null];
          }),
        ),
      }),
    });
    result.probe = await probe({
      memo,
      memoKey: `${system}/${instances}/${n}`,
      blockedMs: result.series.originBlockedMs,
      latencyMs: result.series.toAllP50Ms,
      maxSteps: sconfig.maxSteps,
      maxStepsResumed: sconfig.maxStepsResumed,
    });

    log(
      `last client${B ? ' on B' : ''} p50 ${result.series.p50Ms?.toFixed(2)} ms, p99 ${result.series.p99Ms?.toFixed(2)} ms; ` +
        `loop per broadcast: origin ${result.series.originLoopMs.toFixed(3)} ms` +
        (B ? `, remote (B) ${result.series.remoteLoopMs.toFixed(3)} ms` : '') +
        `; closed loop ${result.closed.hz?.toFixed(1)} bcast/s` +
        `; sustained ${result.probe.unbounded ? '≥' : ''}${result.probe.maxHz ?? '-'} bcast/s (${result.probe.steps.length} steps)` +
        (redis ? `; Redis ${result.series.redisCpuMs.toFixed(3)} ms/bcast` : ''),
    );

    // 5. Every client of every instance has every frame, no more, no less.
    const stats = await loadgen.request('stats');
    for (const name of names) {
      const g = stats.groups[name];
      if (!g || g.clients !== perInstance || g.minEvents !== sent || g.maxEvents !== sent) {
        fail(
          `delivery on ${name}: ${g?.clients ?? 0}/${perInstance} clients got ${g?.minEvents}..${g?.maxEvents} of ${sent} frames`,
        );
      }
    }
    if (stats.closedAfterConnect || stats.protocolErrors) {
      fail(`${stats.closedAfterConnect} connections closed early, ${stats.protocolErrors} protocol errors`);
    }
    const sentBy = [];
    for (const s of servers) sentBy.push((await s.request('sent')).sent);
    if (sentBy[0] !== sent) fail(`A made ${sentBy[0]} broadcasts, harness counted ${sent}`);
    if (B && sentBy[1] !== 0) fail(`B made ${sentBy[1]} broadcasts, expected none`);
    const info = [];
    for (const s of servers) info.push(await s.request('info'));
    for (let i = 0; i < servers.length; i++) {
      const bus = info[i].stats?.bus;
      if (bus && bus.localFallbacks > 0) {
        fail(`${names[i]} delivered ${bus.localFallbacks} broadcasts locally (bus not connected)`);
      }
      const r = info[i].redis;
      if (r && (r.received !== sent || r.publishErrors > 0)) {
        fail(`${names[i]} received ${r.received} of ${sent} messages from Redis (${r.publishErrors} publish errors)`);
      }
    }
    const cpuEnd = await cpuNow();
    return {
      system,
      instances,
      n,
      perInstance,
      rep,
      clocks,
      ...result,
      delivery: { broadcasts: sent, ...stats },
      info: Object.fromEntries(names.map((name, i) => [name, info[i]])),
      foreignLoadCores:
        cpuStart.machineMs == null
          ? null
          : (cpuEnd.machineMs - cpuStart.machineMs - (cpuEnd.ours - cpuStart.ours)) / (cpuEnd.wallMs - cpuStart.wallMs),
      failures,
      wallMs: performance.now() - cellStart,
    };
  } finally {
    for (const s of servers) await s.close();
    await loadgen?.close();
    await redis?.stop();
  }
}

/** Medians over the repeats per row, and the goals. */
function aggregateScaleOut(cells, sconfig) {
  const rows = SCALE_OUT_ROWS.map(({ system, instances }) => {
    const mine = cells.filter(
      (c) => c.system === system && c.instances === instances && !c.error && !c.failures?.length,
    );
    const s = (f) => summarize(mine.map(f));
    const maxHz = s((c) => c.probe?.maxHz);
    return {
      system,
      instances,
      perInstance: sconfig.n / instances,
      runs: mine.length,
      // (c): the highest offered rate sustained; "capped" when the repeat the
      // median comes from found no failing rate above it (the limit is higher).
      maxHz,
      cappedHz: mine.some((c) => c.probe?.unbounded && c.probe.maxHz === maxHz?.median),
      deliveredFps: s((c) => c.probe?.deliveredFps),
      // CPU shares at the first failing rate: what may have limited it.
      cpuAbove: {
        A: median(mine.map((c) => c.probe?.serverCpuAbove)),
        B: median(mine.map((c) => c.probe?.otherCpuAbove?.B)),
        loadgen: median(mine.map((c) => c.probe?.loadgenCpuAbove)),
      },
      closedHz: s((c) => c.closed.hz),
      p50Ms: s((c) => c.series.p50Ms),
      p99Ms: s((c) => c.series.p99Ms),
      remoteLoopMs: instances === 2 ? s((c) => c.series.remoteLoopMs) : null,
      remoteCpuMs: instances === 2 ? s((c) => c.series.remoteCpuMs) : null,
      originLoopMs: s((c) => c.series.originLoopMs),
      idleLoopBusy: median(mine.flatMap((c) => c.idle.loopBusy)),
      remoteMainCpuMs: instances === 2 ? s((c) => c.series.remoteMainCpuMs) : null,
      originMainCpuMs: s((c) => c.series.originMainCpuMs),
      commandMs: median(mine.map((c) => c.idle.commandMs)),
      originBlockedMs: s((c) => c.series.originBlockedMs),
      redisCpuMs: instances === 2 ? s((c) => c.series.redisCpuMs) : null,
      redisCpuClosedMs: instances === 2 ? s((c) => c.closed.redisCpuMs) : null,
      closedCpu: {
        A: median(mine.map((c) => c.closed.cpu.A)),
        B: median(mine.map((c) => c.closed.cpu.B)),
        loadgen: median(mine.map((c) => c.closed.cpu.loadgen)),
        redis: median(mine.map((c) => c.closed.cpu.redis)),
      },
    };
  });
  const row = (system) => rows.find((r) => r.system === system);
  const bus = row(BUS);
  const js = row(JS_REDIS);
  const single = row(SINGLE);
  const m = (x) => x?.median ?? null;
  const goal = (text, measured, limit, met) => ({ text, measured, limit, met: met == null ? null : Boolean(met) });
  // The "sustained rate" is (c). A "≥" rate (nothing above it
  // failed) makes the ratio a bound: a lower one for addon-bus, an upper one
  // for helper-ioredis; a verdict only when the bound settles it.
  const rateRatio = m(bus?.maxHz) != null && m(js?.maxHz) ? m(bus.maxHz) / m(js.maxHz) : null;
  const rateBound = bus?.cappedHz && js?.cappedHz ? '?' : bus?.cappedHz ? '≥' : js?.cappedHz ? '≤' : '';
  let rateMet = null;
  if (rateRatio != null && rateBound !== '?') {
    if (rateRatio >= GOALS.rateRatio) rateMet = js.cappedHz ? null : true;
    else rateMet = bus.cappedHz ? null : false;
  }
  // (f) for comparison: the closed loop gives no credit to batching.
  const closedRatio = m(bus?.closedHz) != null && m(js?.closedHz) ? m(bus.closedHz) / m(js.closedHz) : null;
  const p99Limit = m(single?.p50Ms) != null ? GOALS.p99OverSingle * m(single.p50Ms) : null;
  const goals = {
    atGoalN: sconfig.n === GOAL_N,
    remoteLoop: goal(
      `event loop blocked per remote broadcast on the other instance (${BUS}, B) ≤ ${GOALS.remoteLoopMs} ms`,
      m(bus?.remoteLoopMs),
      GOALS.remoteLoopMs,
      m(bus?.remoteLoopMs) == null ? null : m(bus.remoteLoopMs) <= GOALS.remoteLoopMs,
    ),
    rate: {
      ...goal(
        `sustained broadcasts/s to every client, (c) ${BUS} ≥ ${GOALS.rateRatio}× ${JS_REDIS}`,
        rateRatio,
        GOALS.rateRatio,
        rateMet,
      ),
      bound: rateBound,
      closedRatio,
    },
    latency: goal(
      `p99 latency to the last client on B (${BUS}) ≤ ${GOALS.p99OverSingle}× the single-instance delivery time (p50 of ${SINGLE} with all N)`,
      m(bus?.p99Ms),
      p99Limit,
      m(bus?.p99Ms) == null || p99Limit == null ? null : m(bus.p99Ms) <= p99Limit,
    ),
  };
  return { rows, goals };
}

module.exports = {
  SCALE_OUT_ROWS,
  SCALE_OUT_MODES: MODES,
  SCALE_OUT_GOALS: GOALS,
  SCALE_OUT_GOAL_N: GOAL_N,
  SCALE_OUT_IN_FLIGHT: IN_FLIGHT,
  SCALE_OUT_COMMAND_PROBE: COMMAND_PROBE,
  planScaleOut,
  runScaleOutCell,
  aggregateScaleOut,
};
