'use strict';
// The demo's input handling (issue 20, item 12): demo/server.js run as
// `npm start` runs it (PORT=0 for a free port, no REDIS_URL: the in-memory
// history, no Redis needed), sent hostile bodies over real HTTP. Each is
// refused with a 4xx and a small JSON reason, never Express's HTML error
// page with its stack and this machine's paths; an unexpected error is a
// bare 500 (the stack goes to stderr); valid requests work as before.

const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const { framesOf, rawGet, waitFor, within } = require('./helpers.js');

const ROOT = path.join(__dirname, '..');
const SERVER = path.join(ROOT, 'demo', 'server.js');
const JSON_TYPE = 'application/json; charset=utf-8';
/** A stack frame as Node prints one: `at fn (/file.js:1:2)` or `at /file.js:1:2`. */
const STACK_LINE = /\bat (\S+ \()?[^\s()]+:\d+:\d+/;

const demos = [];
let client;

afterEach(() => {
  client?.destroy();
  client = undefined;
});

afterAll(async () => {
  await Promise.all(demos.map(stop));
});

/**
 * Starts the demo in its own process, on a free port, without Redis and
 * outside the test environment; `args` are node's (default: the server
 * script). Resolves with its port and what it wrote to stderr so far.
 */
function startDemo(args = [SERVER]) {
  const { REDIS_URL, NODE_ENV, ...env } = process.env;
  const child = spawn(process.execPath, args, { env: { ...env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const demo = { child, stderr: '' };
  demos.push(demo);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    demo.stderr += d;
  });
  return new Promise((resolve, reject) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (line) => {
      const match = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(line);
      if (match) resolve(Object.assign(demo, { port: Number(match[1]) }));
    });
    child.on('exit', (code) => reject(new Error(`demo exited with ${code}: ${demo.stderr}`)));
  });
}

/** Ctrl+C, as a user stops it; SIGKILL if it has not exited in 10 s. */
async function stop({ child }) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  try {
    await within(exited, 10_000, 'the demo to exit');
  } catch {
    child.kill('SIGKILL');
    await exited;
  }
}

/** One HTTP request on its own connection; resolves with status, headers and body text. */
function request(port, method, route, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: route, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * POSTs `body` as JSON: an object goes through JSON.stringify (which writes
 * a lone surrogate as the escape `\ud800`), a string is sent as it is.
 */
const post = (port, route, body, headers = {}) =>
  request(port, 'POST', route, {
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

/** The body parsed as JSON, or the text itself (e.g. an HTML page) so a mismatch shows it. */
function json(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Status, JSON content type and body exactly; no stack frame or path of this machine in it. */
function expectAnswer(res, status, body) {
  expect({ status: res.status, type: res.headers['content-type'], body: json(res.body) }).toEqual({
    status,
    type: JSON_TYPE,
    body,
  });
  expect(res.body).not.toMatch(STACK_LINE);
  for (const local of ['/work', ROOT, __dirname, 'node_modules']) expect(res.body).not.toContain(local);
}

describe('the demo server', () => {
  let demo;
  beforeAll(async () => {
    demo = await startDemo();
  });

  const JOIN = 'clientId and channel (a-z, 0-9, -; at most 24) are required';
  const TEXT = 'text: 1 to 280 characters';
  const FROM = 'from: a string';
  const CHANNEL = 'channel: a-z, 0-9, -; at most 24';
  const NOT_AN_OBJECT = 'body: not a JSON object';
  const LONE_SURROGATE = 'strings must be well-formed Unicode (no lone surrogates)';

  test.each([
    ['POST /join, a lone surrogate as clientId', 400, '/join', { clientId: '\ud800', channel: 'abc' }, LONE_SURROGATE],
    ['POST /join, an object as clientId', 400, '/join', { clientId: { toString: 1 }, channel: 'abc' }, JOIN],
    ['POST /join, a number as clientId', 400, '/join', { clientId: 1, channel: 'abc' }, JOIN],
    ['POST /join, an array as channel', 400, '/join', { clientId: 'x', channel: ['abc'] }, JOIN],
    ['POST /join, no fields', 400, '/join', {}, JOIN],
    ['POST /join, bad JSON', 400, '/join', '{"clientId":', NOT_AN_OBJECT],
    ['POST /message, an object with toString as from', 400, '/message', { text: 'hi', from: { toString: 1 } }, FROM],
    [
      'POST /message, an object without toString or valueOf as from',
      400,
      '/message',
      { text: 'hi', from: { toString: null, valueOf: null } },
      FROM,
    ],
    ['POST /message, a number as from', 400, '/message', { text: 'hi', from: 42 }, FROM],
    ['POST /message, an array as from', 400, '/message', { text: 'hi', from: ['a'] }, FROM],
    ['POST /message, a lone surrogate in text', 400, '/message', { text: 'a\udc00b' }, LONE_SURROGATE],
    ['POST /message, a lone surrogate in from', 400, '/message', { text: 'hi', from: 'me\ud83d' }, LONE_SURROGATE],
    ['POST /message, an object as text', 400, '/message', { text: { toString: 1 } }, TEXT],
    ['POST /message, empty text', 400, '/message', { text: '   ' }, TEXT],
    ['POST /message, text over 280 characters', 400, '/message', { text: 'a'.repeat(281) }, TEXT],
    ['POST /message, an object as channel', 400, '/message', { text: 'hi', channel: { toString: 1 } }, CHANNEL],
    ['POST /message, a channel with a lone surrogate', 400, '/message', { text: 'hi', channel: 'a\ud800' }, CHANNEL],
    ['POST /message, bad JSON', 400, '/message', '{"text":', NOT_AN_OBJECT],
    ['POST /message, JSON null', 400, '/message', 'null', NOT_AN_OBJECT],
    ['POST /message, a JSON string', 400, '/message', '"hi"', NOT_AN_OBJECT],
    ['POST /message, an array', 400, '/message', '[]', TEXT],
    ['POST /message, over the 4 kB limit', 413, '/message', { text: 'a'.repeat(5000) }, 'body: larger than 4 kB'],
  ])('%s: %i with a JSON reason', async (_name, status, route, body, error) => {
    expectAnswer(await post(demo.port, route, body), status, { error });
  });

  test.each([
    ['an unsupported charset', 415, { 'content-type': 'application/json; charset=latin1' }, 'unsupported charset'],
    ['an unknown content encoding', 415, { 'content-encoding': 'br2' }, 'unsupported content encoding'],
    ['a gzip encoding that is not gzip', 400, { 'content-encoding': 'gzip' }, 'bad request'],
  ])('POST /message with %s: %i with a JSON reason', async (_name, status, headers, error) => {
    expectAnswer(await post(demo.port, '/message', '{"text":"hi"}', headers), status, { error });
  });

  test('an unknown route: 404 with a JSON reason', async () => {
    expectAnswer(await post(demo.port, '/messages', { text: 'hi' }), 404, { error: 'not found' });
    expectAnswer(await request(demo.port, 'GET', '/join'), 404, { error: 'not found' });
  });

  test('valid requests: the page, the metrics, joining a channel, a channel message and a broadcast', async () => {
    const page = await request(demo.port, 'GET', '/');
    expect([page.status, page.headers['content-type']]).toEqual([200, 'text/html; charset=utf-8']);
    expect(page.body).toContain('<script>');
    const metrics = await request(demo.port, 'GET', '/metrics');
    expect([metrics.status, metrics.headers['content-type']]).toEqual([
      200,
      'text/plain; version=0.0.4; charset=utf-8',
    ]);

    client = rawGet(demo.port, '/events');
    const frames = () => framesOf(client.body());
    await client.waitFor(() => frames().some((f) => f.startsWith('event: hello\n')), 'the greeting');
    const hello = frames().find((f) => f.startsWith('event: hello\n'));
    const { clientId } = JSON.parse(hello.split('data: ')[1]);
    const messages = () =>
      frames()
        .filter((f) => f.startsWith('event: message\n'))
        .map((f) => JSON.parse(f.split('data: ')[1]));

    expectAnswer(await post(demo.port, '/join', { clientId, channel: 'abc' }), 200, { joined: 1 });
    expectAnswer(await post(demo.port, '/join', { clientId: 'nobody', channel: 'abc' }), 404, { joined: 0 });
    expectAnswer(await post(demo.port, '/message', { text: ' to abc ', from: 'tester', channel: 'abc' }), 200, {
      sent: 1,
    });
    // Unknown fields are ignored, as before; from is optional.
    expectAnswer(await post(demo.port, '/message', { text: 'to all', extra: { a: 1 } }), 200, { sent: 1 });
    // A from of 25 units is cut to 24, as before; an astral character (two
    // units) is not split in half by the cut.
    expectAnswer(await post(demo.port, '/message', { text: 'long', from: `${'x'.repeat(23)}😀` }), 200, { sent: 1 });
    expectAnswer(await post(demo.port, '/message', { text: 'fits 😀', from: `${'x'.repeat(22)}😀` }), 200, { sent: 1 });
    await waitFor(() => messages().length === 4, 'the four messages');
    expect(messages()).toEqual([
      { text: 'to abc', from: 'tester', channel: 'abc', at: expect.any(Number) },
      { text: 'to all', from: 'anonymous', at: expect.any(Number) },
      { text: 'long', from: 'x'.repeat(23), at: expect.any(Number) },
      { text: 'fits 😀', from: `${'x'.repeat(22)}😀`, at: expect.any(Number) },
    ]);
  });

  test('the position handoff: the page is rendered with the recent messages and its position; a tab subscribing from it gets what came after, channels included', async () => {
    expect((await post(demo.port, '/message', { text: 'before <render>', from: 'a&b' })).status).toBe(200);
    const page = await request(demo.port, 'GET', '/');
    const position = /<body data-position="([^"]+)">/.exec(page.body)?.[1];
    expect(position).toMatch(/^[a-z][a-z0-9]{7}:\d+$/);
    // Rendered server-side, escaped.
    expect(page.body).toContain('<span class="from">a&amp;b</span><span>before &lt;render&gt;</span>');
    // Between the render and the subscription: a broadcast and a channel message.
    expect((await post(demo.port, '/message', { text: 'between', from: 'x' })).status).toBe(200);
    expect((await post(demo.port, '/message', { text: 'in abc', from: 'x', channel: 'abc' })).status).toBe(200);
    client = rawGet(demo.port, `/events?lastEventId=${encodeURIComponent(position)}&channels=abc`);
    const frames = () => framesOf(client.body());
    await client.waitFor(() => frames().some((f) => f.startsWith('event: hello\n')), 'the greeting');
    const messages = frames()
      .filter((f) => f.startsWith('event: message\n'))
      .map((f) => JSON.parse(f.split('data: ')[1]).text);
    // Replayed before the greeting, in order; the rendered one not again.
    expect(messages).toEqual(['between', 'in abc']);
  });
});

test('an unexpected error: 500 {"error":"internal error"}, the stack on stderr only', async () => {
  // The demo with the hub's join failing, as a bug would make it fail: the
  // error's message names a path of this machine, which must not leak. The
  // hub's methods are read-only, so the demo's require gets a stand-in: the
  // real hub with join overridden.
  const script = `
    const file = require.resolve(${JSON.stringify(ROOT)});
    const hub = require(file);
    const join = () => { throw new Error('injected fault in ' + file); };
    require.cache[file].exports = Object.create(hub, { join: { value: join } });
    require(${JSON.stringify(SERVER)});
  `;
  const demo = await startDemo(['-e', script]);
  expectAnswer(await post(demo.port, '/join', { clientId: 'x', channel: 'abc' }), 500, { error: 'internal error' });
  await waitFor(() => demo.stderr.includes('injected fault in'), 'the error on stderr');
  expect(demo.stderr).toMatch(STACK_LINE);
  // Still serving.
  expectAnswer(await post(demo.port, '/message', { text: 'hi' }), 200, { sent: 0 });
});
