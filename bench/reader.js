// The bus reader's throughput (issue 22): how many stream entries one
// instance's reader delivers per second, and the highest append rate a
// following instance keeps up with, next to what Redis itself serves.
//
//   node bench/reader.js [--quick] [--out NAME]    (or node bench/run.js --reader)
//   SSE_BENCH_BASELINE_DIR=/path/to/other/checkout  adds that build, side by side
//
// Per build (the package at its directory) and payload (100 B, 4 KB), each
// on a fresh stream of a redis-server this script starts:
// 1. Ceiling: one instance (bench/reader/hub.js) with one client on the
//    native socket writer and one on the stream transport, maxLen above
//    everything appended (so nothing is trimmed). redis-benchmark floods
//    the stream with N pipelined XADDs (a separate process); the figure is
//    N over the time from the first entry's arrival to the last at the
//    slower client. Every client must get all N, the last with the stream's
//    last id, and no `event: reset`.
// 1b. The reader alone: the instance is stopped (SIGSTOP) while
//    redis-benchmark appends N entries, then resumed; the figure is N over
//    the time from the resume to the last arrival at the slower client, so
//    no producer competes with the reader for the machine's cores.
// 2. Reference, same stream: redis-benchmark's XREAD COUNT 1000 (one
//    connection) times 1000: what Redis serves one reader.
// 3. Following: maxLen 10,000 (the default); bench/reader/producer.js
//    appends at a paced rate for a few seconds, rates in steps; a rate is
//    kept up with when both clients got every entry with no reset. The
//    highest such rate is reported.
// CPU of the instance and of Redis (INFO cpu) per phase; /proc/loadavg at
// the start and end (other work on the machine skews everything).

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const Redis = require('ioredis');

const ROOT = path.join(__dirname, '..');
const HUB = path.join(__dirname, 'reader', 'hub.js');
const PRODUCER = path.join(__dirname, 'reader', 'producer.js');

const PAYLOADS = [
  {
    name: '100 B',
    bytes: 100,
    n: 1_000_000,
    quickN: 300_000,
    rates: [50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 350e3, 400e3],
  },
  {
    name: '4 KB',
    bytes: 4096,
    n: 200_000,
    quickN: 60_000,
    rates: [20e3, 40e3, 60e3, 80e3, 100e3, 120e3, 140e3, 160e3],
  },
];
const FOLLOW_MAX_LEN = 10_000;
const FOLLOW_SECONDS = 3;

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function parseArgs(argv) {
  const opts = { quick: false, out: 'reader' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') opts.quick = true;
    else if (argv[i] === '--out') opts.out = argv[++i];
    else if (argv[i] === '--reader') continue;
    else throw new Error(`unknown option ${argv[i]}`);
  }
  return opts;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-reader-bench-'));
  const child = track(
    spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: 'ignore',
    }),
  );
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  for (let i = 0; ; i++) {
    try {
      await client.connect();
      break;
    } catch {
      if (i > 100) throw new Error('redis-server did not start');
      await sleep(50);
    }
  }
  return {
    port,
    url,
    client,
    pid: child.pid,
    async cpuMs() {
      const info = await client.info('cpu');
      const f = (k) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)[1]);
      return (f('used_cpu_sys') + f('used_cpu_user')) * 1000;
    },
    async stop() {
      client.disconnect();
      child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startHub(dir, redisUrl, stream, maxLen) {
  const child = track(
    spawn(process.execPath, [HUB, dir], {
      env: { ...process.env, REDIS_URL: redisUrl, STREAM: stream, MAX_LEN: String(maxLen) },
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const line = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`hub exited ${code}`)));
  });
  const { port } = JSON.parse(line);
  return {
    port,
    pause: () => child.kill('SIGSTOP'),
    cpuMsFromProc() {
      const fields = fs.readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      // utime and stime, in clock ticks (100 per second on Linux).
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
    },
    resume: () => child.kill('SIGCONT'),
    async stats() {
      return JSON.parse(await get(port, '/stats'));
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

function get(port, pathname) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: pathname, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const ID = Buffer.from('id: ');
const RESET = Buffer.from('event: reset');

/** A client counting the frames with an id, their last id, and resets. */
function counter(port, transport) {
  return new Promise((resolve, reject) => {
    const c = {
      transport,
      ended: false,
      frames: 0,
      resets: 0,
      lastId: null,
      first: null,
      last: null,
      req: null,
      ids: false,
    };
    let tail = Buffer.alloc(0);
    c.req = http.get({ host: '127.0.0.1', port, path: `/events?t=${transport}`, agent: false }, (res) => {
      res.on('data', (chunk) => {
        const now = performance.now();
        const buf = tail.length ? Buffer.concat([tail, chunk]) : chunk;
        let at = buf.indexOf(ID);
        let lastAt = -1;
        let n = 0;
        while (at !== -1) {
          n++;
          lastAt = at;
          at = buf.indexOf(ID, at + 4);
        }
        // An id line not complete yet is counted with the next chunk.
        let keepFrom = buf.length - Math.min(buf.length, 3);
        if (n && buf.indexOf(10, lastAt) === -1) {
          n--;
          keepFrom = lastAt;
        }
        if (n) {
          c.frames += n;
          if (c.first === null) c.first = now;
          c.last = now;
          const id = keepFrom === lastAt ? buf.lastIndexOf(ID, lastAt - 1) : lastAt;
          if (id !== -1) c.lastId = buf.toString('latin1', id + 4, buf.indexOf(10, id));
        }
        if (buf.indexOf(RESET) !== -1) c.resets++;
        tail = Buffer.from(buf.subarray(keepFrom));
      });
      res.on('close', () => {
        c.ended = true;
      });
      resolve(c);
    });
    c.req.on('error', reject);
  });
}

async function waitFor(check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return r.stdout;
}

function runAsync(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${code}: ${err}`))));
  });
}

let streamCount = 0;

async function clientsOf(hub) {
  const clients = [await counter(hub.port, 'socket'), await counter(hub.port, 'stream')];
  // Both registered before anything is appended.
  await waitFor(() => false, 300);
  return clients;
}

/** Phase 1 and 2: the ceiling on a flood, then Redis's own XREAD figure. */
async function ceiling(build, redis, payload, n) {
  const stream = `reader-${++streamCount}`;
  const hub = await startHub(build.dir, redis.url, stream, n * 2);
  const clients = await clientsOf(hub);
  const data = JSON.stringify('x'.repeat(payload.bytes - 2));
  const [redisBefore, hubBefore] = [await redis.cpuMs(), (await hub.stats()).cpuMs];
  const started = performance.now();
  const fill = runAsync('redis-benchmark', [
    ...['-p', String(redis.port), '-n', String(n), '-c', '2', '-P', '100', '-q'],
    ...['XADD', stream, 'MAXLEN', '~', String(n * 2), '*', 'kind', 'broadcast', 'data', data],
  ]);
  await fill;
  const filled = performance.now();
  const [last] = await redis.client.xrevrange(stream, '+', '-', 'COUNT', 1);
  const lastId = last[0];
  const done = await waitFor(() => clients.every((c) => c.lastId === lastId || c.resets > 0 || c.ended), 120_000);
  const [redisAfter, hubStats] = [await redis.cpuMs(), await hub.stats()];
  for (const c of clients) c.req.destroy();
  await hub.stop();
  const first = Math.min(...clients.map((c) => c.first));
  const lastAt = Math.max(...clients.map((c) => c.last));
  const seconds = (lastAt - first) / 1000;
  const complete = done && clients.every((c) => c.frames === n && c.resets === 0 && c.lastId === lastId);
  // What Redis serves one reader: XREAD COUNT 1000 from the start, one connection.
  const bench = run('redis-benchmark', [
    ...['-p', String(redis.port), '-n', payload.bytes > 1000 ? '300' : '1500', '-c', '1', '-q'],
    ...['XREAD', 'COUNT', '1000', 'STREAMS', stream, '0'],
  ]);
  const rps = Number(/([\d.]+) requests per second/.exec(bench)[1]);
  await redis.client.del(stream);
  return {
    entries: n,
    appendPerSec: Math.round(n / ((filled - started) / 1000)),
    deliveredPerSec: Math.round(n / seconds),
    seconds: Number(seconds.toFixed(3)),
    complete,
    clients: clients.map((c) => ({ transport: c.transport, frames: c.frames, resets: c.resets, ended: c.ended })),
    hubCpuShare: Number(((hubStats.cpuMs - hubBefore) / 1000 / ((lastAt - started) / 1000)).toFixed(2)),
    redisCpuShare: Number(((redisAfter - redisBefore) / 1000 / ((lastAt - started) / 1000)).toFixed(2)),
    redisXreadEntriesPerSec: Math.round(rps * 1000),
  };
}

/**
 * Phase 1b: the reader alone. The instance is stopped (SIGSTOP) while
 * redis-benchmark appends N entries, then resumed: entries per second from
 * the resume to the last arrival at the slower client, with no producer
 * competing for the machine's cores.
 */
async function drain(build, redis, payload, n) {
  const stream = `reader-${++streamCount}`;
  const hub = await startHub(build.dir, redis.url, stream, n * 2);
  const clients = await clientsOf(hub);
  const data = JSON.stringify('x'.repeat(payload.bytes - 2));
  hub.pause();
  try {
    await runAsync('redis-benchmark', [
      ...['-p', String(redis.port), '-n', String(n), '-c', '2', '-P', '100', '-q'],
      ...['XADD', stream, 'MAXLEN', '~', String(n * 2), '*', 'kind', 'broadcast', 'data', data],
    ]);
  } catch (err) {
    // Never leave the instance stopped.
    hub.resume();
    throw err;
  }
  const [last] = await redis.client.xrevrange(stream, '+', '-', 'COUNT', 1);
  const lastId = last[0];
  // A stopped instance cannot answer /stats: its CPU time from /proc.
  const hubBefore = hub.cpuMsFromProc();
  const resumed = performance.now();
  hub.resume();
  const done = await waitFor(() => clients.every((c) => c.lastId === lastId || c.resets > 0 || c.ended), 120_000);
  const hubStats = await hub.stats();
  for (const c of clients) c.req.destroy();
  await hub.stop();
  const lastAt = Math.max(...clients.map((c) => c.last));
  const seconds = (lastAt - resumed) / 1000;
  await redis.client.del(stream);
  return {
    entries: n,
    deliveredPerSec: Math.round(n / seconds),
    seconds: Number(seconds.toFixed(3)),
    complete: done && clients.every((c) => c.frames === n && c.resets === 0 && c.lastId === lastId),
    clients: clients.map((c) => ({ transport: c.transport, frames: c.frames, resets: c.resets, ended: c.ended })),
    hubCpuShare: Number(((hubStats.cpuMs - hubBefore) / 1000 / seconds).toFixed(2)),
  };
}

/** Phase 3: one paced rate, maxLen 10,000; true when everything arrived, no reset. */
async function follow(build, redis, payload, rate) {
  const stream = `reader-${++streamCount}`;
  const hub = await startHub(build.dir, redis.url, stream, FOLLOW_MAX_LEN);
  const clients = await clientsOf(hub);
  const out = await runAsync(process.execPath, [
    PRODUCER,
    ...[redis.url, stream, String(FOLLOW_MAX_LEN), String(rate), String(FOLLOW_SECONDS), String(payload.bytes)],
  ]);
  const produced = JSON.parse(out);
  await waitFor(() => clients.every((c) => c.lastId === produced.lastId || c.resets > 0 || c.ended), 15_000);
  await sleep(100);
  for (const c of clients) c.req.destroy();
  await hub.stop();
  await redis.client.del(stream);
  const ok = clients.every((c) => c.frames === produced.sent && c.resets === 0 && c.lastId === produced.lastId);
  return {
    rate,
    achieved: Math.round(produced.sent / produced.seconds),
    ok,
    clients: clients.map((c) => ({ transport: c.transport, frames: c.frames, resets: c.resets, ended: c.ended })),
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const builds = [{ name: 'this build', dir: ROOT }];
  if (process.env.SSE_BENCH_BASELINE_DIR) builds.push({ name: 'baseline', dir: process.env.SSE_BENCH_BASELINE_DIR });
  const git = (dir, ...a) => spawnSync('git', ['-C', dir, ...a], { encoding: 'utf8' }).stdout.trim();
  for (const b of builds) b.commit = git(b.dir, 'rev-parse', '--short', 'HEAD');
  const result = {
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model,
      loadavgStart: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
    },
    redis: run('redis-server', ['--version']).trim(),
    node: process.version,
    quick: opts.quick,
    builds: [],
  };
  const redis = await startRedis();
  try {
    const only = process.env.READER_PAYLOADS?.split(',');
    for (const payload of PAYLOADS.filter((p) => !only || only.includes(p.name))) {
      for (const build of builds) {
        const n = opts.quick ? payload.quickN : payload.n;
        const c = await ceiling(build, redis, payload, n);
        console.log(`${build.name} ${payload.name} ceiling: ${JSON.stringify(c)}`);
        const d = await drain(build, redis, payload, n);
        console.log(`${build.name} ${payload.name} drain: ${JSON.stringify(d)}`);
        const rates = [];
        for (const rate of payload.rates) {
          const f = await follow(build, redis, payload, rate);
          console.log(`${build.name} ${payload.name} follow ${rate}/s: ${JSON.stringify(f)}`);
          rates.push(f);
          if (!f.ok) break;
        }
        const kept = rates.filter((r) => r.ok);
        let entry = result.builds.find((b) => b.name === build.name);
        if (!entry) {
          entry = { name: build.name, dir: build.dir, commit: build.commit, payloads: [] };
          result.builds.push(entry);
        }
        entry.payloads.push({
          payload: payload.name,
          ceiling: c,
          drain: d,
          follow: rates,
          followedPerSec: kept.length ? Math.max(...kept.map((r) => r.achieved)) : 0,
        });
      }
    }
  } finally {
    await redis.stop();
  }
  result.machine.loadavgEnd = fs.readFileSync('/proc/loadavg', 'utf8').trim();
  const base = path.join(__dirname, 'results', opts.out);
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(`${base}.md`, render(result));
  console.log(`wrote ${base}.md and .json`);
}

function render(r) {
  const lines = [
    '# Bus reader throughput (bench/reader.js)',
    '',
    `${r.date}; ${r.machine.cpus} × ${r.machine.model}; ${r.redis.split(' ').slice(0, 3).join(' ')}; Node ${r.node}${r.quick ? '; --quick' : ''}.`,
    `Load (/proc/loadavg) at the start: ${r.machine.loadavgStart}; at the end: ${r.machine.loadavgEnd}.`,
    '',
    'One instance, one client on the native socket writer and one on the stream transport, one local redis-server',
    '(a fresh stream per figure). **Ceiling**: redis-benchmark floods N pipelined XADDs; entries delivered per second',
    'from the first arrival to the last (every client got all N, no `reset`, maxLen above N). **Redis XREAD**:',
    "redis-benchmark's `XREAD COUNT 1000` on one connection × 1000, same stream, same run. **Reader alone**: the instance",
    'stopped (SIGSTOP) while the N entries are appended, then resumed: entries per second from the resume to the last',
    'arrival (all N, no `reset`), with no producer sharing the cores. **Followed**: the highest',
    `paced append rate (maxLen ${FOLLOW_MAX_LEN.toLocaleString('en')}, ${FOLLOW_SECONDS} s) at which both clients got every entry with no reset`,
    '(steps of the producer; `>` when the last step passed, so the reader was not the limit).',
    '',
    '| build | payload | ceiling, entries/s | N | append rate during it | instance CPU | Redis CPU | reader alone, entries/s | its instance CPU | Redis XREAD entries/s | followed, entries/s |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const b of r.builds) {
    for (const p of b.payloads) {
      const c = p.ceiling;
      const lastOk = p.follow.length && p.follow[p.follow.length - 1].ok;
      lines.push(
        `| ${b.name} (${b.commit}) | ${p.payload} | ${c.complete ? c.deliveredPerSec.toLocaleString('en') : `incomplete (${JSON.stringify(c.clients)})`} | ${c.entries.toLocaleString('en')} | ${c.appendPerSec.toLocaleString('en')}/s | ${c.hubCpuShare} | ${c.redisCpuShare} | ${p.drain.complete ? p.drain.deliveredPerSec.toLocaleString('en') : `incomplete (${JSON.stringify(p.drain.clients)})`} | ${p.drain.hubCpuShare} | ${c.redisXreadEntriesPerSec.toLocaleString('en')} | ${lastOk ? '>' : ''}${p.followedPerSec.toLocaleString('en')} |`,
      );
    }
  }
  lines.push('', 'Steps of the following figure (offered rate: achieved append rate, ok or what the clients got):', '');
  for (const b of r.builds) {
    for (const p of b.payloads) {
      const steps = p.follow.map(
        (f) =>
          `${f.rate / 1000}k: ${(f.achieved / 1000).toFixed(0)}k ${f.ok ? 'ok' : `FAIL ${JSON.stringify(f.clients)}`}`,
      );
      lines.push(`- ${b.name}, ${p.payload}: ${steps.join('; ')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
