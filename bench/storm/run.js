// A reconnect storm (issue 27): N clients connected to one server, plus S
// that stay, while a numbered broadcast goes out every `--tick` ms (and on
// this package, with `--channels C`, a publish to one of C rooms, each
// client a member of one). Then the N are dropped at once, stay away
// `--down` ms, and all reconnect at once with the Last-Event-ID they last
// saw. Per system, in its own server process, side by side in one run:
// this package (native writer, and `transport: 'stream'`), optionally a
// baseline build of it (SSE_BENCH_BASELINE_DIR: the same two rows before
// a change), the JS helper and better-sse (neither can replay: what their
// clients miss is counted).
//
// Measured: the time from the reconnect wave until every client has caught
// up (received a broadcast sent after the wave began, with everything
// before it for the systems that replay); the server's event-loop delay
// during the drop and, apart, from the reconnect wave to the end; its CPU
// from the drop to the end; its peak RSS (VmHWM) against its RSS
// before the drop; the longest gap between two live broadcasts on the
// clients that stayed, and whether they missed any; and per reconnecting
// client, broadcasts (and its room's publishes) missed or received twice.
// The load generator is this process, apart from the server's.
//
//   node bench/storm/run.js [--n 1000] [--stay 50] [--channels 10] [--tick 20] [--down 500]
//     [--systems addon,addon-stream,js-helper,better-sse] [--out storm-quick]
//   SSE_BENCH_BASELINE_DIR=../base node bench/storm/run.js --systems addon-before,addon,... --out storm

const { fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const N = Number(option('n', 1000));
const STAY = Number(option('stay', 50));
const CHANNELS = Number(option('channels', 10));
const TICK = Number(option('tick', 20));
const DOWN = Number(option('down', 500));
const SYSTEMS = option('systems', 'addon,addon-stream,js-helper,better-sse').split(',');
const OUT = option('out', 'storm-quick');
const DEADLINE_MS = Number(option('deadline', 180_000));
const REPLAYS = new Set(['addon', 'addon-stream', 'addon-before', 'addon-before-stream']);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function ask(child, message, key) {
  return new Promise((resolve) => {
    const on = (reply) => {
      if (key in reply) {
        child.off('message', on);
        resolve(reply);
      }
    };
    child.on('message', on);
    child.send(message);
  });
}

function procStatus(pid, field) {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : null;
}

/** The number after `"<key>":` in a frame, or -1. */
function numberAfter(frame, key) {
  const at = frame.indexOf(key);
  return at === -1 ? -1 : Number.parseInt(frame.slice(at + key.length), 10);
}

/**
 * One client's view of the stream, kept across its reconnection: the
 * broadcasts (`b`) and its room's publishes (`c`, every C-th tick) must
 * each follow on by one (by C), whatever connection brought them.
 */
function makeState(room) {
  return {
    room,
    buf: '',
    lastFrame: null,
    lastB: 0,
    lastC: 0,
    missedB: 0,
    dupB: 0,
    missedC: 0,
    dupC: 0,
    resets: 0,
    frames: 0,
    lastAt: 0,
    maxGapMs: 0,
    socket: null,
    reconnected: false,
    dropping: false,
    again: 0,
  };
}

function onFrame(s, frame, track) {
  s.frames += 1;
  if (frame.includes('event: reset')) {
    s.resets += 1;
    return;
  }
  const b = numberAfter(frame, '"b":');
  if (b !== -1) {
    s.lastFrame = frame;
    if (s.lastB !== 0) {
      if (b <= s.lastB) s.dupB += 1;
      else s.missedB += b - s.lastB - 1;
    }
    s.lastB = Math.max(s.lastB, b);
    if (track) {
      const now = performance.now();
      if (s.lastAt) s.maxGapMs = Math.max(s.maxGapMs, now - s.lastAt);
      s.lastAt = now;
    }
    return;
  }
  const c = numberAfter(frame, '"c":');
  if (c !== -1) {
    s.lastFrame = frame;
    if (s.lastC !== 0) {
      if (c <= s.lastC) s.dupC += 1;
      else s.missedC += (c - s.lastC) / CHANNELS - 1;
    }
    s.lastC = Math.max(s.lastC, c);
  }
}

/** The `id:` of the last event the client saw (`id: x` or better-sse's `id:x`). */
function lastIdOf(s) {
  const m = s.lastFrame && /(?:^|\n)id: ?([^\n]*)/.exec(s.lastFrame);
  return m ? m[1] : null;
}

/** Connects `s` (HTTP/1.0: a close-delimited body); a refused connect in the storm is tried again, as a browser would. */
function connect(port, s, lastEventId, tracked, tries = 0) {
  const socket = net.connect(port, '127.0.0.1');
  s.socket = socket;
  let got = false;
  socket.setEncoding('latin1');
  socket.on('data', (d) => {
    got = true;
    s.buf += d;
    let at = s.buf.indexOf('\n\n');
    while (at !== -1) {
      onFrame(s, s.buf.slice(0, at), tracked);
      s.buf = s.buf.slice(at + 2);
      at = s.buf.indexOf('\n\n');
    }
  });
  socket.on('error', () => {
    if (!got && tries < 20 && s.socket === socket)
      setTimeout(() => connect(port, s, lastEventId, tracked, tries + 1), 50);
  });
  // Closed by the server after the storm's reconnection (not by us): an
  // EventSource reconnects from the last id it saw, and so does this one.
  socket.on('close', () => {
    if (s.reconnected && s.socket === socket && !s.dropping) {
      s.again += 1;
      s.buf = '';
      setTimeout(() => connect(port, s, lastIdOf(s), tracked), 100);
    }
  });
  const room = s.room === null ? '' : `?ch=room-${s.room}`;
  const header = lastEventId ? `Last-Event-ID: ${lastEventId}\r\n` : '';
  socket.write(`GET /events${room} HTTP/1.0\r\nHost: 127.0.0.1\r\n${header}\r\n`);
}

async function waitFor(what, predicate, deadline = DEADLINE_MS) {
  const started = performance.now();
  while (!(await predicate())) {
    if (performance.now() - started > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function storm(system) {
  const options = { channels: CHANNELS, tick: TICK, historySize: 100_000 };
  const child = fork(path.join(__dirname, 'server.js'), [system, JSON.stringify(options)], { stdio: 'inherit' });
  child.once('exit', (code) => {
    if (code !== 0) {
      console.error(`${system}: the server exited with ${code}`);
      process.exit(2);
    }
  });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  const count = async () => (await ask(child, { cmd: 'count' }, 'clients')).clients;
  const room = (k) => (CHANNELS > 0 ? k % CHANNELS : null);
  const stayers = Array.from({ length: STAY }, (_, k) => makeState(room(k)));
  const stormers = Array.from({ length: N }, (_, k) => makeState(room(k)));
  for (const s of stayers) connect(port, s, null, true);
  await waitFor('the clients that stay', async () => (await count()) === STAY);
  for (const s of stormers) connect(port, s, null, false);
  await waitFor('every client connected', async () => (await count()) === N + STAY);
  await ask(child, { cmd: 'tick' }, 'ticking');
  await waitFor('a live broadcast everywhere', () => [...stayers, ...stormers].every((s) => s.lastB > 0));
  await sleep(500);

  // The drop: every stormer at once, after what it saw is noted.
  const { rss: rssBefore } = await ask(child, { cmd: 'watch' }, 'watching');
  const genEld = monitorEventLoopDelay({ resolution: 1 });
  genEld.enable();
  const cpu0 = process.cpuUsage();
  for (const s of stayers) s.maxGapMs = 0;
  const lastIds = stormers.map(lastIdOf);
  for (const s of stormers) {
    s.socket.destroy();
    s.buf = '';
  }
  await waitFor('the drop seen by the server', async () => (await count()) === STAY);
  await sleep(DOWN);
  const { drop } = await ask(child, { cmd: 'phase' }, 'drop');

  // The storm: every one back at once, from its last id.
  const fromB = Math.max(...stayers.map((s) => s.lastB)) + 1;
  const started = performance.now();
  for (const [k, s] of stormers.entries()) {
    s.reconnected = true;
    connect(port, s, lastIds[k], false);
  }
  const caughtUp = (s) => s.lastB >= fromB;
  // Past the deadline the row says how many never caught up.
  const done = await waitFor('every client caught up', () => stormers.every(caughtUp), DEADLINE_MS).then(
    () => true,
    () => false,
  );
  const catchUpMs = performance.now() - started;
  const behind = stormers.filter((s) => !caughtUp(s)).length;
  // A little more live traffic, so a gap right after the replays shows.
  await sleep(Math.max(200, 10 * TICK));
  const end = await ask(child, { cmd: 'stop' }, 'eld');
  genEld.disable();
  const peakRss = procStatus(child.pid, 'VmHWM');
  await sleep(Math.max(100, 3 * TICK));
  const sum = (list, f) => list.reduce((a, s) => a + f(s), 0);
  const row = {
    system,
    replays: REPLAYS.has(system),
    n: N,
    stay: STAY,
    channels: CHANNELS,
    tickMs: TICK,
    downMs: DOWN,
    catchUpMs: done ? Math.round(catchUpMs) : null,
    behind,
    reconnectedAgain: stormers.filter((s) => s.again > 0).length,
    dropLoopDelayMaxMs: +drop.max.toFixed(2),
    loopDelayMs: { p50: +end.eld.p50.toFixed(2), p99: +end.eld.p99.toFixed(2), max: +end.eld.max.toFixed(2) },
    serverCpuMs: Math.round(end.cpuMs),
    rssBeforeMB: +(rssBefore / 2 ** 20).toFixed(1),
    peakRssMB: +(peakRss / 2 ** 20).toFixed(1),
    stayersMaxGapMs: +Math.max(...stayers.map((s) => s.maxGapMs)).toFixed(1),
    stayersMissed: sum(stayers, (s) => s.missedB + s.missedC + s.dupB + s.dupC),
    broadcastsMissed: sum(stormers, (s) => s.missedB),
    clientsThatMissed: stormers.filter((s) => s.missedB + s.missedC > 0).length,
    channelMessagesMissed: sum(stormers, (s) => s.missedC),
    duplicates: sum(stormers, (s) => s.dupB + s.dupC),
    resets: sum(stormers, (s) => s.resets),
    ticks: end.ticks,
    stats: end.stats,
    loadGenLoopDelayMaxMs: +(genEld.max / 1e6).toFixed(1),
    loadGenCpuMs: Math.round((process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system) / 1000),
  };
  for (const s of [...stayers, ...stormers]) {
    s.dropping = true;
    s.socket.destroy();
  }
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.send({ cmd: 'exit' });
  await exited;
  return row;
}

function table(rows) {
  const ref = rows.find((r) => r.system === 'addon') ?? rows[0];
  const ratio = (v, base) => (base > 0 ? `${(v / base).toFixed(2)}×` : '–');
  return [
    `| system | caught up, ms (vs ${ref.system}) | loop delay in the storm p50 / p99 / max, ms (max during the drop) | server CPU, ms | RSS before → peak, MB | stayers: longest gap, ms / missed | reconnecting clients that missed events | events missed (broadcasts + channel) | duplicates | resets | replays (shared) |`,
    '|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
    ...rows.map((r) => {
      const shared = r.stats.replaysShared == null ? '' : ` (${r.stats.replaysShared})`;
      const replays = r.replays ? `${r.stats.replays}${shared}` : 'cannot replay';
      const native = r.stats.socketConnections != null ? ` (${r.stats.socketConnections} on the native writer)` : '';
      const caught =
        r.catchUpMs == null
          ? `not in ${DEADLINE_MS / 1000} s: ${r.behind} behind`
          : `${r.catchUpMs} (${ratio(r.catchUpMs, ref.catchUpMs)})`;
      const again = r.reconnectedAgain > 0 ? `, ${r.reconnectedAgain} closed by the server and reconnected again` : '';
      return `| ${r.system}${native} | ${caught}${again} | ${r.loopDelayMs.p50} / ${r.loopDelayMs.p99} / ${r.loopDelayMs.max} (${r.dropLoopDelayMaxMs}) | ${r.serverCpuMs} (${ratio(r.serverCpuMs, ref.serverCpuMs)}) | ${r.rssBeforeMB} → ${r.peakRssMB} | ${r.stayersMaxGapMs} / ${r.stayersMissed} | ${r.clientsThatMissed} of ${r.n} | ${r.broadcastsMissed} + ${r.channelMessagesMissed} | ${r.duplicates} | ${r.resets} | ${replays} |`;
    }),
  ];
}

(async () => {
  const loadBefore = fs.readFileSync('/proc/loadavg', 'utf8').trim();
  const rows = [];
  for (const system of SYSTEMS) {
    const row = await storm(system);
    console.error(JSON.stringify(row));
    rows.push(row);
  }
  const loadAfter = fs.readFileSync('/proc/loadavg', 'utf8').trim();
  const command =
    `${process.env.SSE_BENCH_BASELINE_DIR ? 'SSE_BENCH_BASELINE_DIR=… ' : ''}node bench/storm/run.js ${args.join(' ')}`.trim();
  const md = [
    '# Reconnect storm',
    '',
    `${new Date().toISOString()} · Node ${process.version} · ${os.cpus().length} cores (${os.cpus()[0].model}) · \`${command}\``,
    '',
    `Load average (1, 5, 15 min) before the run: ${loadBefore.split(' ').slice(0, 3).join(', ')}; after: ${loadAfter.split(' ').slice(0, 3).join(', ')}.`,
    '',
    `${N} clients plus ${STAY} that stay connected, ${CHANNELS > 0 ? `each a member of one of ${CHANNELS} rooms, ` : ''}while a numbered broadcast goes out every ${TICK} ms${CHANNELS > 0 ? ' (and, on this package, a publish to one room)' : ''}. The ${N} are dropped at once, stay away ${DOWN} ms after the server saw them go, and reconnect at once with the Last-Event-ID they last saw. Caught up: every reconnecting client received a broadcast sent after the wave began. Each system runs in its own server process; the load generator is another. Ratios compare rows of this run only.`,
    '',
    ...table(rows),
    '',
  ].join('\n');
  const dir = path.join(__dirname, '..', 'results');
  fs.writeFileSync(
    path.join(dir, `${OUT}.json`),
    `${JSON.stringify({ command, loadBefore, loadAfter, rows }, null, 2)}\n`,
  );
  fs.writeFileSync(path.join(dir, `${OUT}.md`), md);
  console.log(md);
  const bad = rows.filter(
    (r) =>
      r.replays && (r.behind > 0 || r.clientsThatMissed > 0 || r.duplicates > 0 || r.resets > 0 || r.stayersMissed > 0),
  );
  process.exit(bad.length === 0 ? 0 : 1);
})();
