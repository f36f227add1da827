#!/usr/bin/env node
// Benchmark harness: each system in its own server process, the load
// generator in another, both on 127.0.0.1 with real sockets. See README.md.
//
//   node bench/run.js            N = 1k, 10k; 100 B and 4 KB; 5 repeats (the rows behind
//                                nginx included); then the scale-out section (N = 2 x 4,900
//                                on one Redis, 100 B)
//   node bench/run.js --quick    CI smoke test: N = 1k, 100 B, 2 repeats (of the rows behind
//                                nginx, addon-nginx only); scale-out at N = 2 x 200, 1 repeat;
//                                asserts delivery
//   node bench/run.js --full     adds N = 20k
//   options: --n 1000,5000  --repeats 3  --systems addon,limit  --payloads small,large
//            --out NAME (writes bench/results/NAME.* instead of latest.*)
//            --scaleout (only the scale-out section)  --no-scaleout (without it)
//            --scaleout-n 9800 (its total N: two instances of N/2, one of N)
//            --nginx (only the rows behind nginx and the direct rows they compare with;
//            no scale-out)  --no-nginx (without the rows behind nginx)
//            --note TEXT (a line for the report, e.g. what else loaded the machine)
//   node bench/run.js --rerender bench/results/latest.json   rebuild .md/.svg from saved runs
//   node bench/run.js --reader [--quick]   only the bus reader's throughput (bench/reader.js,
//                                          bench/results/reader.{md,json})
//
// Writes bench/results/latest.{md,json,svg} (quick.* with --quick).

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { setTimeout: sleep } = require('node:timers/promises');
const { SYSTEMS, BASELINE, LIMIT, NGINX_BASELINE, findSystem } = require('./systems/index.js');
const { NGINX, startNginx } = require('../__test__/nginx.js');
const { Child, probeOpenFiles } = require('./lib/child.js');
const { PAYLOADS } = require('./lib/payloads.js');
const { median, summarize } = require('./lib/stats.js');
const { writeReport } = require('./lib/report.js');
const { machineBusyMs, waitForQuiet } = require('./lib/machine.js');
const {
  GAP_MS,
  GRID_BASE_HZ,
  GRID_RATIO,
  K_MAX,
  KEEP_UP,
  LAG_SLACK_MS,
  gridHz,
  createProbe,
} = require('./lib/probe.js');
const {
  SCALE_OUT_MODES,
  SCALE_OUT_ROWS,
  SCALE_OUT_GOALS,
  SCALE_OUT_GOAL_N,
  SCALE_OUT_IN_FLIGHT,
  SCALE_OUT_COMMAND_PROBE,
  planScaleOut,
  runScaleOutCell,
  aggregateScaleOut,
} = require('./lib/scaleout.js');
const {
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
} = require('./lib/common.js');

const MODES = {
  quick: {
    ns: [1000],
    payloads: ['small'],
    repeats: 2,
    warmup: 1,
    shots: 2,
    // Two (d) phases (10/s and 100/s) of this length each.
    eldMs: 500,
    stepMs: 200,
    // (f) closed loop: how long it broadcasts.
    closedMs: 500,
    maxSteps: 3,
    maxStepsResumed: 3,
    // CI must finish in a minute: do not wait long for a busy runner.
    quietTimeoutMs: 2000,
    // The one row behind nginx runs once: a few seconds more.
    nginxRepeats: 1,
  },
  default: {
    ns: [1000, 10000],
    payloads: ['small', 'large'],
    repeats: 5,
    warmup: 1,
    shots: 5,
    eldMs: 1500,
    stepMs: 600,
    closedMs: 2000,
    // The first repeat searches from an estimate (up to ×1.56 per step, so
    // 12 steps span ×200 from it); later ones resume from the previous
    // answer and need fewer steps.
    maxSteps: 12,
    maxStepsResumed: 3,
    quietTimeoutMs: 120_000,
  },
};

const SERVER = path.join(__dirname, 'server.js');
const LOADGEN = path.join(__dirname, 'loadgen.js');

/**
 * Silence before each broadcast measured for (a) and (b). Linux ACKs every
 * segment for a while on a new connection and again after it was idle for
 * longer than the retransmission timeout (>= 200 ms), which makes a
 * broadcast measurably slower. Without this pause a connection's state
 * would depend on how slow the previous broadcast was (fast systems keep
 * them busy, slow ones let them go idle), and the first payload measured
 * would pay for fresh connections. With it every measured broadcast meets
 * idle connections, the common case for SSE.
 */
const IDLE_BEFORE_SHOT_MS = 300;
/**
 * (d) Broadcast rates for the event-loop delay: the usual 10/s, and 100/s,
 * where a slow system cannot keep up and simply shows a large delay. Around
 * the 100/s phase the server's RSS is taken too, to show it stays bounded.
 */
const ELD_HZ = 10;
const ELD_FAST_HZ = 100;

// (c) Throughput probe: see lib/probe.js (the grid, the pass rule, the search).
/** Foreign CPU use (in cores) above which a run is flagged as disturbed. */
const FOREIGN_LOAD_WARN = 0.25;
/** (f): broadcasts outstanding at most; the next waits for the oldest to reach every client. */
const CLOSED_LOOP_IN_FLIGHT = 3;
const CLOSED_LOOP_MIN_BROADCASTS = 6;

function parseArgs(argv) {
  const opts = { quick: false, full: false };
  const list = (v) => v.split(',').filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--quick') opts.quick = true;
    else if (arg === '--full') opts.full = true;
    else if (arg === '--n') opts.ns = list(value()).map(Number);
    else if (arg === '--repeats') opts.repeats = Number(value());
    else if (arg === '--systems') opts.systems = list(value());
    else if (arg === '--payloads') opts.payloads = list(value());
    else if (arg === '--rerender') opts.rerender = value();
    else if (arg === '--out') opts.out = value();
    else if (arg === '--scaleout') opts.scaleOut = 'only';
    else if (arg === '--no-scaleout') opts.scaleOut = 'skip';
    else if (arg === '--scaleout-n') opts.scaleOutN = Number(value());
    else if (arg === '--nginx') opts.nginx = 'only';
    else if (arg === '--no-nginx') opts.nginx = 'skip';
    else if (arg === '--note') opts.note = value();
    else if (arg === '--help' || arg === '-h') {
      // The header comment is the usage text.
      const lines = fs.readFileSync(__filename, 'utf8').split('\n').slice(1);
      console.log(
        lines
          .slice(
            0,
            lines.findIndex((l) => !l.startsWith('//')),
          )
          .map((l) => l.replace(/^\/\/ ?/, ''))
          .join('\n'),
      );
      process.exit(0);
    } else throw new Error(`unknown option ${arg} (see --help)`);
  }
  if (opts.rerender) return { rerender: opts.rerender };
  const mode = opts.quick ? 'quick' : 'default';
  const config = { ...MODES[mode], mode: opts.quick ? 'quick' : opts.full ? 'full' : 'default' };
  if (opts.full) config.ns = [...config.ns, 20000];
  if (opts.ns) config.ns = opts.ns;
  if (opts.repeats) config.repeats = opts.repeats;
  if (opts.note) config.note = opts.note;
  config.nginxRepeats = Math.min(config.repeats, config.nginxRepeats ?? config.repeats);
  if (opts.payloads) config.payloads = opts.payloads;
  if (opts.out) {
    if (!/^[\w.-]+$/.test(opts.out)) throw new Error(`--out takes a file name, got ${opts.out}`);
    config.out = opts.out;
  }
  for (const p of config.payloads) if (!PAYLOADS[p]) throw new Error(`unknown payload ${p}; known: small, large`);
  for (const n of config.ns) if (!(Number.isInteger(n) && n > 0)) throw new Error(`bad N ${n}`);
  if (opts.nginx && opts.systems) throw new Error(`--${opts.nginx === 'only' ? '' : 'no-'}nginx with --systems`);
  if (opts.nginx === 'only' && opts.scaleOut) throw new Error('--nginx runs no scale-out section');
  // The default rows; --quick keeps one of those behind nginx (a few seconds more).
  const defaults = SYSTEMS.filter((s) => !s.onlyWhenNamed && !s.scaleOut && (!opts.quick || !s.via || s.quick));
  const proxied = defaults.filter((s) => s.via);
  const named =
    opts.systems ??
    (opts.nginx === 'only'
      ? [...new Set([...proxied.map((s) => s.direct), ...proxied.map((s) => s.name)])]
      : defaults.filter((s) => opts.nginx !== 'skip' || !s.via).map((s) => s.name));
  config.systems = named.map((name) => findSystem(name));
  for (const s of config.systems) {
    if (s.scaleOut) throw new Error(`${s.name} runs in the scale-out section only (--scaleout)`);
  }
  if (opts.nginx === 'only') opts.scaleOut = 'skip';
  if (opts.scaleOut === 'only') {
    config.systems = [];
    config.ns = [];
    config.payloads = [];
  }
  if (opts.scaleOut !== 'skip') {
    const base = SCALE_OUT_MODES[mode];
    config.scaleOut = {
      ...base,
      requestedN: opts.scaleOutN ?? base.n,
      repeats: opts.repeats ?? base.repeats ?? config.repeats,
    };
    const n = config.scaleOut.requestedN;
    if (!(Number.isInteger(n) && n >= 2 && n % 2 === 0)) throw new Error(`--scaleout-n takes an even N, got ${n}`);
  } else if (opts.scaleOutN) throw new Error('--scaleout-n with --no-scaleout');
  return config;
}

/** Which nginx the rows behind it ran through, and how it was set up. */
function nginxInfo() {
  const r = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
  return {
    binary: NGINX,
    version: (r.stderr || r.stdout || '').trim().replace(/^nginx version: /, '') || null,
    setup:
      'one process (master_process off), worker_connections 1.25 × (2N + 64), access_log off; location / { proxy_pass ' +
      'http://127.0.0.1:<server port>; }: HTTP/1.0 to the upstream, proxy_buffering on (the default)',
  };
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    date: new Date().toISOString(),
  };
}

/**
 * Every connection costs up to two descriptors in the server and one in the
 * load generator. Ask for enough; if the hard limit cannot be raised, run the
 * largest N every system can serve (the same N for all, so rows compare)
 * and say so.
 */
function planConnections(ns) {
  const want = serverOpenFiles(Math.max(...ns));
  const limit = probeOpenFiles(want);
  const maxN = Math.floor(socketCapacity(limit.soft) / 100) * 100;
  const plan = ns.map((requested) => ({ requested, n: Math.min(requested, maxN) }));
  const capped = plan.filter((p) => p.n < p.requested);
  const note = limit.raised
    ? `servers run with an open-files limit that lets all N connections use the native writer (two fds each, plus the addon's reserve), the load generator N + ${FD_RESERVE}`
    : `the open-files limit could not be raised above ${limit.soft} (hard limit ${limit.hard}; raising it needs ` +
      `CAP_SYS_RESOURCE)` +
      (capped.length
        ? `, and a native connection costs the server two fds within the addon's budget, so N = ` +
          `${capped.map((p) => p.requested.toLocaleString('en-US')).join(', ')} ran as ${maxN.toLocaleString('en-US')}`
        : '');
  const unique = [...new Map(plan.map((p) => [p.n, p])).values()];
  return { want, limit, note, plan: unique };
}

/**
 * What addon build is measured: the binary's hash and the commit, plus
 * whether its sources differ from the commit. Taken at start and end, since
 * a rebuild in the middle of a run would mix two builds in one table.
 */
function addonBuild() {
  const root = path.join(__dirname, '..');
  const binary = fs.readdirSync(root).find((f) => /^sse-helper-native\..+\.node$/.test(f));
  const git = (...args) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout?.trim() || null;
  return {
    binary,
    sha256: binary
      ? crypto
          .createHash('sha256')
          .update(fs.readFileSync(path.join(root, binary)))
          .digest('hex')
          .slice(0, 16)
      : null,
    commit: git('rev-parse', '--short', 'HEAD'),
    sourcesDirty: Boolean(git('status', '--porcelain', '--', 'src', 'lib', 'index.js', 'Cargo.toml')),
  };
}

/** Builds the native limit; returns null or why it cannot run. */
function buildNative(system) {
  const r = spawnSync('cargo', ['build', '--release', '--quiet', '--manifest-path', system.native.manifest], {
    encoding: 'utf8',
  });
  if (r.error) return `cargo not available: ${r.error.message}`;
  if (r.status !== 0) return `cargo build failed:\n${r.stderr}`;
  return null;
}

/**
 * One server process and one load generator for one system and N: connect,
 * then every figure for every payload, then the delivery check.
 */
async function runCell(system, n, rep, config, memo) {
  const tag = `${system.name} N=${n} #${rep + 1}`;
  const cellStart = performance.now();
  const log = (msg) => console.error(`[${tag}] ${msg}`);
  const failures = [];
  const fail = (msg) => {
    if (failures.length < 10) failures.push(msg);
    log(`FAIL ${msg}`);
  };
  const argv = system.native
    ? [system.native.binary, ...(system.native.args ?? [])]
    : [process.execPath, '--expose-gc', SERVER, system.name];
  const server = new Child(system.name, argv, { nofile: serverOpenFiles(n) });
  const loadgen = new Child('loadgen', [process.execPath, LOADGEN], { nofile: n + FD_RESERVE });
  // A row behind nginx: the harness's nginx in front of the server, the
  // clients connected to it (started once the server listens).
  let proxy = null;
  /** nginx's CPU, in the shape of a child's `cpu` reply, for the probe and the CPU shares. */
  const proxyCpu = { request: async () => processCpu(proxy.pid) };
  let sent = 0;

  // Arms the load generator for the next frame(s), so the moment the last
  // client gets one is recorded even when it arrives before the reply to
  // the broadcast command does.
  const arm = async (...targets) => {
    const r = await loadgen.request(`arm ${targets.join(' ')}`);
    if (r.alreadyReached > 0) fail(`armed after delivery of ${targets}`);
  };
  let phase = 'connecting';
  const waitDelivered = async (timeoutMs) => {
    const w = await loadgen.request(`wait ${timeoutMs}`, timeoutMs + 10_000);
    for (const t of w.targets) {
      if (t.reached === n) continue;
      const { closedAfterConnect } = await loadgen.request('stats');
      if (closedAfterConnect > 0) {
        throw new ClientsLost(`the server closed ${closedAfterConnect} of ${n} connections during ${phase}`);
      }
      fail(`only ${t.reached}/${n} clients got frame #${t.target} within ${timeoutMs} ms`);
    }
    return w.targets;
  };
  /** Waits until every frame sent so far has reached every client. */
  const settle = async () => {
    await loadgen.request(`arm ${sent}`);
    await waitDelivered(60_000);
  };

  /** (a) and (b) for one broadcast. */
  const shot = async () => {
    await sleep(IDLE_BEFORE_SHOT_MS);
    await arm(sent + 1);
    const b = await server.request('bcast');
    sent++;
    const [t] = await waitDelivered(30_000);
    if (b.written !== n) fail(`broadcast wrote ${b.written}, expected ${n}`);
    return {
      syncMs: nsToMs(b.syncNs),
      blockedMs: nsToMs(b.blockedNs),
      latencyMs: t.atNs ? diffMs(t.atNs, b.startNs) : null,
    };
  };

  /** (c) The sustained rate (lib/probe.js), from the previous repeat's answer when there is one. */
  const { probe: probeRate } = createProbe({
    server,
    loadgen,
    n,
    perBroadcast: n,
    stepMs: config.stepMs,
    others: system.via ? [{ name: 'nginx', child: proxyCpu }] : [],
    sent: () => sent,
    addSent: (count) => {
      sent += count;
    },
    arm,
    waitDelivered,
    fail,
    setPhase: (what) => {
      phase = what;
    },
  });
  const probe = (key, blockedMs, latencyMs) =>
    probeRate({
      memo,
      memoKey: `${system.name}/${n}/${key}`,
      blockedMs,
      latencyMs,
      maxSteps: config.maxSteps,
      maxStepsResumed: config.maxStepsResumed,
    });

  /**
   * (f) Throughput at bounded lag, closed loop: at most
   * CLOSED_LOOP_IN_FLIGHT broadcasts outstanding, the next issued once the
   * oldest has reached every client, for about config.closedMs. What a
   * latency-bound app sees; a writer that only batches well when it falls
   * behind gets no credit for it here. Rate: broadcasts over the time from
   * the first call to the last broadcast reaching every client (as the
   * harness learns it, round trips included, the same for every system).
   */
  const closedLoop = async () => {
    phase = `the closed-loop throughput (f)`;
    const [lc0, sc0] = await Promise.all([loadgen.request('cpu'), server.request('cpu')]);
    const pc0 = proxy && (await proxyCpu.request());
    const t0 = performance.now();
    const issued = [];
    let done = 0;
    let firstStartNs = null;
    let lastAtNs = null;
    const waitOldest = async () => {
      const r = await loadgen.request(`arm ${issued[done]}`);
      const [t] = await waitDelivered(30_000);
      // Already reached when armed: the arm time stands in (a little late).
      lastAtNs = t.atNs ?? null;
      if (r.alreadyReached > 0 && !lastAtNs) fail(`closed loop: no time for broadcast #${issued[done]}`);
      done++;
    };
    while (performance.now() - t0 < config.closedMs || issued.length < CLOSED_LOOP_MIN_BROADCASTS) {
      if (issued.length - done >= CLOSED_LOOP_IN_FLIGHT) await waitOldest();
      const b = await server.request('bcast');
      sent++;
      issued.push(sent);
      firstStartNs ??= b.startNs;
      if (b.written !== n) fail(`closed-loop broadcast wrote ${b.written}, expected ${n}`);
    }
    while (done < issued.length) await waitOldest();
    const wallMs = performance.now() - t0;
    const [lc1, sc1] = await Promise.all([loadgen.request('cpu'), server.request('cpu')]);
    const pc1 = proxy && (await proxyCpu.request());
    const spanMs = lastAtNs && firstStartNs ? diffMs(lastAtNs, firstStartNs) : null;
    await sleep(GAP_MS);
    return {
      broadcasts: issued.length,
      hz: spanMs > 0 ? (issued.length * 1000) / spanMs : null,
      serverCpu: cpuShare(sc0, sc1, wallMs),
      loadgenCpu: cpuShare(lc0, lc1, wallMs),
      ...(proxy && { nginxCpu: cpuShare(pc0, pc1, wallMs) }),
    };
  };

  /** (a), (b), (d), (c) and (f) for one payload, on the connections already open. */
  const measurePayload = async (key) => {
    const json = JSON.stringify(PAYLOADS[key].make());
    await server.request(`payload ${json}`);
    phase = `the ${PAYLOADS[key].label} broadcasts for (a) and (b)`;
    for (let i = 0; i < config.warmup; i++) await shot();
    const shots = [];
    for (let i = 0; i < config.shots; i++) shots.push(await shot());
    const blockedMs = median(shots.map((s) => s.blockedMs));
    const result = {
      payloadBytes: Buffer.byteLength(json),
      syncMs: median(shots.map((s) => s.syncMs)),
      blockedMs,
      latencyMs: median(shots.map((s) => s.latencyMs)),
      shots,
      eld: null,
    };
    if (!system.native) {
      // (d) Broadcasting 10 times a second, then 100 times a second with the
      // server's RSS (after a forced GC) taken just before and just after.
      const eld = async (hz) => {
        phase = `the event-loop delay measurement at ${hz}/s`;
        const e = await server.request(`eld ${hz} ${config.eldMs}`, config.eldMs + 60_000);
        sent += e.broadcasts;
        return {
          hz,
          p99Ms: e.p99Ns / 1e6,
          p50Ms: e.p50Ns / 1e6,
          maxMs: e.maxNs / 1e6,
          samples: e.samples,
          broadcasts: e.broadcasts,
        };
      };
      result.eld = await eld(ELD_HZ);
      await settle();
      const rssBefore = (await server.request('mem')).rss;
      result.eldFast = await eld(ELD_FAST_HZ);
      // Right after the phase, frames still queued for slow clients included.
      const rssAfter = (await server.request('mem')).rss;
      await settle();
      const rssSettled = (await server.request('mem')).rss;
      Object.assign(result.eldFast, { rssBefore, rssAfter, rssSettled, rssGrowthB: rssAfter - rssBefore });
    }
    result.probe = await probe(key, blockedMs, result.latencyMs);
    result.closed = await closedLoop();
    const p = result.probe;
    log(
      `${PAYLOADS[key].label}: blocked ${blockedMs.toFixed(2)} ms, last client ${result.latencyMs?.toFixed(2)} ms, ` +
        `max ${p.maxHz ?? '-'} bcast/s (${p.steps.length} steps), ` +
        `closed loop ${result.closed.hz?.toFixed(1) ?? '-'} bcast/s (load generator ${result.closed.loadgenCpu?.toFixed(2) ?? '-'} cores` +
        `${proxy ? `, nginx ${result.closed.nginxCpu?.toFixed(2) ?? '-'}` : ''})` +
        (result.eld ? `, ELD p99 ${result.eld.p99Ms.toFixed(2)} ms` : '') +
        (result.eldFast
          ? ` (@${ELD_FAST_HZ}/s ${result.eldFast.p99Ms.toFixed(2)} ms, RSS ` +
            `${result.eldFast.rssGrowthB >= 0 ? '+' : ''}${(result.eldFast.rssGrowthB / 2 ** 20).toFixed(1)} MB)`
          : ''),
    );
    return result;
  };

  try {
    const [ready, loadgenReady] = await Promise.all([server.ready, loadgen.ready]);
    for (const r of [ready, loadgenReady]) {
      if (r.nofile < n + 32) throw new Error(`open-files limit ${r.nofile} is too low for N = ${n}`);
    }
    // Every proxied request holds two of nginx's connections, the client's
    // and the upstream's. Room to spare: once fewer than 1/16 of its
    // worker_connections are free, nginx closes connections it may reuse,
    // accepted ones whose request it has not read yet among them.
    if (system.via === 'nginx') proxy = await startNginx(ready.port, { connections: Math.ceil(1.25 * (2 * n + 64)) });
    // Foreign load: everything the machine did during this cell minus what
    // the server, the load generator and this harness used.
    const cpuNow = async () => ({
      machineMs: machineBusyMs(),
      wallMs: performance.now(),
      ours: [
        await server.request('cpu'),
        await loadgen.request('cpu'),
        ...(proxy ? [await proxyCpu.request()] : []),
        { userUs: process.cpuUsage().user, systemUs: process.cpuUsage().system },
      ].reduce((sum, c) => sum + (c.userUs + c.systemUs) / 1000, 0),
    });
    const cpuStart = await cpuNow();
    const clocks = [await checkClock(server), await checkClock(loadgen)];
    for (const c of clocks) if (!c.ok) fail(`${c.child} does not share the harness clock`);

    // (e) Memory: baseline before any client, again once all N are registered.
    const memBefore = await server.request('mem');
    const fdsBefore = openFds(ready.pid);
    const conn = await loadgen.request(`connect ${proxy?.port ?? ready.port} ${n} ${CONNECT_CONCURRENCY}`, 300_000);
    if (conn.connected !== n) fail(`${conn.connected}/${n} clients connected (${conn.failed} failed)`);
    await until(async () => (await server.request('count')).clients >= conn.connected, 30_000, 'registration');
    await sleep(200);
    const memAfter = await server.request('mem');
    const fdsAfter = openFds(ready.pid);
    const perConn = (a, b) => (a == null || b == null ? null : (a - b) / n);
    const cell = {
      system: system.name,
      n,
      rep,
      connectMs: conn.ms,
      rssPerConnB: perConn(memAfter.rss, memBefore.rss),
      heapPerConnB: perConn(memAfter.heapUsed, memBefore.heapUsed),
      fdsPerConn: perConn(fdsAfter, fdsBefore),
      info: system.native ? {} : await server.request('info'),
      clocks,
      payloads: {},
    };
    if (system.via) {
      cell.via = system.via;
      // Behind nginx's default proxy_pass the upstream requests are HTTP/1.0,
      // and the package's connections must still take its native writer.
      const versions = Object.keys(cell.info.httpVersions ?? {});
      if (versions.some((v) => v !== '1.0')) fail(`behind nginx the server saw HTTP/${versions.join(', HTTP/')}`);
      const stats = cell.info.stats;
      if (stats && stats.socketConnections !== n) {
        fail(
          `behind nginx ${stats.socketConnections} of ${n} connections took the native writer ` +
            `(${stats.streamConnections} the stream transport)`,
        );
      }
    }

    let lost = false;
    for (const key of config.payloads) {
      const failuresBefore = failures.length;
      try {
        cell.payloads[key] = await measurePayload(key);
        cell.payloads[key].failed = failures.length > failuresBefore;
      } catch (err) {
        if (!(err instanceof ClientsLost)) throw err;
        fail(`${PAYLOADS[key].label}: ${err.message}; the rest of this run is void`);
        cell.payloads[key] = { failed: true };
        lost = true;
        break;
      }
    }

    // Every client must have every frame, no more, no less.
    if (!lost) await settle();
    const cpuEnd = await cpuNow();
    cell.foreignLoadCores =
      cpuStart.machineMs == null
        ? null
        : (cpuEnd.machineMs - cpuStart.machineMs - (cpuEnd.ours - cpuStart.ours)) / (cpuEnd.wallMs - cpuStart.wallMs);
    const stats = await loadgen.request('stats');
    const serverSent = (await server.request('sent')).sent;
    if (serverSent !== sent) fail(`server made ${serverSent} broadcasts, harness counted ${sent}`);
    if (stats.clients !== n || stats.minEvents !== sent || stats.maxEvents !== sent) {
      fail(`delivery: ${stats.clients} clients got ${stats.minEvents}..${stats.maxEvents} of ${sent} frames`);
    }
    if (stats.closedAfterConnect || stats.protocolErrors) {
      fail(`${stats.closedAfterConnect} connections closed early, ${stats.protocolErrors} protocol errors`);
    }
    cell.delivery = { broadcasts: sent, ...stats };
    cell.failures = failures;
    cell.wallMs = performance.now() - cellStart;
    return cell;
  } finally {
    // Server first: the side that closes first keeps TIME_WAIT, and the
    // server's side does not use up the clients' ephemeral ports.
    await server.close();
    // nginx next: it closes the clients' connections, so their TIME_WAIT is
    // on its side too.
    await proxy?.stop();
    await loadgen.close();
  }
}

/** Medians over repeats, per system, N and payload, and ratios to the reference rows. */
function aggregate(cells, config, nList) {
  const rows = [];
  const memory = [];
  for (const { n } of nList) {
    for (const system of config.systems) {
      const mine = cells.filter((c) => c.system === system.name && c.n === n && !c.error);
      memory.push({
        system: system.name,
        n,
        ...(system.via && { via: system.via, direct: system.direct, httpVersions: httpVersionsOf(mine) }),
        fdsPerConn: median(mine.map((c) => c.fdsPerConn)),
        transports: transportsOf(mine),
        rssPerConnB: summarize(mine.map((c) => c.rssPerConnB)),
        heapPerConnB: summarize(mine.map((c) => c.heapPerConnB)),
      });
      for (const key of config.payloads) {
        // A payload whose measurement saw a failure does not count.
        const per = mine.map((c) => c.payloads[key]).filter((p) => p && !p.failed);
        rows.push({
          system: system.name,
          n,
          payload: key,
          ...(system.via && { via: system.via, direct: system.direct }),
          runs: per.length,
          blockedMs: summarize(per.map((p) => p.blockedMs)),
          syncMs: summarize(per.map((p) => p.syncMs)),
          latencyMs: summarize(per.map((p) => p.latencyMs)),
          maxHz: summarize(per.map((p) => p.probe.maxHz)),
          // The repeat the median comes from found no failing rate above it:
          // the real limit is higher.
          cappedHz: per.some((p) => p.probe.unbounded && p.probe.maxHz === median(per.map((q) => q.probe.maxHz))),
          deliveredFps: summarize(per.map((p) => p.probe.deliveredFps)),
          peakDeliveredFps: summarize(per.map((p) => p.probe.peakDeliveredFps)),
          loadgenCpuAbove: median(per.map((p) => p.probe.loadgenCpuAbove)),
          serverCpuAbove: median(per.map((p) => p.probe.serverCpuAbove)),
          eldP99Ms: summarize(per.map((p) => p.eld?.p99Ms)),
          eldFastP99Ms: summarize(per.map((p) => p.eldFast?.p99Ms)),
          rssGrowthFastB: summarize(per.map((p) => p.eldFast?.rssGrowthB)),
          closedHz: summarize(per.map((p) => p.closed?.hz)),
          closedServerCpu: median(per.map((p) => p.closed?.serverCpu)),
          closedLoadgenCpu: median(per.map((p) => p.closed?.loadgenCpu)),
          ...(system.via && {
            closedNginxCpu: median(per.map((p) => p.closed?.nginxCpu)),
            nginxCpuAbove: median(per.map((p) => p.probe.otherCpuAbove?.nginx)),
          }),
        });
      }
    }
  }
  const metrics = ['blockedMs', 'latencyMs', 'maxHz', 'deliveredFps', 'eldP99Ms', 'eldFastP99Ms', 'closedHz'];
  // A row behind nginx against the JS helper behind the same nginx, and
  // against itself without nginx ('direct'); the others against the
  // baseline and the limit.
  const refsOf = (row) => (row.via ? [[NGINX_BASELINE], ['direct', row.direct]] : [[BASELINE], [LIMIT]]);
  for (const row of rows) {
    row.ratios = {};
    for (const [key, ref = key] of refsOf(row)) {
      const other = rows.find((r) => r.system === ref && r.n === row.n && r.payload === row.payload);
      row.ratios[key] = {};
      for (const m of metrics) {
        const a = row[m]?.median;
        const b = other?.[m]?.median;
        row.ratios[key][m] = a != null && b ? a / b : null;
      }
    }
  }
  for (const row of memory) {
    row.ratios = {};
    for (const [key, ref = key] of refsOf(row)) {
      const other = memory.find((r) => r.system === ref && r.n === row.n);
      const a = row.rssPerConnB?.median;
      const b = other?.rssPerConnB?.median;
      row.ratios[key] = a != null && b ? a / b : null;
    }
  }
  return { rows, memory };
}

/** Requests on /events by HTTP version, as the server saw them (median over runs). */
function httpVersionsOf(cells) {
  const seen = cells.map((c) => c.info?.httpVersions).filter(Boolean);
  if (seen.length === 0) return null;
  const versions = [...new Set(seen.flatMap((v) => Object.keys(v)))];
  return Object.fromEntries(versions.map((v) => [v, median(seen.map((s) => s[v] ?? 0))]));
}

/** How many of a system's connections each transport got (median over runs), if it reports that. */
function transportsOf(cells) {
  const stats = cells.map((c) => c.info?.stats).filter(Boolean);
  if (stats.length === 0) return null;
  return {
    socket: median(stats.map((s) => s.socketConnections)),
    stream: median(stats.map((s) => s.streamConnections)),
  };
}

/** The scale-out section's record: its settings, rows, goals and every repeat. */
function scaleOutReport(sconfig, plan, cells) {
  const config = {
    ...sconfig,
    n: plan.n,
    perInstance: plan.perInstance,
    nNote: plan.note,
    payload: PAYLOADS.small.label,
    inFlight: SCALE_OUT_IN_FLIGHT,
    commandProbe: SCALE_OUT_COMMAND_PROBE,
    keepUp: KEEP_UP,
    lagSlackMs: LAG_SLACK_MS,
    grid: { baseHz: GRID_BASE_HZ, ratio: GRID_RATIO, maxHz: gridHz(K_MAX) },
    goals: SCALE_OUT_GOALS,
    goalN: SCALE_OUT_GOAL_N,
    rows: SCALE_OUT_ROWS,
  };
  return { config, ...aggregateScaleOut(cells, config), cells };
}

/** Re-aggregates a saved results file and rewrites its report, without measuring. */
function rerender(file) {
  const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  const config = {
    systems: saved.config.systems.map((name) => SYSTEMS.find((s) => s.name === name) ?? { name }),
    payloads: saved.config.payloads.map((p) => p.key),
  };
  const { rows, memory } = aggregate(saved.cells, config, saved.config.ns);
  const scaleOut = saved.scaleOut && {
    ...saved.scaleOut,
    ...aggregateScaleOut(saved.scaleOut.cells, saved.scaleOut.config),
  };
  const out = writeReport({
    ...saved,
    dir: path.dirname(file),
    base: path.basename(file, '.json'),
    rows,
    memory,
    scaleOut,
  });
  console.log(out.markdown);
  console.error(`bench: rewrote ${out.files.join(', ')}`);
}

async function main() {
  const started = performance.now();
  const config = parseArgs(process.argv.slice(2));
  if (config.rerender) return rerender(config.rerender);
  const machine = machineInfo();
  // Without nginx the rows behind it are left out and the report says why;
  // that fails nothing.
  const skipped = [];
  if (!NGINX) {
    for (const s of config.systems.filter((x) => x.via === 'nginx')) {
      skipped.push({
        system: s.name,
        reason: 'nginx not found (/usr/sbin/nginx, /usr/bin/nginx: Debian package nginx)',
      });
    }
    config.systems = config.systems.filter((x) => x.via !== 'nginx');
    if (skipped.length) {
      console.error(`bench: skipping ${skipped.map((x) => x.system).join(', ')}: ${skipped[0].reason}`);
    }
  }
  const connections = config.systems.length ? planConnections(config.ns) : { plan: [], note: null };
  console.error(`bench: ${config.mode} mode, ${machine.cores} cores, ${machine.cpuModel}, Node ${machine.node}`);
  if (connections.note) console.error(`bench: ${connections.note}`);
  const scaleOutPlan = config.scaleOut
    ? planScaleOut(config.scaleOut.requestedN, probeOpenFiles(serverOpenFiles(config.scaleOut.requestedN)))
    : null;
  if (scaleOutPlan?.note) console.error(`bench: scale-out: ${scaleOutPlan.note}`);

  const buildBefore = addonBuild();
  console.error(
    `bench: addon ${buildBefore.binary} sha256 ${buildBefore.sha256}, commit ${buildBefore.commit}${buildBefore.sourcesDirty ? ' (sources modified)' : ''}`,
  );
  const unavailable = new Map();
  for (const system of config.systems) {
    if (!system.native) continue;
    const why = buildNative(system);
    if (why) {
      unavailable.set(system.name, why);
      console.error(`bench: ${system.name} unavailable: ${why}`);
    }
  }

  const cells = [];
  const memo = new Map();
  for (const { n } of connections.plan) {
    for (let rep = 0; rep < config.repeats; rep++) {
      // Rotate the order each repeat so no system always runs first or last.
      const order = config.systems.map((_, i) => config.systems[(i + rep) % config.systems.length]);
      for (const system of order) {
        if (system.via && rep >= config.nginxRepeats) continue;
        if (unavailable.has(system.name)) {
          cells.push({ system: system.name, n, rep, error: unavailable.get(system.name) });
          continue;
        }
        const quiet = await waitForQuiet({ timeoutMs: config.quietTimeoutMs });
        if (!quiet.quiet)
          console.error(
            `bench: machine still busy (${quiet.load.toFixed(2)} cores) after ${(quiet.waitedMs / 1000).toFixed(0)} s; running anyway`,
          );
        try {
          cells.push({ ...(await runCell(system, n, rep, config, memo)), quietWaitMs: quiet.waitedMs });
        } catch (err) {
          console.error(`[${system.name} N=${n} #${rep + 1}] ERROR ${err.stack ?? err}`);
          cells.push({ system: system.name, n, rep, error: String(err.message ?? err) });
        }
      }
    }
  }

  // The scale-out section: one instance with N clients against two with
  // N/2 each on one Redis (lib/scaleout.js).
  const scaleOutCells = [];
  if (scaleOutPlan) {
    const sconfig = { ...config.scaleOut, n: scaleOutPlan.n };
    // Each row's (c) answer, where its next repeat's probe starts.
    const scaleOutMemo = new Map();
    for (let rep = 0; rep < sconfig.repeats; rep++) {
      const order = SCALE_OUT_ROWS.map((_, i) => SCALE_OUT_ROWS[(i + rep) % SCALE_OUT_ROWS.length]);
      for (const row of order) {
        const quiet = await waitForQuiet({ timeoutMs: config.quietTimeoutMs });
        if (!quiet.quiet)
          console.error(
            `bench: machine still busy (${quiet.load.toFixed(2)} cores) after ${(quiet.waitedMs / 1000).toFixed(0)} s; running anyway`,
          );
        try {
          scaleOutCells.push({
            ...(await runScaleOutCell(row, rep, scaleOutPlan, sconfig, scaleOutMemo)),
            quietWaitMs: quiet.waitedMs,
          });
        } catch (err) {
          console.error(`[scale-out ${row.system} ×${row.instances} #${rep + 1}] ERROR ${err.stack ?? err}`);
          scaleOutCells.push({ ...row, n: scaleOutPlan.n, rep, error: String(err.message ?? err) });
        }
      }
    }
  }

  const { rows, memory } = aggregate(cells, config, connections.plan);
  const problems = [];
  for (const c of cells) {
    if (c.error) problems.push(`${c.system} N=${c.n} #${c.rep + 1}: did not run: ${c.error.split('\n')[0]}`);
    for (const f of c.failures ?? []) problems.push(`${c.system} N=${c.n} #${c.rep + 1}: ${f}`);
  }
  for (const system of config.systems) {
    if (!cells.some((c) => c.system === system.name && !c.error)) problems.push(`${system.name} never ran`);
  }
  const scaleOutLabel = (c) =>
    `scale-out ${c.system} ${c.instances}×${(c.n / c.instances).toLocaleString('en-US')} #${c.rep + 1}`;
  for (const c of scaleOutCells) {
    if (c.error) problems.push(`${scaleOutLabel(c)}: did not run: ${c.error.split('\n')[0]}`);
    for (const f of c.failures ?? []) problems.push(`${scaleOutLabel(c)}: ${f}`);
  }
  if (scaleOutPlan) {
    for (const row of SCALE_OUT_ROWS) {
      if (!scaleOutCells.some((c) => c.system === row.system && c.instances === row.instances && !c.error)) {
        problems.push(`scale-out ${row.system} (${row.instances} instance${row.instances > 1 ? 's' : ''}) never ran`);
      }
    }
  }
  const clockOk = [...cells, ...scaleOutCells].every((c) => !c.clocks || c.clocks.every((k) => k.ok));
  // Warnings question the figures, not the systems: they do not fail the run.
  const warnings = [];
  const buildAfter = addonBuild();
  if (buildAfter.sha256 !== buildBefore.sha256) {
    warnings.push(
      `the addon binary changed during the run (${buildBefore.sha256} -> ${buildAfter.sha256}): results mix builds`,
    );
  }
  const allCells = [...cells, ...scaleOutCells];
  const loads = allCells.map((c) => c.foreignLoadCores).filter((v) => v != null);
  const disturbed = allCells.filter((c) => c.foreignLoadCores > FOREIGN_LOAD_WARN);
  if (disturbed.length) {
    warnings.push(
      `${disturbed.length} of ${allCells.length} runs shared the CPU with other work (> ${FOREIGN_LOAD_WARN} cores): ` +
        disturbed
          .map(
            (c) =>
              `${c.instances ? scaleOutLabel(c) : `${c.system} N=${c.n} #${c.rep + 1}`} (${c.foreignLoadCores.toFixed(2)})`,
          )
          .join(', '),
    );
  }
  const foreignLoad = loads.length
    ? { median: median(loads), max: Math.max(...loads), warnAbove: FOREIGN_LOAD_WARN }
    : null;

  const durationS = (performance.now() - started) / 1000;
  const out = writeReport({
    dir: path.join(__dirname, 'results'),
    base: config.out ?? (config.mode === 'quick' ? 'quick' : 'latest'),
    machine,
    config: {
      mode: config.mode,
      note: config.note ?? null,
      ns: connections.plan,
      payloads: config.payloads.map((k) => ({ key: k, label: PAYLOADS[k].label })),
      repeats: config.repeats,
      nginxRepeats: config.nginxRepeats,
      modeRepeats: MODES[config.mode === 'quick' ? 'quick' : 'default'].repeats,
      shots: config.shots,
      eldMs: config.eldMs,
      eldHz: [ELD_HZ, ELD_FAST_HZ],
      stepMs: config.stepMs,
      closedMs: config.closedMs,
      closedInFlight: CLOSED_LOOP_IN_FLIGHT,
      maxSteps: config.maxSteps,
      maxStepsResumed: config.maxStepsResumed,
      idleBeforeShotMs: IDLE_BEFORE_SHOT_MS,
      systems: config.systems.map((s) => s.name),
      baseline: BASELINE,
      limit: LIMIT,
      nginxBaseline: NGINX_BASELINE,
      nginx: config.systems.some((s) => s.via === 'nginx') ? nginxInfo() : null,
      skipped,
      keepUp: KEEP_UP,
      lagSlackMs: LAG_SLACK_MS,
      grid: { baseHz: GRID_BASE_HZ, ratio: GRID_RATIO, maxHz: gridHz(K_MAX) },
      fdNote: connections.note,
      addon: buildBefore,
    },
    rows,
    memory,
    cells,
    scaleOut: scaleOutPlan && scaleOutReport(config.scaleOut, scaleOutPlan, scaleOutCells),
    problems,
    warnings,
    foreignLoad,
    clockOk,
    durationS,
  });
  console.log(out.markdown);
  console.error(`bench: wrote ${out.files.join(', ')} in ${durationS.toFixed(1)} s`);
  for (const w of warnings) console.error(`bench: warning: ${w}`);
  if (problems.length) {
    console.error(`bench: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
    process.exitCode = 1;
  } else {
    console.error('bench: every system ran and every client received every frame');
  }
}

if (process.argv.includes('--reader')) {
  // Its own script, with its own options (it ignores --reader).
  require('./reader.js');
} else {
  main().catch((err) => {
    console.error(err.stack ?? err);
    process.exit(1);
  });
}
