'use strict';
// The documentation site (docs/): built once with `npm run docs:build`,
// served from docs/.vitepress/dist on 127.0.0.1, and every built page opened
// in headless Chromium (Debian's package, driven by playwright-core, as in
// browser.spec.js): it renders its heading with no console error, every
// internal link resolves to a built page, and every sample the pages include
// is shown exactly as its file in docs/examples/. Then each of those samples
// runs as a user runs it (`node docs/examples/<file>`, a real Express 5
// server on 127.0.0.1) against real clients (the `eventsource` package,
// Chromium, nginx, Redis, Jest and mocha), and the bytes and events its page
// documents are asserted. The browser part is skipped where no Chromium is
// installed (CI installs it: .ci/run); nginx and Redis come from
// global-setup.js.

const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { EventSource } = require('eventsource');
const { rawGet, waitFor } = require('./helpers.js');
const { NGINX, startNginx } = require('./nginx.js');
const { findRedisServer, startRedis, stopAll } = require('./redis-helpers.js');

const ROOT = path.join(__dirname, '..');
const DOCS = path.join(ROOT, 'docs');
const DIST = path.join(DOCS, '.vitepress', 'dist');
const EXAMPLES = path.join(DOCS, 'examples');
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const withChromium = CHROMIUM ? test : test.skip;
const withNginx = NGINX ? test : test.skip;
let redisServer;
try {
  redisServer = findRedisServer();
} catch {
  redisServer = undefined;
}
const withRedis = redisServer ? test : test.skip;

/** Runs a command to its end; rejects with its output when it fails. */
function run(command, args, options = {}) {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, ...options }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${command} ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`)));
      else resolve({ stdout, stderr });
    });
  });
}

/** Every file under `dir` whose name ends with `ext`, relative to `dir`. */
function filesUnder(dir, ext) {
  return fs
    .readdirSync(dir, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith(ext))
    .sort();
}

// ---------------------------------------------------------------------------
// The built site, served as static files

let site;

/** Serves DIST: `/` and `/dir/` as index.html, anything else as the file, else 404. */
async function serveSite() {
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css' };
  const server = http.createServer((req, res) => {
    let pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (pathname.endsWith('/')) pathname += 'index.html';
    const file = path.join(DIST, pathname);
    if (!file.startsWith(DIST) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** GET `url`: its status code. */
function statusOf(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      })
      .on('error', reject);
  });
}

let browser;

/** Headless Chromium, launched once for the file. */
async function chromium() {
  if (!browser) {
    const { chromium: launcher } = require('playwright-core');
    browser = await launcher.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
  }
  return browser;
}

beforeAll(async () => {
  await run('npm', ['run', 'docs:build']);
  site = await serveSite();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await site?.close();
});

test('the build made a page for every Markdown file, and the API reference from index.d.ts', () => {
  const pages = filesUnder(DOCS, '.md')
    .filter((f) => !f.startsWith('.vitepress') && !f.startsWith('examples'))
    .map((f) => f.replace(/\.md$/, '.html'));
  for (const page of pages)
    expect({ page, built: fs.existsSync(path.join(DIST, page)) }).toEqual({ page, built: true });
  for (const page of [
    'index.html',
    'getting-started.html',
    'migrating.html',
    'comparison.html',
    'api/index.html',
    'api/classes/SseHub.html',
  ]) {
    expect(fs.existsSync(path.join(DIST, page))).toBe(true);
  }
  for (const guide of [
    'own-route',
    'channels-replay',
    'reverse-proxies',
    'process-managers',
    'testing',
    'redis',
    'metrics-debugging',
    'troubleshooting',
  ]) {
    expect(fs.existsSync(path.join(DIST, 'guides', `${guide}.html`))).toBe(true);
  }
  // The reference has every method of the hub, from the types' own docs.
  const hub = fs.readFileSync(path.join(DOCS, 'api', 'classes', 'SseHub.md'), 'utf8');
  for (const method of ['addClient', 'broadcast', 'drainOnSignals', 'position', 'globalClientCount', 'close']) {
    expect(hub).toContain(`### ${method}()`);
  }
});

/** The samples each page includes (`<<< @/examples/<file>`), by built page. */
function includedSamples() {
  const samples = new Map();
  for (const md of filesUnder(DOCS, '.md').filter((f) => !f.startsWith('api') && !f.startsWith('.vitepress'))) {
    const text = fs.readFileSync(path.join(DOCS, md), 'utf8');
    const files = [...text.matchAll(/^<<< @\/examples\/([^{\s]+)/gm)].map((m) => m[1]);
    if (files.length > 0) samples.set(md.replace(/\.md$/, '.html'), files);
  }
  return samples;
}

test('every sample in docs/examples is on a page, and every page includes only files that exist', () => {
  const included = [...includedSamples().values()].flat();
  for (const file of included)
    expect({ file, exists: fs.existsSync(path.join(EXAMPLES, file)) }).toEqual({ file, exists: true });
  expect(fs.readdirSync(EXAMPLES).sort()).toEqual([...new Set(included)].sort());
});

withChromium(
  'every built page renders its heading with no console error, shows its samples exactly, and links only to built pages',
  async () => {
    const context = await (await chromium()).newContext();
    const pages = filesUnder(DIST, '.html').filter((f) => f !== '404.html');
    const samples = includedSamples();
    const linksOf = new Map(); // page -> the internal links it has
    const problems = [];
    // Four pages at a time: a page spends most of its time waiting for its
    // scripts and hydration, and the checks are per page. A page that
    // throws is a problem of its own, so every page is still checked and
    // the context closed.
    const queue = [...pages];
    const checkPage = async (file) => {
      const page = await context.newPage();
      try {
        await checkOpened(file, page);
      } catch (err) {
        problems.push({ file, threw: String(err?.message ?? err) });
      } finally {
        await page.close();
      }
    };
    const checkOpened = async (file, page) => {
      const errors = [];
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      page.on('pageerror', (err) => errors.push(err.message));
      page.on('response', (response) => {
        if (response.url().startsWith(site.url) && response.status() >= 400) {
          errors.push(`${response.status()} ${response.url()}`);
        }
      });
      const response = await page.goto(`${site.url}/${file}`, { waitUntil: 'load' });
      const heading = (await page.textContent('.vp-doc h1, h1'))?.trim();
      const title = await page.title();
      // Hydration done: VitePress's client script ran (a dead chunk would be a console error).
      await page.waitForFunction(() => document.querySelector('#app')?.__vue_app__ !== undefined);
      if (response.status() !== 200 || !heading || !title.includes('sse-helper-native') || errors.length > 0) {
        problems.push({ file, status: response.status(), heading, title, errors });
      }
      const codes = await page.$$eval('.vp-doc pre code', (nodes) => nodes.map((n) => n.textContent));
      for (const sample of samples.get(file) ?? []) {
        const text = fs.readFileSync(path.join(EXAMPLES, sample), 'utf8').replace(/\n$/, '');
        if (!codes.some((code) => code.replace(/\n$/, '') === text))
          problems.push({ file, sampleNotShownExactly: sample });
      }
      const hrefs = await page.$$eval('a[href]', (anchors) => anchors.map((a) => a.href));
      const internal = [];
      for (const href of hrefs) {
        const url = new URL(href);
        if (url.origin !== site.url) continue;
        url.hash = '';
        internal.push(url.href);
      }
      linksOf.set(file, internal);
    };
    try {
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (queue.length > 0) await checkPage(queue.shift());
        }),
      );
    } finally {
      await context.close();
    }
    // Each link with the first page (in file order) that has it, and the
    // problems in file order, whichever page finished first.
    const links = new Map();
    for (const file of pages) for (const link of linksOf.get(file) ?? []) if (!links.has(link)) links.set(link, file);
    problems.sort((a, b) => String(a.file).localeCompare(String(b.file)));
    for (const [link, from] of links) {
      const status = await statusOf(link);
      if (status !== 200) problems.push({ link, from, status });
    }
    expect(problems).toEqual([]);
    expect(links.size).toBeGreaterThan(pages.length);
  },
  240_000,
);

test('the troubleshooting page lists every reason a connection is on the stream, by the name the core counts it under', async () => {
  const page = fs.readFileSync(path.join(DOCS, 'guides', 'troubleshooting.md'), 'utf8');
  const { describeStreamReason } = require('../lib/hub-log.js');
  const { SseHub } = require('..');
  const hub = new SseHub();
  // Every reason the core counts, with the core's words for the log.
  const counted = Object.keys(hub.getStats().streamFallbacks);
  await hub.close();
  expect(counted.length).toBeGreaterThanOrEqual(18);
  for (const reason of counted) {
    // Its row: the name, then what the log says (a template's fixed parts).
    expect({ reason, row: page.includes(`| \`${reason}\` |`) }).toEqual({ reason, row: true });
    const words = describeStreamReason(reason);
    expect(words).not.toBe(reason);
    if (reason === 'platform' || reason === 'capacity') continue; // filled in: `<platform>`, `<n>`
    expect({ reason, words, onPage: page.includes(words) }).toEqual({ reason, words, onPage: true });
  }
});

// ---------------------------------------------------------------------------
// The samples, run as a user runs them

const children = new Set();
afterEach(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.all([...children].map((c) => (c.exitCode === null && c.signalCode === null ? exitOf(c) : null)));
  children.clear();
  await stopAll();
});

function exitOf(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/**
 * `node docs/examples/<file>` with PORT=0 (and `env`); resolves once it
 * prints the URL it listens on, with { url, port, child, stderr() }.
 */
function startExample(file, env = {}) {
  const child = spawn(process.execPath, [path.join(EXAMPLES, file)], {
    cwd: EXAMPLES,
    env: { ...process.env, NODE_DEBUG: '', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const match = /listening on (http:\/\/127\.0\.0\.1:(\d+))\//.exec(out);
      if (match) resolve({ url: match[1], port: Number(match[2]), child, stderr: () => stderr });
    });
    child.once('exit', (code, signal) => reject(new Error(`${file} exited (${code ?? signal}): ${stderr}`)));
  });
}

/** An EventSource on `url` that records every event of the given types. */
function listen(url, types = ['message'], init = {}) {
  const events = new EventSource(url, init);
  const received = [];
  for (const type of types) {
    events.addEventListener(type, (e) => received.push({ type, data: e.data, id: e.lastEventId }));
  }
  return {
    events,
    received,
    opened: new Promise((resolve) => events.addEventListener('open', resolve, { once: true })),
  };
}

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return res.json();
}

test('getting started: the welcome event, then the broadcast clock, as EventSource and on the wire', async () => {
  const app = await startExample('getting-started.js');
  const client = rawGet(app.port, '/events');
  await client.waitFor((c) => c.body().startsWith('data: {"hello":"world"}\n\n'), 'the welcome event');
  expect(client.head()).toMatch(/content-type: text\/event-stream; charset=utf-8/i);
  const es = listen(`${app.url}/events`);
  await waitFor(() => es.received.length >= 2, 'the welcome event and a tick', 5000);
  expect(JSON.parse(es.received[0].data)).toEqual({ hello: 'world' });
  expect(JSON.parse(es.received[1].data).utc).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  await client.waitFor((c) => /\ndata: \{"utc":"[^"]+"\}\n\n/.test(c.body()), 'a tick on the wire', 5000);
  es.events.close();
  client.socket.destroy();
});

withChromium('getting started, the browser side: the page opens the stream and lists the events', async () => {
  const app = await startExample('getting-started.js');
  const context = await (await chromium()).newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${app.url}/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
  await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 2, null, { timeout: 10_000 });
  const items = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
  expect(items.at(-1)).toBe('hello world');
  expect(items[0]).toMatch(/^\d{4}-\d\d-\d\dT/);
  expect(errors).toEqual([]);
  await context.close();
});

test("migrating: sseHelper.js's usage example with the import swapped streams the same bytes", async () => {
  const app = await startExample('migrating.mjs');
  const client = rawGet(app.port, '/events');
  await client.waitFor((c) => /^data: \{"utc":"[^"]+"\}\n\n/.test(c.body()), 'the first event');
  await client.waitFor((c) => c.body().split('\n\n').length >= 3, 'a broadcast', 5000);
  expect(client.body()).toMatch(/^(data: \{"utc":"\d{4}-[^"]+"\}\n\n)+$/);
  client.socket.destroy();
});

test("your app's own route: one addClient under the user's id or a generated one; sendToClient and broadcast", async () => {
  const app = await startExample('own-route.js');
  const asAlice = {
    fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, 'x-demo-user': 'alice' } }),
  };
  const alice = listen(`${app.url}/events`, ['hello', 'message'], asAlice);
  const visitor = listen(`${app.url}/events`, ['hello', 'message']);
  await waitFor(() => alice.received.length === 1 && visitor.received.length === 1, 'both hello events');
  expect(alice.received[0]).toMatchObject({ type: 'hello', data: '{"id":"alice"}' });
  expect(JSON.parse(visitor.received[0].data).id).toMatch(/^anon-\d+-[0-9a-f]{32}$/);

  expect(await post(`${app.url}/notify/alice`, { text: 'just you' })).toEqual({ delivered: true });
  expect(await post(`${app.url}/notify/bob`, { text: 'nobody' })).toEqual({ delivered: false });
  expect(await post(`${app.url}/broadcast`, { text: 'everyone' })).toEqual({ clients: 2 });
  await waitFor(() => alice.received.length === 3 && visitor.received.length === 2, 'the sends');
  expect(alice.received.slice(1).map((e) => e.data)).toEqual(['{"text":"just you"}', '{"text":"everyone"}']);
  expect(visitor.received[1].data).toBe('{"text":"everyone"}');
  alice.events.close();
  visitor.events.close();
});

withNginx('reverse proxies: the nginx configuration in front of the app, with the native writer', async () => {
  const app = await startExample('getting-started.js', { NODE_DEBUG: 'sse-helper-native' });
  const block = fs
    .readFileSync(path.join(EXAMPLES, 'nginx.conf'), 'utf8')
    .replace('127.0.0.1:3000', `127.0.0.1:${app.port}`);
  // The documented `location /events` block, nested in the test server's `location /`.
  const nginx = await startNginx(app.port, { location: block });
  try {
    const es = listen(`${nginx.url}/events`);
    await waitFor(() => es.received.length >= 2, 'the welcome event and a tick through nginx', 5000);
    expect(JSON.parse(es.received[0].data)).toEqual({ hello: 'world' });
    expect(app.stderr()).toMatch(/register anon-[0-9a-f-]+: transport socket \(native writer\), 1 client\(s\)/);
    es.events.close();
  } finally {
    await nginx.stop();
  }
});

test.each(['SIGTERM', 'SIGINT', 'SIGUSR2'])(
  'rolling restarts: on %s the client gets retry: 1000 and the end of its stream, then the process ends by the signal',
  async (signal) => {
    const app = await startExample('rolling-restart.js');
    const client = rawGet(app.port, '/events');
    await client.waitFor((c) => c.head().startsWith('HTTP/1.1 200'), 'the stream open');
    app.child.kill(signal);
    await client.waitFor((c) => c.raw().endsWith('\r\n0\r\n\r\n'), 'the end of the stream');
    expect(client.body()).toBe('retry: 1000\n\n');
    expect(await exitOf(app.child)).toEqual({ code: null, signal });
  },
);

test('rolling restarts with your own handler: drain(), then the server closes and the process exits 0', async () => {
  const app = await startExample('own-signal-handler.js');
  const client = rawGet(app.port, '/events');
  await client.waitFor((c) => c.head().startsWith('HTTP/1.1 200'), 'the stream open');
  app.child.kill('SIGTERM');
  await client.waitFor((c) => c.raw().endsWith('\r\n0\r\n\r\n'), 'the end of the stream');
  expect(client.body()).toBe('retry: 1000\n\n');
  expect(await exitOf(app.child)).toEqual({ code: 0, signal: null });
});

test("PM2's ecosystem file: cluster mode on the Redis sample, kill_timeout above drainOnSignals' default", () => {
  const { apps } = require(path.join(EXAMPLES, 'ecosystem.config.js'));
  expect(apps).toHaveLength(1);
  const [app] = apps;
  expect(fs.existsSync(path.join(EXAMPLES, app.script))).toBe(true);
  expect(app).toMatchObject({ instances: 2, exec_mode: 'cluster', kill_timeout: 1600 });
  expect(app.kill_timeout).toBeGreaterThan(1400);
  expect(app.env.REDIS_URL).toMatch(/^redis:\/\//);
});

test('testing your app: the Jest sample passes under --detectOpenHandles and reports no open handle', async () => {
  const config = JSON.stringify({ rootDir: EXAMPLES, testMatch: ['<rootDir>/testing.test.js'] });
  const { stdout, stderr } = await run(
    process.execPath,
    [path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js'), '--config', config, '--detectOpenHandles', '--ci'],
    { timeout: 120_000 },
  );
  const output = stdout + stderr;
  expect(output).toMatch(/Tests:\s+2 passed, 2 total/);
  expect(output).not.toMatch(/open handle/i);
});

test('testing your app: the mocha sample passes and mocha exits by itself', async () => {
  const { stdout } = await run(
    process.execPath,
    [path.join(ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js'), path.join(EXAMPLES, 'testing.mocha.js')],
    { timeout: 60_000 },
  );
  expect(stdout).toMatch(/2 passing/);
});

test('channels and replay: Last-Event-ID replays what was missed, ?from= a position, a channel reaches members only', async () => {
  const app = await startExample('channels-replay.js');
  const first = await (await fetch(`${app.url}/state`)).json();
  expect(first).toEqual({ notes: [], position: expect.stringMatching(/^[a-z][a-z0-9]{7}:0$/) });
  const epoch = first.position.split(':')[0];
  for (const text of ['one', 'two', 'three']) await post(`${app.url}/notes`, { text });

  // A reconnection after the first note: the second and third, in order, with their ids.
  const back = rawGet(app.port, '/events', { 'Last-Event-ID': `${epoch}:1` });
  await back.waitFor((c) => c.body().includes('three'), 'the replay');
  expect(back.body()).toBe(`id: ${epoch}:2\ndata: {"text":"two"}\n\nid: ${epoch}:3\ndata: {"text":"three"}\n\n`);

  // From a position the page was given: only what came after it.
  const { position } = await (await fetch(`${app.url}/state`)).json();
  expect(position).toBe(`${epoch}:3`);
  await post(`${app.url}/notes`, { text: 'four' });
  const fromPage = rawGet(app.port, `/events?from=${encodeURIComponent(position)}`);
  await fromPage.waitFor((c) => c.body().includes('four'), 'what came after the position');
  expect(fromPage.body()).toBe(`id: ${epoch}:4\ndata: {"text":"four"}\n\n`);

  // An id this hub never had: event: reset, and the client reloads.
  const stranger = rawGet(app.port, '/events', { 'Last-Event-ID': 'zzzzzzzz:1' });
  await stranger.waitFor((c) => c.body().includes('event: reset\n'), 'the reset');

  // A channel: the member gets the publish, the others do not.
  const member = rawGet(app.port, '/events?room=ops');
  await member.waitFor((c) => c.head().startsWith('HTTP/1.1 200'), 'the member connected');
  expect(await post(`${app.url}/rooms/ops`, { level: 'high' })).toEqual({ members: 1 });
  await member.waitFor((c) => c.body().includes('event: room\n'), 'the publish');
  expect(member.body()).toBe('event: room\ndata: {"level":"high"}\n\n');
  expect(back.body()).not.toContain('level');
  for (const c of [back, fromPage, stranger, member]) c.socket.destroy();
});

withRedis(
  'scaling on Redis: a broadcast made on one instance reaches the client of the other, with a stream id',
  async () => {
    const redis = await startRedis();
    const a = await startExample('redis.js', { REDIS_URL: redis.url });
    const b = await startExample('redis.js', { REDIS_URL: redis.url });
    const onB = listen(`${b.url}/events`);
    await onB.opened;
    expect(await post(`${a.url}/broadcast`, { text: 'from A' })).toEqual({ here: 0 });
    await waitFor(() => onB.received.length === 1, 'the broadcast on B', 10_000);
    expect(onB.received[0]).toEqual({
      type: 'message',
      data: '{"text":"from A"}',
      id: expect.stringMatching(/^\d+-\d+$/),
    });
    await waitFor(
      async () => (await (await fetch(`${a.url}/presence`)).json()).everywhere === 1,
      "A counts B's client",
      10_000,
    );
    expect(await (await fetch(`${a.url}/presence`)).json()).toEqual({ here: 0, everywhere: 1 });
    onB.events.close();
    // drainOnSignals: both end by their signal.
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect(await exitOf(a.child)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(await exitOf(b.child)).toEqual({ code: null, signal: 'SIGTERM' });
  },
  60_000,
);

test('metrics and debugging: /metrics and /stats count the client on the native writer; NODE_DEBUG logs it', async () => {
  const app = await startExample('metrics.js', { NODE_DEBUG: 'sse-helper-native' });
  const client = rawGet(app.port, '/events');
  await client.waitFor((c) => c.head().startsWith('HTTP/1.1 200'), 'the stream open');
  const text = await (await fetch(`${app.url}/metrics`)).text();
  expect(text).toMatch(/^sse_clients 1$/m);
  expect(text).toMatch(/^sse_connections\{transport="socket"\} 1$/m);
  expect(text).toMatch(/^# TYPE sse_frames_sent_total counter$/m);
  expect(await (await fetch(`${app.url}/stats`)).json()).toMatchObject({
    clients: 1,
    socketConnections: 1,
    streamConnections: 0,
    bus: null,
  });
  expect(app.stderr()).toMatch(
    /^SSE-HELPER-NATIVE \d+: register anon-[0-9a-f-]+: transport socket \(native writer\), 1 client\(s\)$/m,
  );
  client.socket.destroy();
});

test('troubleshooting: behind compression the connection is on the stream, and NODE_DEBUG says why', async () => {
  const app = await startExample('troubleshooting.js', { NODE_DEBUG: 'sse-helper-native' });
  const plain = rawGet(app.port, '/events');
  await plain.waitFor((c) => c.body() === 'data: {"socketConnections":1,"streamConnections":0}\n\n', 'the plain route');
  const compressed = rawGet(app.port, '/compressed');
  await compressed.waitFor((c) => c.raw().includes('"streamConnections":1'), 'the compressed route');
  expect(compressed.head()).not.toMatch(/content-encoding/i); // no-transform: compression passes it through
  expect(app.stderr()).toContain(
    "transport stream (wrapped: res.write or res.end is not Node's (a wrapper such as compression)), 2 client(s)",
  );
  plain.socket.destroy();
  compressed.socket.destroy();
});
