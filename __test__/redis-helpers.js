// Utilities for the tests that need a real Redis: a throwaway redis-server
// on a free loopback port (no persistence), instances of the bus fixture
// (fixtures/bus-instance.js) in their own processes, and a TCP proxy that
// forwards to whichever of several instances is up.
//
// Cleanup: put `await redis.stop()` / `await instance.stop()` (or
// `await stopAll()`) in afterAll. As a last resort, an 'exit' handler
// SIGKILLs every redis-server and instance this module started that is still
// running, so a failed test does not leave one behind (it cannot run if the
// test process itself is SIGKILLed).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const FIXTURE = path.join(__dirname, 'fixtures', 'bus-instance.js');
const ROOT = path.join(__dirname, '..');
const OUTPUT_CAP = 64 * 1024;

// Jest gives each test file a copy of `process` whose 'exit' never fires;
// vm.runInThisContext evaluates in Node's main context, where `process` is
// the real one (outside Jest, the same object).
const realProcess = require('node:vm').runInThisContext('process');

/**
 * What is still running, kept on the real process so the one exit handler
 * covers every test file Jest loads this module for in a worker:
 * - live: children started here and not yet exited (for stopAll() and the
 *   exit handler). They are unref'd (process and pipes), so one left running
 *   does not keep a test process alive and the exit handler gets to run.
 * - liveDirs: temporary directories of running redis-servers.
 * - livePids: pids that are not our children (cluster workers) but die with an instance.
 */
const REGISTRY = Symbol.for('sse-helper-native/redis-helpers');
if (!realProcess[REGISTRY]) {
  const registry = { live: new Set(), liveDirs: new Set(), livePids: new Set() };
  realProcess[REGISTRY] = registry;
  realProcess.on('exit', () => {
    for (const c of registry.live) {
      try {
        c.kill('SIGKILL');
      } catch {
        // Already gone.
      }
    }
    for (const pid of registry.livePids) {
      try {
        realProcess.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    for (const dir of registry.liveDirs) fs.rmSync(dir, { recursive: true, force: true });
  });
}
const { live, liveDirs, livePids } = realProcess[REGISTRY];

function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.unref();
  for (const stream of [child.stdout, child.stderr]) stream?.unref?.();
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Resolves with { code, signal } once `child` has exited (at once if it
 * has). Holds a timer meanwhile: the child is unref'd, so without it a
 * script awaiting this could end before the exit is seen.
 */
function exited(child, { hold = true } = {}) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    const timer = hold ? setInterval(() => {}, 1000) : null;
    child.once('exit', (code, signal) => {
      clearInterval(timer);
      resolve({ code, signal });
    });
  });
}

/** Sends `signal`, waits for the exit; SIGKILL after `graceMs` if it has not happened. */
async function terminate(child, signal = 'SIGTERM', graceMs = 10_000) {
  const done = exited(child);
  if (child.exitCode !== null || child.signalCode !== null) return done;
  child.kill(signal);
  if (signal === 'SIGKILL') return done;
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, graceMs);
  });
  const first = await Promise.race([done, late]);
  clearTimeout(timer);
  if (first) return first;
  child.kill('SIGKILL');
  return done;
}

/** Whether a process with this pid exists (any owner) and is not a zombie. */
function pidAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code !== 'EPERM') return false;
  }
  try {
    // "pid (comm) S ...": the state follows the last ')'.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return !fs.existsSync('/proc/self');
  }
}

/** Waits until `pid` (not necessarily our child) is gone. */
async function pidGone(pid, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still running after ${timeoutMs} ms`);
    await delay(10);
  }
}

/** Keeps the last OUTPUT_CAP characters a stream produced. */
function collect(stream) {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (d) => {
    text += d;
    if (text.length > OUTPUT_CAP) text = text.slice(-OUTPUT_CAP);
  });
  return () => text;
}

/** A port that was free on 127.0.0.1 a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Resolves with `launch(...ports)`, called with `count` distinct ports that
 * were free a moment ago. A port can be taken between that moment and the
 * server's bind (by a parallel suite's server, or as the local port of any
 * outgoing loopback connection, which draws from the same ephemeral range):
 * then the server exits with "Address already in use" and this tries again
 * with fresh ports, up to 5 times.
 */
async function onFreePorts(count, launch) {
  for (let attempt = 1; ; attempt++) {
    const ports = new Set();
    while (ports.size < count) ports.add(await freePort());
    try {
      return await launch(...ports);
    } catch (err) {
      if (attempt >= 5 || !/already in use/i.test(err.message)) throw err;
    }
  }
}

// ---------------------------------------------------------------------------
// RESP

/** One command as a RESP array of bulk strings. */
function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

/**
 * Parses one RESP2/RESP3 value at `offset`: { value, next }, or null when
 * `buf` does not hold all of it yet. Bulk strings become strings, errors
 * Error objects (with .redis = true), nulls null, maps plain objects.
 */
function parseReply(buf, offset = 0) {
  if (offset >= buf.length) return null;
  const lineEnd = buf.indexOf('\r\n', offset);
  if (lineEnd < 0) return null;
  const type = String.fromCharCode(buf[offset]);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, next };
    case '-': {
      const err = new Error(line);
      err.redis = true;
      return { value: err, next };
    }
    case ':':
      return { value: Number(line), next };
    case '(':
      return { value: BigInt(line), next };
    case ',':
      return { value: Number(line.replace('inf', 'Infinity')), next };
    case '#':
      return { value: line === 't', next };
    case '_':
      return { value: null, next };
    case '$':
    case '=':
    case '!': {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (next + len + 2 > buf.length) return null;
      const text = buf.toString('utf8', next, next + len);
      if (type === '!') {
        const err = new Error(text);
        err.redis = true;
        return { value: err, next: next + len + 2 };
      }
      return { value: type === '=' ? text.slice(4) : text, next: next + len + 2 };
    }
    case '*':
    case '~':
    case '>':
    case '%': {
      const count = Number(line);
      if (count < 0) return { value: null, next };
      const items = [];
      let at = next;
      for (let i = 0; i < (type === '%' ? count * 2 : count); i++) {
        const item = parseReply(buf, at);
        if (!item) return null;
        items.push(item.value);
        at = item.next;
      }
      if (type !== '%') return { value: items, next: at };
      const map = {};
      for (let i = 0; i < items.length; i += 2) map[items[i]] = items[i + 1];
      return { value: map, next: at };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)} at ${offset}`);
  }
}

/**
 * Sends one command to 127.0.0.1:`port` on a fresh connection and resolves
 * with the parsed reply; rejects on a Redis error reply or a socket error.
 */
function redisCommand(port, args, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(
      () => finish(new Error(`redis ${args[0]} on port ${port}: no reply in ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('error', (err) => finish(err));
    socket.on('close', () => finish(new Error(`redis ${args[0]} on port ${port}: connection closed before a reply`)));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let reply;
      try {
        reply = parseReply(buf, 0);
      } catch (err) {
        return finish(err);
      }
      if (!reply) return;
      if (reply.value instanceof Error && reply.value.redis) finish(reply.value);
      else finish(null, reply.value);
    });
    socket.write(encodeCommand(args));
  });
}

// ---------------------------------------------------------------------------
// redis-server

function findRedisServer() {
  // SSE_TEST_REDIS_SERVER=valkey-server runs every Redis test on Valkey.
  const wanted = process.env.SSE_TEST_REDIS_SERVER || 'redis-server';
  if (wanted.includes('/')) return wanted;
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const candidate of [...dirs.map((d) => path.join(d, wanted)), `/usr/bin/${wanted}`]) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  throw new Error(
    `${wanted} not found (on PATH or /usr/bin/${wanted}): run \`apt-get install ${wanted}\` ` +
      '(or .ci/run, which installs it) to run the tests that need Redis',
  );
}

/**
 * Waits until `child` (a redis-server or redis-sentinel, `name`) answers
 * PING on `port` as itself: INFO's process_id is its pid, so a server that
 * took the port first is not taken for it (ours then exits, and the error
 * carries its output, "already in use" included, for onFreePorts).
 */
async function answering(child, port, name, output, spawnError = () => undefined) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const failed = spawnError();
    if (failed) throw failed;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} on port ${port} exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
    }
    try {
      if ((await redisCommand(port, ['PING'], 1000)) === 'PONG') {
        const info = await redisCommand(port, ['INFO', 'server'], 1000);
        if (info.includes(`process_id:${child.pid}\r\n`)) return;
      }
    } catch {
      // Not listening yet, or LOADING.
    }
    if (Date.now() > deadline) {
      await terminate(child, 'SIGKILL');
      throw new Error(`${name} on port ${port} did not answer PING within 10 s:\n${output()}`);
    }
    await delay(20);
  }
}

/** Starts redis-server on `port`; resolves once it answers PING. */
async function launchRedis(binary, port, extraArgs) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = spawn(binary, [...args, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const output = () => stdout() + stderr();
  liveDirs.add(dir);
  child.once('exit', () => {
    fs.rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  });
  let spawnError = null;
  child.once('error', (err) => {
    spawnError = err;
  });

  await answering(child, port, 'redis-server', output, () => spawnError);
  return { child, output };
}

/**
 * Starts a throwaway redis-server on a free loopback port, without
 * persistence, in a fresh temporary directory. `args` are extra
 * redis-server arguments, e.g. ['--maxmemory', '10mb'].
 *
 * Resolves with { port, url, pid, stop(), kill(), restart(), command(...args), output() }.
 * Put `await redis.stop()` in afterAll.
 */
async function startRedis({ args = [] } = {}) {
  const binary = findRedisServer();
  let current;
  const port = await onFreePorts(1, async (free) => {
    current = await launchRedis(binary, free, args);
    return free;
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** The pid of the running redis-server (changes on restart). */
    get pid() {
      return current.child.pid;
    },
    /** Whether the server process is running. */
    get running() {
      return current.child.exitCode === null && current.child.signalCode === null;
    },
    /** SIGTERM (SIGKILL after 5 s), resolves with { code, signal } once it has exited. */
    stop: () => terminate(current.child, 'SIGTERM', 5000),
    /** SIGKILL: Redis disappears at once. Resolves with { code, signal } once it has exited. */
    kill: () => terminate(current.child, 'SIGKILL'),
    /** Starts a new, empty redis-server on the same port (stops the running one first). */
    async restart() {
      await terminate(current.child, 'SIGTERM', 5000);
      current = await launchRedis(binary, port, args);
    },
    /** Sends one command on a fresh connection: `await redis.command('XLEN', 'sse')`. */
    command: (...cmd) => redisCommand(port, cmd),
    /** What the running redis-server has logged (the last 64 KiB of stdout and stderr). */
    output: () => current.output(),
  };
}

/**
 * Starts a Sentinel (redis-server --sentinel) on a free loopback port that
 * monitors the master on `masterPort` as `name` (quorum 2, down after 1 s,
 * failover timeout 4 s), its config file in a fresh temporary directory
 * (Sentinel rewrites it). `config`: more lines for that file (TLS).
 *
 * Resolves with { port, stop(), command(...args), output() }.
 */
function startSentinel(masterPort, { name = 'm', config = [] } = {}) {
  return onFreePorts(1, (port) => launchSentinel(findRedisServer(), port, masterPort, name, config));
}

async function launchSentinel(binary, port, masterPort, name, config) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-sentinel-'));
  liveDirs.add(dir);
  const conf = path.join(dir, 'sentinel.conf');
  fs.writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${masterPort} 2`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 4000`,
      `sentinel parallel-syncs ${name} 1`,
      ...config,
      '',
    ].join('\n'),
  );
  const child = spawn(binary, [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const output = () => stdout() + stderr();
  child.once('exit', () => {
    fs.rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  });
  await answering(child, port, 'redis-sentinel', output);
  return {
    port,
    stop: () => terminate(child, 'SIGTERM', 5000),
    command: (...cmd) => redisCommand(port, cmd),
    output,
  };
}

// ---------------------------------------------------------------------------
// Redis Cluster

/** The nodes of `CLUSTER NODES` on `port`: { id, port, master, myself (flags), replicaOf, failed, slots: [[from, to]] }. */
async function clusterNodes(port) {
  const text = String(await redisCommand(port, ['CLUSTER', 'NODES'], 2000));
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, address, flags, replicaOf, , , , , ...slots] = line.split(' ');
      return {
        id,
        port: Number(address.split('@')[0].split(':').pop()),
        master: flags.split(',').includes('master'),
        myself: flags.split(',').includes('myself'),
        failed: /fail/.test(flags),
        replicaOf: replicaOf === '-' ? null : replicaOf,
        slots: slots.filter((s) => !s.startsWith('[')).map((s) => s.split('-').map(Number)),
      };
    });
}

/**
 * Starts a Redis Cluster on loopback: `masters` masters with `replicas`
 * replicas each (redis-server --cluster-enabled, joined by
 * `redis-cli --cluster create`), node timeout 1 s (a failed master's
 * replica is promoted within a few seconds). Resolves once every node says
 * `cluster_state:ok` and knows every other, and every replica is in sync.
 *
 * Resolves with { nodes: [{ port, id, kill(), stop(), command(...) }], url
 * (redis+cluster://, every node), command(port, ...args), owner(slot) (the
 * live node that serves it, by its own word), migrate(slot, to), stop() }.
 */
async function startRedisCluster({ masters = 3, replicas = 0 } = {}) {
  const binary = findRedisServer();
  const nodes = [];
  for (let i = 0; i < masters * (1 + replicas); i++) {
    // The cluster bus on a port of its own (not port + 10000, which may be taken).
    const { port, child, output } = await onFreePorts(2, async (port, busPort) => ({
      port,
      ...(await launchRedis(binary, port, [
        '--cluster-enabled',
        'yes',
        '--cluster-port',
        String(busPort),
        '--cluster-node-timeout',
        '1000',
        '--cluster-config-file',
        'nodes.conf',
      ])),
    }));
    nodes.push({
      port,
      child,
      command: (...cmd) => redisCommand(port, cmd),
      kill: () => terminate(child, 'SIGKILL'),
      stop: () => terminate(child, 'SIGTERM', 5000),
      /** What the node has logged (the last 64 KiB). */
      output,
      get running() {
        return child.exitCode === null && child.signalCode === null;
      },
    });
  }
  for (const node of nodes) node.id = String(await node.command('CLUSTER', 'MYID'));
  const cli = spawn(
    path.join(path.dirname(binary), binary.endsWith('valkey-server') ? 'valkey-cli' : 'redis-cli'),
    [
      '--cluster',
      'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  track(cli);
  const cliOut = collect(cli.stdout);
  const cliErr = collect(cli.stderr);
  const { code } = await exited(cli);
  if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code}):\n${cliOut()}${cliErr()}`);
  const live = () => nodes.filter((n) => n.running);
  const waitOk = async (what) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      let ok = true;
      for (const node of live()) {
        try {
          const info = String(await node.command('CLUSTER', 'INFO'));
          const known = Number(/cluster_known_nodes:(\d+)/.exec(info)?.[1]);
          if (!info.includes('cluster_state:ok') || known !== nodes.length) ok = false;
        } catch {
          ok = false;
        }
      }
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await delay(50);
    }
  };
  await waitOk('the cluster to form');
  // A replica that never synced is never promoted: each must be in sync.
  for (const deadline = Date.now() + 30_000; ; await delay(50)) {
    let synced = true;
    for (const node of nodes) {
      const info = String(await node.command('INFO', 'replication'));
      if (info.includes('role:slave') && !info.includes('master_link_status:up')) synced = false;
    }
    if (synced) break;
    if (Date.now() > deadline) throw new Error('timed out waiting for the replicas to sync');
  }
  // The node that serves `slot` by its own word (another node's view can
  // lag behind a migration or a failover).
  const owner = async (slot) => {
    for (const node of live()) {
      try {
        const me = (await clusterNodes(node.port)).find((n) => n.myself);
        if (me?.master && me.slots.some(([from, to = from]) => slot >= from && slot <= to)) return node;
      } catch {
        // Not answering: ask another.
      }
    }
    return undefined;
  };
  return {
    nodes,
    url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    command: (port, ...cmd) => redisCommand(port, cmd),
    owner,
    waitOk,
    /**
     * Moves `slot` to the master `to` the way redis-cli --cluster reshard
     * does: IMPORTING / MIGRATING, MIGRATE of its keys in batches, then
     * SETSLOT NODE on both and on every other master.
     */
    async migrate(slot, to) {
      const from = await owner(slot);
      await to.command('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
      await from.command('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
      for (;;) {
        const keys = await from.command('CLUSTER', 'GETKEYSINSLOT', slot, 10);
        if (keys.length === 0) break;
        await from.command('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...keys);
      }
      await to.command('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
      await from.command('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
      for (const node of live()) {
        if (node !== from && node !== to && (await clusterNodes(node.port)).find((n) => n.id === node.id)?.master) {
          await node.command('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
        }
      }
    },
    stop: () => Promise.all(live().map((n) => n.stop())),
  };
}

// ---------------------------------------------------------------------------
// Bus fixture instances

/**
 * Spawns `node __test__/fixtures/bus-instance.js` with `env` added to this
 * process's environment (a value of undefined removes the variable) and
 * resolves once it prints its first stdout line, JSON {"port":N,...}.
 * Rejects with the child's stderr if it exits first, or after 30 s.
 *
 * Resolves with { port, url, pid, child, info, workers, exited, stop(), kill(), stderr() }:
 * `info` is the parsed line, `workers` its worker pids in CLUSTER mode,
 * `exited` a promise of { code, signal }.
 */
function spawnInstance(env = {}, { timeoutMs = 30_000 } = {}) {
  const childEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = String(v);
  }
  const child = spawn(process.execPath, [FIXTURE], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const stderr = collect(child.stderr);
  // No timer held: this promise lives as long as the instance.
  const exit = exited(child, { hold: false });

  return new Promise((resolve, reject) => {
    let line = '';
    let settled = false;
    const fail = (message) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${message}\n--- bus-instance stderr ---\n${stderr()}`));
    };
    const timer = setTimeout(() => {
      fail(`bus-instance printed no ready line within ${timeoutMs} ms`);
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => fail(`bus-instance could not start: ${err.message}`));
    // 'close' rather than 'exit': by then all of stderr has been read.
    child.once('close', (code, signal) => fail(`bus-instance exited (${code ?? signal}) before it was ready`));

    child.stdout.setEncoding('utf8');
    const onData = (d) => {
      if (settled) return;
      line += d;
      const nl = line.indexOf('\n');
      if (nl < 0) return;
      let info;
      try {
        info = JSON.parse(line.slice(0, nl));
      } catch {
        fail(`bus-instance's first line is not JSON: ${JSON.stringify(line.slice(0, nl))}`);
        child.kill('SIGKILL');
        return;
      }
      settled = true;
      clearTimeout(timer);
      // Keep draining stdout so the child never blocks on a full pipe.
      child.stdout.off('data', onData);
      child.stdout.resume();
      const workers = Array.isArray(info.workers) ? info.workers : [];
      for (const pid of workers) livePids.add(pid);
      const reapWorkers = async () => {
        for (const pid of workers) {
          await pidGone(pid);
          livePids.delete(pid);
        }
      };
      resolve({
        port: info.port,
        url: `http://127.0.0.1:${info.port}`,
        pid: child.pid,
        child,
        info,
        workers,
        exited: exit,
        /** SIGTERM (SIGKILL after 10 s); resolves with { code, signal } once it (and its workers) have exited. */
        async stop() {
          const result = await terminate(child, 'SIGTERM', 10_000);
          await reapWorkers();
          return result;
        },
        /** SIGKILL to the instance (and its cluster workers); resolves once they have exited. */
        async kill() {
          for (const pid of workers) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // Already gone.
            }
          }
          const result = await terminate(child, 'SIGKILL');
          await reapWorkers();
          return result;
        },
        stderr,
      });
    };
    child.stdout.on('data', onData);
  });
}

// ---------------------------------------------------------------------------
// TCP proxy

/**
 * A TCP proxy on 127.0.0.1 (free port) that connects each new connection to
 * the first of `targetPorts` that accepts one (tried in order) and pipes
 * both ways; a connection no target accepts is closed. The array is read per
 * connection, so a test may change it in place.
 *
 * Resolves with { port, close() }; close() stops listening and destroys
 * every proxied connection.
 */
async function tcpProxy(targetPorts) {
  const sockets = new Set();
  const keep = (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  const connectFirst = async (ports) => {
    for (const port of ports) {
      const upstream = await new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        const refused = () => resolve(null);
        s.once('error', refused);
        s.once('connect', () => {
          s.off('error', refused);
          s.on('error', () => s.destroy());
          resolve(s);
        });
      });
      if (upstream) return upstream;
    }
    return null;
  };

  const server = net.createServer({ pauseOnConnect: true }, async (client) => {
    keep(client);
    client.on('error', () => client.destroy());
    const upstream = await connectFirst([...targetPorts]);
    if (!upstream || client.destroyed) {
      upstream?.destroy();
      client.destroy();
      return;
    }
    keep(upstream);
    upstream.once('close', () => client.destroy());
    client.once('close', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** Stops every redis-server and instance this module started that is still running. */
async function stopAll() {
  await Promise.all([...live].map((c) => terminate(c, 'SIGTERM', 5000)));
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await Promise.all([...livePids].map((pid) => pidGone(pid).then(() => livePids.delete(pid))));
}

/**
 * Steps to undo after each test (or after all, with `hook` afterAll): push
 * functions to the array returned; they run last first, a failing one does
 * not stop the next, and then every process these helpers started is
 * stopped.
 */
function cleanupsAfterEach(hook = afterEach) {
  const cleanups = [];
  hook(async () => {
    for (const undo of cleanups.splice(0).reverse()) {
      try {
        await undo();
      } catch {
        // Best effort: the next step still runs.
      }
    }
    await stopAll();
  });
  return cleanups;
}

module.exports = {
  cleanupsAfterEach,
  onFreePorts,
  launchRedis,
  startRedis,
  startSentinel,
  startRedisCluster,
  clusterNodes,
  spawnInstance,
  tcpProxy,
  stopAll,
  freePort,
  redisCommand,
  parseReply,
  encodeCommand,
  findRedisServer,
};
