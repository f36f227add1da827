// Bun and Deno as runtimes: the packed package (scripts/pack.js, as
// packaging.spec.js installs it: this platform's package and the main one,
// no registry) installed into a scratch Express 5 app, whose server
// (fixtures/runtime-server.mjs) runs under Bun and under Deno, the versions
// pinned in devDependencies, and under Node as the control. Real clients
// from this process (raw sockets for the exact bytes, the `eventsource`
// package) check what each runtime puts on the wire, the transport and its
// reason in getStats() and NODE_DEBUG, and the Redis bus between a Bun and
// a Deno process.

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { EventSource } = require('eventsource');
const { rawGet, waitFor } = require('./helpers.js');
const { startRedis } = require('./redis-helpers.js');

const root = path.join(__dirname, '..');
const devDependencies = require('../package.json').devDependencies;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-helper-runtimes-'));
const appDir = path.join(work, 'app');

/**
 * The runtime's executable from node_modules, checked to be the pinned
 * version. After its postinstall (allowed in package.json's allowScripts)
 * it sits in the wrapper package; where install scripts were refused
 * (npm's strict-allow-scripts, --ignore-scripts), it is still in the
 * platform package npm installed as an optionalDependency.
 */
function executable(name, candidates) {
  const want = devDependencies[name];
  const tried = [];
  for (const rel of candidates) {
    const file = path.join(root, 'node_modules', rel);
    let version = '';
    try {
      version = execFileSync(file, ['--version'], { encoding: 'utf8', stdio: 'pipe', timeout: 30_000 });
    } catch (err) {
      tried.push(`${rel}: ${err.code ?? String(err.stderr).split('\n')[0]}`);
      continue;
    }
    if (version.includes(want)) return file;
    tried.push(`${rel}: ${version.trim()}, not ${want}`);
  }
  throw new Error(`no ${name} ${want} in node_modules (run npm install); tried ${tried.join('; ')}`);
}

const arch = process.arch === 'arm64' ? 'aarch64' : 'x64';
const RUNTIMES = {
  Bun: {
    command: () => executable('bun', ['bun/bin/bun.exe', `@oven/bun-${process.platform}-${arch}/bin/bun`]),
    // No auto-install (the app has its node_modules), no .env files.
    args: ['--no-install', '--no-env-file'],
    // Bun's HTTP server (uWebSockets) keeps the socket to itself.
    reason: "noFd: no file descriptor (Bun's node:http sockets expose none)",
  },
  Deno: {
    command: () =>
      executable('deno', [
        'deno/deno',
        `@deno/${process.platform}-${process.arch === 'arm64' ? 'arm64' : 'x64'}-glibc/deno`,
      ]),
    // npm packages from the app's own node_modules (manual: Deno neither
    // installs nor changes it), nothing remote; --allow-all covers the
    // native addon (--allow-ffi), the network, env and files.
    args: ['run', '--allow-all', '--node-modules-dir=manual', '--no-remote', '--cached-only'],
    // Deno's TCPWrap has no `fd` (fdForIpc() hands out a duplicate only).
    reason: "noFd: no file descriptor (Deno's node:http sockets have no fd property)",
  },
  Node: { command: () => process.execPath, args: [], reason: null },
};

/** Every app started, stopped in afterAll whatever happened. */
const apps = new Set();
// And SIGKILLed if this process exits first (a test that timed out): the
// real process's 'exit', as redis-helpers.js does (Jest's copy never fires).
const children = new Set();
require('node:vm')
  .runInThisContext('process')
  .once('exit', () => {
    for (const child of children) child.kill('SIGKILL');
  });

beforeAll(() => {
  const { pack } = require('../scripts/pack.js');
  const packed = pack(path.join(work, 'packages'), { log: () => {} });
  const host = packed.platforms[`${process.platform}-${process.arch}-gnu`];
  fs.mkdirSync(appDir);
  fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({ name: 'runtime-app', private: true }));
  // Like packaging.spec.js: the platform package's tarball, then the main one.
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', host, packed.main, 'express@5'], {
    cwd: appDir,
    env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' },
    stdio: 'pipe',
  });
  fs.copyFileSync(path.join(__dirname, 'fixtures', 'runtime-server.mjs'), path.join(appDir, 'server.mjs'));
}, 120_000);

afterAll(async () => {
  await Promise.all([...apps].map((app) => app.stop()));
  fs.rmSync(work, { recursive: true, force: true });
});

/**
 * Starts the app under `runtime` with NODE_DEBUG=sse-helper-native; resolves
 * once it printed its ready line, with { port, pid, runtime, entry, url,
 * stderr(), op(name, ...args), batch(...calls), stop() }.
 */
async function startApp(runtime, env = {}) {
  const { command, args } = RUNTIMES[runtime];
  const child = spawn(command(), [...args, 'server.mjs'], {
    cwd: appDir,
    env: {
      ...process.env,
      NODE_DEBUG: 'sse-helper-native',
      // Deno: its cache in the scratch directory, and no update check (no network).
      DENO_DIR: path.join(work, 'deno-dir'),
      DENO_NO_UPDATE_CHECK: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  children.add(child);
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const app = {
    stderr: () => stderr,
    /** SIGTERM (SIGKILL after 5 s); resolves with { code, signal } once it has exited. */
    async stop() {
      apps.delete(app);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      return exited;
    },
  };
  apps.add(app);
  await waitFor(() => stdout.includes('\n') || child.exitCode !== null, `${runtime}'s ready line`, 30_000);
  if (!stdout.includes('\n')) throw new Error(`${runtime} exited (${child.exitCode}):\n${stdout}\n${stderr}`);
  Object.assign(app, JSON.parse(stdout.split('\n')[0]));
  app.url = `http://127.0.0.1:${app.port}`;
  const post = (body) =>
    new Promise((resolve, reject) => {
      const req = http.request(
        `${app.url}/op`,
        { method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          let text = '';
          res.on('data', (d) => {
            text += d;
          });
          res.on('end', () => {
            const answer = JSON.parse(text);
            if (answer.error) reject(new Error(`${runtime}: ${JSON.stringify(answer.error)}`));
            else resolve(answer.result);
          });
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  app.op = (op, ...opArgs) => post({ op, args: opArgs });
  app.batch = (...calls) => post({ batch: calls });
  return app;
}

/** A raw client's exact bytes, the Date header's value masked (the only one that changes). */
const wire = (client) => client.raw().replace(/\r\nDate: [^\r]+\r\n/, '\r\nDate: *\r\n');

const HEAD =
  'HTTP/1.1 200 OK\r\n' +
  'X-Powered-By: Express\r\n' +
  'Content-Type: text/event-stream; charset=utf-8\r\n' +
  'Cache-Control: no-cache, no-transform\r\n' +
  'Connection: keep-alive\r\n' +
  'X-Accel-Buffering: no\r\n' +
  'Date: *\r\n' +
  'Transfer-Encoding: chunked\r\n' +
  '\r\n';

/** One HTTP chunk carrying `text`. */
const chunk = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
const LAST_CHUNK = '0\r\n\r\n';

/** Waits for `client` to have received at least `head` plus `body`, then asserts it is exactly that. */
async function expectWire(client, body, what) {
  const want = HEAD + body;
  await client.waitFor((c) => wire(c).length >= want.length, what, 10_000);
  expect(wire(client)).toBe(want);
}

describe.each(['Bun', 'Deno', 'Node'])('%s', (runtime) => {
  let app;
  const clients = [];
  const sources = [];

  beforeAll(async () => {
    app = await startApp(runtime);
  }, 60_000);
  afterEach(() => {
    for (const c of clients.splice(0)) c.destroy();
    for (const es of sources.splice(0)) es.close();
  });
  afterAll(() => app?.stop());

  const connect = (query, headers) => {
    const c = rawGet(app.port, `/events?${query}`, headers);
    clients.push(c);
    return c;
  };
  const clientCount = (n) => waitFor(async () => (await app.op('getClientCount')) === n, `${n} client(s)`, 10_000);

  test('runs the installed tarball, under the pinned version', () => {
    expect(app.entry).toBe(path.join(appDir, 'node_modules', 'sse-helper-native', 'index.js'));
    const version = { Bun: devDependencies.bun, Deno: devDependencies.deno, Node: process.versions.node }[runtime];
    expect(app.runtime).toBe(`${runtime.toLowerCase()} ${version}`);
  });

  test('broadcast, channels, sendToClient, removeClient, cleanupStaleClients: the exact bytes', async () => {
    const a = connect('id=a&channel=room');
    const b = connect('id=b');
    await clientCount(2);
    await a.waitFor((c) => c.raw().includes('\r\n\r\n'), 'the head');
    expect(await app.op('publish', 'room', { r: 1 })).toBe(1);
    expect(await app.op('broadcast', { all: 1 })).toBe(2);
    expect(await app.op('sendToClient', 'b', { to: 'b' })).toBe(true);
    expect(await app.op('sendToClient', 'nobody', 1)).toBe(false);
    expect(await app.op('send', 'a', 'hi')).toBe(true);
    // The broadcast's id is `<epoch>:<n>` (history on): read it off a's bytes.
    await a.waitFor((c) => /id: [a-z][a-z0-9]{7}:\d+\n/.test(c.raw()), 'the broadcast id');
    const id = a.raw().match(/id: ([a-z][a-z0-9]{7}:\d+)\n/)[1];
    expect(await app.op('removeClient', 'b')).toBe(true);
    await expectWire(a, chunk('data: {"r":1}\n\n') + chunk(`id: ${id}\ndata: {"all":1}\n\n`) + chunk('data: "hi"\n\n'));
    // b was ended by removeClient: the last chunk (the connection stays open for keep-alive).
    await expectWire(b, chunk(`id: ${id}\ndata: {"all":1}\n\n`) + chunk('data: {"to":"b"}\n\n') + LAST_CHUNK);
    expect(await app.op('getClientCount')).toBe(1);
    // a has been connected longer than 1 ms by now; poll, never time it.
    let removed = 0;
    await waitFor(async () => {
      removed += await app.op('cleanupStaleClients', 1);
      return removed > 0;
    }, 'cleanupStaleClients(1) to end a');
    expect(removed).toBe(1);
    // Ended: the last chunk (the connection itself stays open for keep-alive).
    await expectWire(
      a,
      chunk('data: {"r":1}\n\n') + chunk(`id: ${id}\ndata: {"all":1}\n\n`) + chunk('data: "hi"\n\n') + LAST_CHUNK,
    );
    expect(await app.op('getClientCount')).toBe(0);
  });

  test('broadcastAndClose: every client gets the frame, then the end of its body', async () => {
    const c1 = connect('id=c1');
    const c2 = connect('id=c2');
    await clientCount(2);
    const [sent, count] = await app.batch(['broadcastAndClose', { bye: true }], ['getClientCount']);
    expect([sent, count]).toEqual([2, 0]);
    await c1.waitFor((c) => c.raw().includes('{"bye":true}'), 'the last event');
    const id = c1.raw().match(/id: ([a-z][a-z0-9]{7}:\d+)\n/)[1];
    for (const c of [c1, c2]) await expectWire(c, chunk(`id: ${id}\ndata: {"bye":true}\n\n`) + LAST_CHUNK, 'the end');
  });

  test('replay with Last-Event-ID: the missed events, in order, then live; an unknown id gets event: reset', async () => {
    // With no client the broadcasts reach no one, but the ring keeps them.
    expect(await app.batch(['broadcast', { n: 1 }], ['broadcast', { n: 2 }], ['broadcast', { n: 3 }])).toEqual([
      0, 0, 0,
    ]);
    const probe = connect('id=probe');
    await clientCount(1);
    expect(await app.op('broadcast', { n: 4 })).toBe(1);
    await probe.waitFor((c) => c.raw().includes('{"n":4}'), 'the probe event');
    const [, epoch, last] = probe.raw().match(/id: ([a-z][a-z0-9]{7}):(\d+)\n/);
    const n4 = Number(last);
    expect(await app.op('removeClient', 'probe')).toBe(true);
    await probe.waitFor((c) => c.raw().endsWith(LAST_CHUNK), 'the end of the body');

    const resumed = connect('id=resumed', { 'Last-Event-ID': `${epoch}:${n4 - 3}` });
    await clientCount(1);
    expect(await app.op('broadcast', { n: 5 })).toBe(1);
    const frames = [2, 3, 4, 5].map((n) => `id: ${epoch}:${n4 - 4 + n}\ndata: {"n":${n}}\n\n`);
    await resumed.waitFor((c) => c.body().includes('{"n":5}'), 'the live event after the replay', 10_000);
    expect(resumed.body()).toBe(frames.join(''));
    expect(wire(resumed).startsWith(HEAD)).toBe(true);

    const lost = connect('id=lost', { 'Last-Event-ID': 'zzzzzzzz:1' });
    await lost.waitFor((c) => c.body().includes('\n\n'), 'the reset', 10_000);
    expect(lost.body()).toBe(`event: reset\nid: ${epoch}:${n4 + 1}\ndata: null\n\n`);
    await app.op('removeClient', 'resumed');
    await app.op('removeClient', 'lost');
    await clientCount(0);
  });

  test('an EventSource client gets every event once across a reconnection, resumed by Last-Event-ID', async () => {
    const es = new EventSource(`${app.url}/events?id=es`);
    sources.push(es);
    const got = [];
    es.onmessage = (e) => got.push([e.lastEventId, JSON.parse(e.data)]);
    let opens = 0;
    es.onopen = () => opens++;
    await clientCount(1);
    // retry: 50 lowers its reconnection delay; the client is then ended and
    // an event broadcast in the same run, so it can only reach it by replay.
    await app.op('broadcast', { es: 1 }, { retry: 50 });
    await waitFor(() => got.length === 1, 'the first event');
    const [removed, missed] = await app.batch(['removeClient', 'es'], ['broadcast', { es: 2 }]);
    expect([removed, missed]).toEqual([true, 0]);
    await waitFor(() => got.length === 2, 'the missed event, replayed after the reconnection', 10_000);
    await clientCount(1);
    expect(await app.op('broadcast', { es: 3 })).toBe(1);
    await waitFor(() => got.length === 3, 'the live event');
    expect(got.map(([, data]) => data)).toEqual([{ es: 1 }, { es: 2 }, { es: 3 }]);
    const ids = got.map(([id]) => id);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id).toMatch(/^[a-z][a-z0-9]{7}:\d+$/);
    expect(opens).toBe(2);
    es.close();
    await clientCount(0);
  });

  test(`getStats() and NODE_DEBUG name the transport${runtime === 'Node' ? ' (the native writer)' : ' (the stream, no fd)'}`, async () => {
    const c = connect('id=stats');
    await clientCount(1);
    await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'the head');
    const stats = await app.op('getStats');
    const native = runtime === 'Node';
    expect({ clients: stats.clients, stream: stats.streamConnections, socket: stats.socketConnections }).toEqual({
      clients: 1,
      stream: native ? 0 : 1,
      socket: native ? 1 : 0,
    });
    // Counted by reason since the app started: none on Node; elsewhere
    // every connection so far, and only as one without an fd.
    const counted = Object.keys(stats.streamFallbacks).filter((reason) => stats.streamFallbacks[reason] > 0);
    expect(counted).toEqual(native ? [] : ['noFd']);
    const transport = native ? 'socket (native writer)' : `stream (${RUNTIMES[runtime].reason})`;
    await waitFor(() => app.stderr().includes('register stats:'), 'the registration line');
    expect(app.stderr()).toContain(
      `SSE-HELPER-NATIVE ${app.pid}: register stats: transport ${transport}, 1 client(s)\n`,
    );
    await app.op('removeClient', 'stats');
    await clientCount(0);
  });

  test("SIGTERM: the fixture's close() ends its clients' bodies and the process exits 0", async () => {
    const c = connect('id=last');
    await clientCount(1);
    expect(await app.stop()).toEqual({ code: 0, signal: null });
    await c.waitFor((x) => x.raw().endsWith(LAST_CHUNK), 'the end of the body');
    expect(wire(c)).toBe(HEAD + LAST_CHUNK);
  });
});

describe('the Redis bus between a Bun and a Deno process', () => {
  let redis;
  let bun;
  let deno;
  const clients = [];

  beforeAll(async () => {
    redis = await startRedis();
    [bun, deno] = await Promise.all([
      startApp('Bun', { REDIS_URL: redis.url }),
      startApp('Deno', { REDIS_URL: redis.url }),
    ]);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await Promise.all([bun?.stop(), deno?.stop()]);
    await redis?.stop();
  });

  const connect = (app, query, headers) => {
    const c = rawGet(app.port, `/events?${query}`, headers);
    clients.push(c);
    return c;
  };

  test('broadcast, publish and sendToClient cross between the runtimes, the same bytes and stream ids on both', async () => {
    const onBun = connect(bun, 'id=on-bun&channel=room');
    const onDeno = connect(deno, 'id=on-deno');
    await waitFor(async () => (await bun.op('globalClientCount')) === 2, 'both clients, seen from Bun', 10_000);
    expect(await deno.op('globalClientCount')).toBe(2);

    expect(await bun.op('broadcast', { from: 'bun' })).toBe(1);
    expect(await deno.op('broadcast', { from: 'deno' })).toBe(1);
    expect(await deno.op('publish', 'room', { to: 'room' })).toBe(0);
    expect(await bun.op('sendToClient', 'on-deno', { to: 'on-deno' })).toBe(true);
    const everyone = (c) => c.body().includes('"from":"deno"');
    await onBun.waitFor((c) => everyone(c) && c.body().includes('"to":"room"'), "Bun's client: all", 10_000);
    await onDeno.waitFor((c) => everyone(c) && c.body().includes('"to":"on-deno"'), "Deno's client: all", 10_000);

    const ids = (c) => [...c.body().matchAll(/^id: (\d+-\d+)$/gm)].map((m) => m[1]);
    const [fromBun, fromDeno, toRoom] = ids(onBun);
    const toDeno = ids(onDeno)[2];
    expect(onBun.body()).toBe(
      `id: ${fromBun}\ndata: {"from":"bun"}\n\n` +
        `id: ${fromDeno}\ndata: {"from":"deno"}\n\n` +
        `id: ${toRoom}\ndata: {"to":"room"}\n\n`,
    );
    expect(onDeno.body()).toBe(
      `id: ${fromBun}\ndata: {"from":"bun"}\n\n` +
        `id: ${fromDeno}\ndata: {"from":"deno"}\n\n` +
        `id: ${toDeno}\ndata: {"to":"on-deno"}\n\n`,
    );
    for (const c of [onBun, onDeno]) expect(wire(c).startsWith(HEAD)).toBe(true);

    // A client of Deno resuming from Bun's first event gets, from the stream,
    // what it would have had (the broadcast after it: neither the channel's
    // event nor the one for another client), then live ones.
    const resumed = connect(deno, 'id=resumed', { 'Last-Event-ID': fromBun });
    await waitFor(async () => (await bun.op('globalClientCount')) === 3, 'the resumed client, seen from Bun', 10_000);
    expect(await bun.op('broadcast', { live: true })).toBe(1);
    await resumed.waitFor((c) => c.body().includes('"live":true'), 'the live event after the replay', 10_000);
    const live = ids(resumed).at(-1);
    expect(resumed.body()).toBe(`id: ${fromDeno}\ndata: {"from":"deno"}\n\nid: ${live}\ndata: {"live":true}\n\n`);
    expect((await redis.command('XLEN', 'sse')) >= 4).toBe(true);
    const [bunStats, denoStats] = await Promise.all([bun.op('getStats'), deno.op('getStats')]);
    expect([bunStats.socketConnections, denoStats.socketConnections]).toEqual([0, 0]);
  });
});

test('Deno without --allow-ffi: ERR_SSE_NO_BINARY says so, naming Deno, instead of a missing file', () => {
  const script = path.join(appDir, 'load.mjs');
  fs.writeFileSync(
    script,
    "try { await import('sse-helper-native'); console.log('loaded'); } catch (e) { console.log(e.code); console.log(e.message); }\n",
  );
  const { Deno } = RUNTIMES;
  const args = ['run', '--allow-read', '--allow-env', '--allow-sys', '--node-modules-dir=manual', '--no-remote'];
  const out = execFileSync(Deno.command(), [...args, '--cached-only', script], {
    cwd: appDir,
    encoding: 'utf8',
    env: { ...process.env, DENO_DIR: path.join(work, 'deno-dir'), DENO_NO_UPDATE_CHECK: '1' },
    timeout: 60_000,
  });
  const [code, message] = out.trim().split('\n');
  expect(code).toBe('ERR_SSE_NO_BINARY');
  expect(message).toContain(`(Deno ${devDependencies.deno})`);
  expect(message).toContain('Deno refused to load it: run Deno with --allow-ffi (or --allow-all)');
});
