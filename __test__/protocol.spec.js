// The protocol features on real Express 5 servers and real clients: event
// fields and raw mode, comments, framing round trips, heartbeats, replay
// history with Last-Event-ID, channels and filters, slow clients on the
// stream transport, maxClients, lifecycle events, leaks, and a compressing
// middleware.

const path = require('node:path');
const zlib = require('node:zlib');
const compression = require('compression');
const { EventSource } = require('eventsource');
// A dependency of `eventsource`, not a direct devDependency of this package.
const { createParser } = require('eventsource-parser');
const { SseHub, SseCapacityError } = require('..');
const { FakeResponse, startServer, rawGet, waitFor, collectGarbage, dechunk, runToExit } = require('./helpers.js');

let hub;
let srv;
let idleRefs;
/** Responses the SSE route saw, in arrival order. */
let responses;
/** Raw clients and EventSources opened by the current test. */
let clients;
let sources;
/** Extra hubs a test made, closed with the main one. */
let extraHubs;

beforeEach(() => {
  hub = new SseHub();
  idleRefs = hub.nativeReferenceCount;
  responses = [];
  clients = [];
  sources = [];
  extraHubs = [];
});

afterEach(async () => {
  for (const es of sources) es.close();
  for (const h of [hub, ...extraHubs]) h.broadcastAndClose('bye');
  await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references released');
  for (const c of clients) c.destroy();
  await srv?.close();
  srv = undefined;
});

/** An SSE route at /events: initResponse, then `register(req, res)`. */
async function serve(register = (_req, res) => hub.addClient(res)) {
  srv = await startServer((app) => {
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      responses.push(res);
      register(req, res);
    });
  });
}

function client(urlPath = '/events', headers = {}) {
  const c = rawGet(srv.port, urlPath, headers);
  clients.push(c);
  return c;
}

/** Opens a raw client and waits until the route registered it. */
async function connect(urlPath = '/events', headers = {}) {
  const before = responses.length;
  const c = client(urlPath, headers);
  await waitFor(() => responses.length > before, 'route');
  const res = responses[before];
  await waitFor(() => res.headersSent, 'headers');
  return { c, res };
}

function openEventSource(urlPath = '/events') {
  const es = new EventSource(`${srv.url}${urlPath}`);
  sources.push(es);
  const opened = new Promise((resolve) => {
    es.addEventListener('open', resolve, { once: true });
  });
  return { es, opened };
}

/** The events of an SSE body, each without its terminating blank line. */
const framesOf = (body) => body.split('\n\n').slice(0, -1);

const nextTick = () => new Promise((r) => setImmediate(r));

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('event fields, raw mode and comments', () => {
  test('send, sendToClient and broadcast write event, id, retry and data in that order', async () => {
    await serve((_req, res) => hub.addClient('alice', res));
    const { c, res } = await connect();
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    expect(hub.send(res, { a: 1 }, { event: 'tick', id: '7', retry: 1500 })).toBe(true);
    expect(hub.sendToClient('alice', 'hi', { id: 'only-id' })).toBe(true);
    expect(hub.broadcast([1, 'two'], { event: 'all' })).toBe(1);
    expect(hub.broadcast(null, { retry: 0 })).toBe(1);
    expect(hub.send(res, 'x', { id: 'x'.repeat(1024), event: 'é'.repeat(512) })).toBe(true);
    expect(hub.sendToClient('alice', 'raw text', { raw: true, event: 'note', id: '9' })).toBe(true);
    expect(hub.broadcast('r\nr', { raw: true, retry: 2147483648 })).toBe(1);
    const expected = [
      'event: tick\nid: 7\nretry: 1500\ndata: {"a":1}\n\n',
      'id: only-id\ndata: "hi"\n\n',
      'event: all\ndata: [1,"two"]\n\n',
      'retry: 0\ndata: null\n\n',
      `event: ${'é'.repeat(512)}\nid: ${'x'.repeat(1024)}\ndata: "x"\n\n`,
      'event: note\nid: 9\ndata: raw text\n\n',
      'retry: 2147483648\ndata: r\ndata: r\n\n',
    ];
    await c.waitFor((x) => x.body() === expected.join(''), 'all frames');
    // Each event is one HTTP chunk: never split, never merged.
    expect(c.chunks()).toEqual(expected);
  });

  test('raw mode: CR, LF and CRLF each start a data line, and nothing else is changed', async () => {
    await serve();
    const { c, res } = await connect();
    const cases = [
      ['a\nb\r\nc\rd', 'data: a\ndata: b\ndata: c\ndata: d\n\n'],
      ['', 'data:\n\n'],
      ['trail\n', 'data: trail\ndata:\n\n'],
      ['cr\r', 'data: cr\ndata:\n\n'],
      ['\r\n\r\n', 'data:\ndata:\ndata:\n\n'],
      ['\n\r', 'data:\ndata:\ndata:\n\n'],
      [' lead: x', 'data:  lead: x\n\n'],
      ['x\n\nevent: evil\nid: 666', 'data: x\ndata:\ndata: event: evil\ndata: id: 666\n\n'],
      ['{"not":"json-quoted"}', 'data: {"not":"json-quoted"}\n\n'],
      ['é✓😀\u2028\u0085', 'data: é✓😀\u2028\u0085\n\n'],
    ];
    let expected = '';
    for (const [payload, frame] of cases) {
      expect(hub.send(res, payload, { raw: true })).toBe(true);
      expected += frame;
      await c.waitFor((x) => x.body() === expected, JSON.stringify(payload));
    }
    // raw:true takes strings only, and a refused payload writes nothing.
    for (const bad of [{ a: 1 }, 5, null, undefined, Buffer.from('x')]) {
      expect(() => hub.send(res, bad, { raw: true })).toThrow(TypeError);
      expect(() => hub.broadcast(bad, { raw: true })).toThrow(/^payload must be a string when options.raw is true/);
      expect(() => hub.sendToClient('any', bad, { raw: true })).toThrow(TypeError);
    }
    hub.send(res, 'end', { raw: true });
    await c.waitFor((x) => x.body() === `${expected}data: end\n\n`, 'end');
  });

  test('an EventSource client dispatches raw multi-line data joined with LF, with its event type and id', async () => {
    await serve();
    const { es, opened } = openEventSource();
    await opened;
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    const messages = [];
    const notes = [];
    es.onmessage = (e) => messages.push({ data: e.data, lastEventId: e.lastEventId });
    es.addEventListener('note', (e) => notes.push({ data: e.data, lastEventId: e.lastEventId }));
    hub.broadcast('a\r\nb\rc\nd', { raw: true });
    hub.broadcast('one\n\ntwo', { raw: true, event: 'note', id: 'n1' });
    hub.broadcast('', { raw: true });
    hub.broadcast(' spaced\r', { raw: true, id: 'n2' });
    hub.broadcast({ json: 'a\nb' });
    await waitFor(() => messages.length === 4 && notes.length === 1, 'dispatch');
    expect(messages).toEqual([
      { data: 'a\nb\nc\nd', lastEventId: '' },
      { data: '', lastEventId: '' },
      { data: ' spaced\n', lastEventId: 'n2' },
      { data: '{"json":"a\\nb"}', lastEventId: '' },
    ]);
    expect(notes).toEqual([{ data: 'one\n\ntwo', lastEventId: 'n1' }]);
  });

  test('field injection through event or id is a TypeError everywhere, and nothing reaches anyone', async () => {
    await serve((_req, res) => hub.addClient('victim', res));
    const { c, res } = await connect();
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    hub.join(res, 'room');
    const bad = [
      'x\n\ndata: evil',
      'x\r\rdata: evil',
      'x\r\n\r\nid: 1',
      'a\nb',
      'a\rb',
      'a\0b',
      '\n',
      'x'.repeat(1025),
      'é'.repeat(513), // 1026 bytes in UTF-8
    ];
    const calls = [
      (o) => hub.send(res, { p: 1 }, o),
      (o) => hub.send(res, 'p', { ...o, raw: true }),
      (o) => hub.sendToClient('victim', { p: 1 }, o),
      (o) => hub.broadcast({ p: 1 }, o),
      (o) => hub.broadcast({ p: 1 }, { ...o, filter: () => true }),
      (o) => hub.publish('room', { p: 1 }, o),
      (o) => hub.broadcastAndClose({ p: 1 }, o),
    ];
    for (const value of bad) {
      for (const field of ['event', 'id']) {
        for (const call of calls) {
          expect(() => call({ [field]: value })).toThrow(TypeError);
          expect(() => call({ [field]: value })).toThrow(new RegExp(`^options\\.${field} must`));
        }
      }
    }
    for (const call of calls.slice(0, 4)) {
      expect(() => call({ event: 5 })).toThrow(/^options.event must be a string/);
      expect(() => call({ id: {} })).toThrow(/^options.id must be a string/);
    }
    // broadcastAndClose refused before closing anything.
    expect(hub.getClientCount()).toBe(1);
    expect(hub.send(res, 'after')).toBe(true);
    await c.waitFor((x) => x.body().length > 0, 'a frame');
    expect(c.body()).toBe('data: "after"\n\n');
  });

  test('retry must be a non-negative integer; anything else is a TypeError and writes nothing', async () => {
    await serve((_req, res) => hub.addClient('r', res));
    const { c, res } = await connect();
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    for (const retry of [-1, 1.5, 0.1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(() => hub.send(res, 1, { retry })).toThrow(/^options.retry must be a non-negative integer/);
      expect(() => hub.sendToClient('r', 1, { retry })).toThrow(TypeError);
      expect(() => hub.broadcast(1, { retry })).toThrow(TypeError);
    }
    for (const retry of ['100', null, true, 10n]) {
      expect(() => hub.send(res, 1, { retry })).toThrow(TypeError);
    }
    expect(hub.getClientCount()).toBe(1);
    hub.send(res, 1, { retry: 250 });
    await c.waitFor((x) => x.body().length > 0, 'a frame');
    expect(c.body()).toBe('retry: 250\ndata: 1\n\n');
  });

  test.each(['auto', 'stream'])(
    'transport %s: getStats counts the frames and bytes of the event stream',
    async (transport) => {
      hub.configure({ transport });
      await serve((_req, res) => hub.addClient('x', res));
      const { c, res } = await connect();
      await waitFor(() => hub.getClientCount() === 1, 'registered');
      hub.broadcast({ a: 1 });
      hub.send(res, 'hi', { event: 'e' });
      hub.sendToClient('x', 'two\nlines', { raw: true });
      hub.comment(null, 'c');
      hub.publish('nobody-joined', 'lost');
      const body = 'data: {"a":1}\n\nevent: e\ndata: "hi"\n\ndata: two\ndata: lines\n\n: c\n\n';
      await c.waitFor((x) => x.body() === body, 'frames');
      // The socket writer counts once its write completed.
      await waitFor(() => hub.getStats().framesSent === 4, 'four frames counted');
      expect(hub.getStats()).toMatchObject({ framesSent: 4, bytesSent: Buffer.byteLength(body), framesDropped: 0 });
    },
  );

  test('comment() writes ": text" per line and a blank line, to a response, a client id or everyone', async () => {
    await serve((req, res) => hub.addClient(req.query.id, res));
    const a1 = await connect('/events?id=a');
    const a2 = await connect('/events?id=a');
    const b = await connect('/events?id=b');
    await waitFor(() => hub.getClientCount() === 3, 'registered');
    expect(hub.comment(a1.res, 'one')).toBe(1);
    expect(hub.comment('a', 'x\ny\r\nz')).toBe(2);
    expect(hub.comment(null, '')).toBe(3);
    expect(hub.comment(undefined, 'all')).toBe(3);
    expect(hub.comment('nobody', 'lost')).toBe(0);
    expect(() => hub.comment(a1.res, 5)).toThrow(/^text must be a string/);
    expect(() => hub.comment({}, 'x')).toThrow(TypeError);
    const toA = ': x\n: y\n: z\n\n: \n\n: all\n\n';
    await a1.c.waitFor((x) => x.body() === `: one\n\n${toA}`, 'a1');
    await a2.c.waitFor((x) => x.body() === toA, 'a2');
    await b.c.waitFor((x) => x.body() === ': \n\n: all\n\n', 'b');
  });
});

describe('framing property: random strings round-trip through a spec parser', () => {
  // Rich in what matters to an SSE parser: line endings, colons, spaces,
  // field-looking text, non-ASCII, separators that are not SSE line ends.
  const TOKENS = [
    'a',
    'Z',
    '0',
    ' ',
    ':',
    '\n',
    '\r',
    '\r\n',
    '\n\n',
    '\t',
    'é',
    '✓',
    '😀',
    '\u2028',
    '\u2029',
    '\u0085',
    '\u0000',
    '\uFEFF',
    'data: ',
    'event: x',
    'id: 1',
    'retry: 5',
    ': c',
    '"',
    '\\',
    '{',
  ];
  const FIELD_TOKENS = ['a', ' ', ':', 'é', '😀', '\u2028', '\t', 'data: x', '\uFEFF'];

  function randomString(rand, tokens, maxTokens) {
    let s = '';
    const n = Math.floor(rand() * (maxTokens + 1));
    for (let i = 0; i < n; i++) s += tokens[Math.floor(rand() * tokens.length)];
    return s;
  }

  function randomJson(rand, depth = 0) {
    const r = rand();
    if (depth > 2 || r < 0.3) return randomString(rand, [...TOKENS, '\uD800', '\uDFFF'], 12);
    if (r < 0.4) return Math.floor(rand() * 2e6) - 1e6;
    if (r < 0.45) return Math.floor(rand() * 1000) / 8 + 0.5;
    if (r < 0.5) return [true, false, null][Math.floor(rand() * 3)];
    if (r < 0.75) return Array.from({ length: Math.floor(rand() * 4) }, () => randomJson(rand, depth + 1));
    const o = {};
    for (let i = Math.floor(rand() * 4); i > 0; i--) o[randomString(rand, TOKENS, 4)] = randomJson(rand, depth + 1);
    return o;
  }

  function randomFields(rand) {
    const o = {};
    if (rand() < 0.5) o.event = randomString(rand, FIELD_TOKENS, 5);
    if (rand() < 0.5) o.id = randomString(rand, FIELD_TOKENS, 5);
    return o;
  }

  /** Parses the bytes with eventsource-parser, fed in random pieces as a stream decoder would. */
  function parse(bytes, rand) {
    const events = [];
    const errors = [];
    const parser = createParser({
      onEvent: (e) => events.push(e),
      onError: (e) => errors.push(e),
    });
    const decoder = new TextDecoder();
    let i = 0;
    while (i < bytes.length) {
      const size = 1 + Math.floor(rand() * 64);
      parser.feed(decoder.decode(bytes.subarray(i, i + size), { stream: true }));
      i += size;
    }
    parser.feed(decoder.decode());
    return { events, errors };
  }

  test.each(['auto', 'stream'])('transport %s: 600 raw and 600 JSON payloads with random fields', async (transport) => {
    hub.configure({ transport });
    await serve();
    const { c, res } = await connect();
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    const rand = prng(transport === 'auto' ? 0x5eed : 0xbeef);
    const sent = [];
    for (let i = 0; i < 1200; i++) {
      const raw = i % 2 === 0;
      const payload = raw ? randomString(rand, TOKENS, 40) : randomJson(rand);
      const fields = randomFields(rand);
      expect(hub.send(res, payload, raw ? { ...fields, raw } : fields)).toBe(true);
      sent.push({ raw, payload, fields });
      if (i % 100 === 99) await nextTick();
    }
    await c.waitFor((x) => x.body().split('\n\n').length - 1 === sent.length, 'every frame', 20_000);
    const bytes = dechunk(Buffer.from(c.raw(), 'latin1'));
    // Line ends on the wire are LF only.
    expect(bytes.includes('\r')).toBe(false);
    const { events, errors } = parse(bytes, rand);
    expect(errors).toEqual([]);
    expect(events).toHaveLength(sent.length);
    sent.forEach(({ raw, payload, fields }, i) => {
      const e = events[i];
      expect({ i, event: e.event, id: e.id }).toEqual({ i, event: fields.event || undefined, id: fields.id });
      if (raw) {
        expect({ i, data: e.data }).toEqual({ i, data: payload.replace(/\r\n?/g, '\n') });
      } else {
        expect({ i, data: e.data }).toEqual({ i, data: JSON.stringify(payload) });
        expect(JSON.parse(e.data)).toEqual(payload);
      }
    });
  });
});

describe('heartbeats', () => {
  const heartbeats = (body) => body.split(': heartbeat\n\n').length - 1;

  test('an idle client gets ": heartbeat", one sent to more often than heartbeatMs does not', async () => {
    const HEARTBEAT_MS = 150;
    hub.configure({ heartbeatMs: HEARTBEAT_MS });
    await serve((req, res) => hub.addClient(req.query.id, res));
    const idle = await connect('/events?id=idle');
    const busy = await connect('/events?id=busy');
    await waitFor(() => hub.getClientCount() === 2, 'registered');
    let last = performance.now();
    let longestGap = 0;
    const ticker = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
      hub.sendToClient('busy', 'tick');
    }, 10);
    try {
      await idle.c.waitFor((x) => heartbeats(x.body()) >= 3, 'three heartbeats');
    } finally {
      clearInterval(ticker);
    }
    expect(idle.c.body()).toBe(': heartbeat\n\n'.repeat(heartbeats(idle.c.body())));
    const busyFrames = framesOf(busy.c.body());
    expect(busyFrames.length).toBeGreaterThan(0);
    // Only if this process stalled for a whole heartbeatMs between two ticks
    // was the busy client really idle that long.
    if (busyFrames.some((f) => f === ': heartbeat')) expect(longestGap).toBeGreaterThan(HEARTBEAT_MS - 5);
    else expect(busyFrames.every((f) => f === 'data: "tick"')).toBe(true);
  });

  test('heartbeatMs 0 sends none, and configuring 0 stops a running heartbeat', async () => {
    // A control hub with heartbeats on measures the waiting in heartbeats.
    const control = new SseHub().configure({ heartbeatMs: 40 });
    extraHubs.push(control);
    hub.configure({ heartbeatMs: 40 });
    await serve((req, res) => (req.query.hub === 'control' ? control : hub).addClient(res));
    const ref = await connect('/events?hub=control');
    const { c } = await connect('/events');
    await waitFor(() => hub.getClientCount() === 1 && control.getClientCount() === 1, 'registered');
    await c.waitFor((x) => heartbeats(x.body()) >= 1, 'a first heartbeat');
    hub.configure({ heartbeatMs: 0 });
    const seen = c.body();
    const refSeen = heartbeats(ref.c.body());
    await ref.c.waitFor((x) => heartbeats(x.body()) >= refSeen + 4, 'four control heartbeats');
    expect(c.body()).toBe(seen);

    // A hub created with heartbeatMs 0 never sends one.
    const off = new SseHub().configure({ heartbeatMs: 0 });
    extraHubs.push(off);
    const offRes = [];
    srv.app.get('/off', (_req, res) => {
      off.initResponse(res);
      off.addClient(res);
      offRes.push(res);
    });
    const offClient = client('/off');
    await waitFor(() => off.getClientCount() === 1, 'off registered');
    await offClient.waitFor((x) => x.raw().includes('\r\n\r\n'), 'off headers');
    const refNow = heartbeats(ref.c.body());
    await ref.c.waitFor((x) => heartbeats(x.body()) >= refNow + 4, 'four more control heartbeats');
    expect(offClient.body()).toBe('');

    for (const bad of [-1, 1.5, '100', Number.NaN]) {
      expect(() => hub.configure({ heartbeatMs: bad })).toThrow(TypeError);
    }
  });

  test('the heartbeat timer never keeps the process alive', async () => {
    const script = `
      const http = require('node:http');
      const { EventEmitter } = require('node:events');
      const { SseHub } = require(${JSON.stringify(path.join(__dirname, '..'))});
      const hub = new SseHub().configure({ heartbeatMs: 20 });
      // A response-like object that stays registered, so the timer keeps running.
      const fake = Object.assign(new EventEmitter(), { finished: false, write: () => true, end() {} });
      const server = http.createServer((req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
      });
      setTimeout(() => process.exit(2), 10000).unref();
      server.listen(0, '127.0.0.1', () => {
        const req = http.get({ host: '127.0.0.1', port: server.address().port, agent: false }, (res) => {
          res.setEncoding('utf8');
          res.on('data', (d) => {
            if (!d.includes(': heartbeat')) return;
            hub.addClient(fake);
            process.stdout.write('heartbeat\\n');
            req.destroy();
            server.close();
          });
        });
      });
      process.on('exit', () => process.stdout.write('exit clients=' + hub.getClientCount() + '\\n'));`;
    const { code, stdout } = await runToExit(script);
    expect(code).toBe(0);
    expect(stdout).toBe('heartbeat\nexit clients=1\n');
  });
});

describe('replay history (Last-Event-ID)', () => {
  test.each([
    ['removeClient', (res) => hub.removeClient(res)],
    ['a destroyed socket', (res) => res.socket.destroy()],
  ])(
    'an EventSource that reconnects after %s gets what it missed, then live events: no gap, no duplicate',
    async (_name, drop) => {
      hub.configure({ historySize: 100 });
      const lastEventIds = [];
      await serve((req, res) => {
        lastEventIds.push(req.headers['last-event-id']);
        hub.addClient(res);
      });
      let connects = 0;
      hub.on('connect', () => {
        // Right after the reconnection registered: must come after the replay.
        if (++connects === 2) hub.broadcast({ n: 6 });
      });
      const { es, opened } = openEventSource();
      const got = [];
      es.onmessage = (e) => got.push({ n: JSON.parse(e.data).n, lastEventId: e.lastEventId });
      await opened;
      await waitFor(() => hub.getClientCount() === 1, 'registered');
      hub.broadcast({ n: 1 }, { retry: 50 });
      hub.broadcast({ n: 2 });
      hub.broadcast({ n: 3 });
      await waitFor(() => got.length === 3, 'first three');
      drop(responses[0]);
      await waitFor(() => hub.getClientCount() === 0, 'dropped');
      expect(hub.broadcast({ n: 4 })).toBe(0);
      expect(hub.broadcast({ n: 5 })).toBe(0);
      await waitFor(() => got.length === 6, 'replay and the event after it', 10_000);
      hub.broadcast({ n: 7 });
      await waitFor(() => got.length === 7, 'live event');
      expect(got).toEqual([1, 2, 3, 4, 5, 6, 7].map((n) => ({ n, lastEventId: String(n) })));
      expect(lastEventIds).toEqual([undefined, '3']);
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 0, clients: 1 });
    },
  );

  test.each(['auto', 'stream'])(
    'transport %s: the exact replay bytes, and an id no longer in history gets "event: reset" with the newest id',
    async (transport) => {
      hub.configure({ historySize: 3, transport });
      await serve();
      for (let n = 1; n <= 10; n++) expect(hub.broadcast(n)).toBe(0);
      // 8, 9, 10 are held; a client that saw 7 missed exactly those.
      const seven = await connect('/events', { 'Last-Event-ID': '7' });
      await seven.c.waitFor((x) => x.body() === 'id: 8\ndata: 8\n\nid: 9\ndata: 9\n\nid: 10\ndata: 10\n\n', 'replay');
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 0 });
      const reset = 'event: reset\nid: 10\ndata: null\n\n';
      for (const lastId of ['6', '2', 'bogus', '11']) {
        const { c } = await connect('/events', { 'Last-Event-ID': lastId });
        await c.waitFor((x) => x.body() === reset, `reset for ${lastId}`);
      }
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 4 });
      // A client that is up to date gets nothing replayed, then live events.
      const current = await connect('/events', { 'Last-Event-ID': '10' });
      await waitFor(() => hub.getClientCount() === 6, 'registered');
      hub.broadcast('live');
      await current.c.waitFor((x) => x.body() === 'id: 11\ndata: "live"\n\n', 'live only');
      await seven.c.waitFor(
        (x) => x.body().endsWith('id: 10\ndata: 10\n\nid: 11\ndata: "live"\n\n'),
        'live after replay',
      );
    },
  );

  test('the explicit { lastEventId } option, in both addClient forms, wins over the header', async () => {
    hub.configure({ historySize: 10 });
    await serve((req, res) => {
      const options = req.query.from === undefined ? undefined : { lastEventId: req.query.from };
      if (req.query.id) hub.addClient(req.query.id, res, { m: 1 }, options);
      else hub.addClient(res, { m: 1 }, options);
    });
    for (let n = 1; n <= 5; n++) hub.broadcast({ n });
    const byRes = await connect('/events?from=3', { 'Last-Event-ID': '1' });
    const byId = await connect('/events?id=me&from=4', { 'Last-Event-ID': '1' });
    const byHeader = await connect('/events?id=other', { 'Last-Event-ID': '2' });
    await byRes.c.waitFor((x) => x.body() === 'id: 4\ndata: {"n":4}\n\nid: 5\ndata: {"n":5}\n\n', 'from 3');
    await byId.c.waitFor((x) => x.body() === 'id: 5\ndata: {"n":5}\n\n', 'from 4');
    await byHeader.c.waitFor((x) => framesOf(x.body()).length === 3, 'from 2');
    expect(hub.getStats().replays).toBe(3);
    const fake = new FakeResponse();
    expect(() => hub.addClient(fake, null, { lastEventId: 5 })).toThrow(/^options.lastEventId must be a string/);
    expect(() => hub.addClient('id', fake, null, { lastEventId: {} })).toThrow(TypeError);
    expect(hub.getClientCount()).toBe(3);
  });

  test('without history a Last-Event-ID header is ignored and broadcasts carry no id', async () => {
    await serve();
    hub.broadcast(1);
    const { c } = await connect('/events', { 'Last-Event-ID': '1' });
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    hub.broadcast(2);
    await c.waitFor((x) => x.body() === 'data: 2\n\n', 'live only');
    expect(hub.getStats()).toMatchObject({ replays: 0, resets: 0 });
  });

  test('generated ids strictly increase; only broadcasts to everyone are numbered and kept', async () => {
    hub.configure({ historySize: 100 });
    await serve((req, res) => {
      hub.addClient(req.query.id ?? null, res, { role: req.query.role });
      hub.join(res, 'room');
    });
    const { c, res } = await connect('/events?id=watcher&role=admin');
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    hub.broadcast('a');
    hub.broadcast('b', { event: 'e' });
    hub.publish('room', 'in room');
    hub.broadcast('filtered', { filter: () => true });
    hub.send(res, 'direct');
    hub.sendToClient('watcher', 'to id');
    hub.broadcast('custom', { id: 'custom-1' });
    hub.broadcast('c');
    const expected = [
      'id: 1\ndata: "a"\n\n',
      'event: e\nid: 2\ndata: "b"\n\n',
      'data: "in room"\n\n',
      'data: "filtered"\n\n',
      'data: "direct"\n\n',
      'data: "to id"\n\n',
      'id: custom-1\ndata: "custom"\n\n',
      'id: 3\ndata: "c"\n\n',
    ];
    await c.waitFor((x) => x.body() === expected.join(''), 'frames');
    // A reconnection from 1 replays the kept events only, with their fields.
    const again = await connect('/events', { 'Last-Event-ID': '1' });
    await again.c.waitFor((x) => x.body() === [expected[1], expected[6], expected[7]].join(''), 'replay');
    // A reconnection from the app's own id works too.
    const fromCustom = await connect('/events', { 'Last-Event-ID': 'custom-1' });
    await fromCustom.c.waitFor((x) => x.body() === expected[7], 'replay from custom id');

    for (let i = 0; i < 300; i++) hub.broadcast(i);
    await c.waitFor((x) => framesOf(x.body()).length === expected.length + 300, 'many');
    const ids = framesOf(c.body())
      .map((f) => /^id: (\d+)$/m.exec(f)?.[1])
      .filter(Boolean)
      .map(Number);
    expect(ids).toHaveLength(303);
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1]);
  });

  test('history memory is bounded by historySize', async () => {
    hub.configure({ historySize: 3 });
    await serve();
    const blob = 'h'.repeat(64 * 1024);
    for (let n = 1; n <= 200; n++) hub.broadcast({ n, blob });
    await collectGarbage();
    const before = process.memoryUsage().rss;
    // 256 MiB of frames if history kept them all.
    for (let n = 201; n <= 4200; n++) hub.broadcast({ n, blob });
    await collectGarbage();
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
    const { c } = await connect('/events', { 'Last-Event-ID': '4197' });
    await c.waitFor((x) => framesOf(x.body()).length === 3, 'replay');
    expect(framesOf(c.body()).map((f) => JSON.parse(f.split('\ndata: ')[1]).n)).toEqual([4198, 4199, 4200]);
    const old = await connect('/events', { 'Last-Event-ID': '4196' });
    await old.c.waitFor((x) => x.body() === 'event: reset\nid: 4200\ndata: null\n\n', 'reset');
    // Shrinking the history drops the oldest at once.
    hub.configure({ historySize: 1 });
    const shrunk = await connect('/events', { 'Last-Event-ID': '4198' });
    await shrunk.c.waitFor((x) => x.body() === 'event: reset\nid: 4200\ndata: null\n\n', 'reset after shrink');
    for (const bad of [-1, 1.5, 1_000_001, '3']) expect(() => hub.configure({ historySize: bad })).toThrow(TypeError);
  });
});

describe('channels and filters', () => {
  async function fourClients() {
    await serve((req, res) => hub.addClient(req.query.id, res, JSON.parse(req.query.meta ?? 'null')));
    const c = {
      alice1: await connect('/events?id=alice&meta={"role":"admin"}'),
      alice2: await connect('/events?id=alice&meta={"role":"user"}'),
      bob: await connect('/events?id=bob&meta="vip"'),
      carol: await connect('/events?id=carol'),
    };
    await waitFor(() => hub.getClientCount() === 4, 'registered');
    return c;
  }

  test('join and leave by response and by client id; publish reaches only members', async () => {
    const c = await fourClients();
    expect(hub.join('alice', 'news')).toBe(2);
    expect(hub.join(c.bob.res, 'news')).toBe(1);
    expect(hub.join(c.bob.res, 'news')).toBe(0);
    expect(hub.join('carol', 'sports')).toBe(1);
    expect(hub.join('nobody', 'news')).toBe(0);
    expect(hub.getStats().channels).toBe(2);
    expect(hub.publish('news', 'n1')).toBe(3);
    expect(hub.publish('sports', 's1', { event: 'score', id: 's-1' })).toBe(1);
    expect(hub.publish('empty', 'nobody hears')).toBe(0);
    expect(hub.leave(c.alice2.res, 'news')).toBe(1);
    expect(hub.leave(c.alice2.res, 'news')).toBe(0);
    expect(hub.publish('news', 'n2')).toBe(2);
    expect(hub.leave('bob', 'news')).toBe(1);
    expect(hub.leave('carol', 'news')).toBe(0);
    expect(hub.publish('news', 'n3')).toBe(1);
    expect(hub.broadcast('all', { channel: 'sports' })).toBe(1);
    expect(hub.getStats().channels).toBe(2);
    await c.alice1.c.waitFor((x) => x.body() === 'data: "n1"\n\ndata: "n2"\n\ndata: "n3"\n\n', 'alice1');
    await c.alice2.c.waitFor((x) => x.body() === 'data: "n1"\n\n', 'alice2');
    await c.bob.c.waitFor((x) => x.body() === 'data: "n1"\n\ndata: "n2"\n\n', 'bob');
    await c.carol.c.waitFor((x) => x.body() === 'event: score\nid: s-1\ndata: "s1"\n\ndata: "all"\n\n', 'carol');
    expect(hub.leave('alice', 'news')).toBe(1);
    expect(hub.leave(c.carol.res, 'sports')).toBe(1);
    expect(hub.getStats().channels).toBe(0);
  });

  test('broadcast with a filter on meta (primitive meta unboxed) and on the client id', async () => {
    const c = await fourClients();
    const calls = [];
    const written = hub.broadcast('admins', {
      filter: (meta, id) => {
        calls.push([meta, id]);
        return meta?.role === 'admin';
      },
    });
    expect(written).toBe(1);
    expect(calls).toEqual([
      [{ role: 'admin' }, 'alice'],
      [{ role: 'user' }, 'alice'],
      ['vip', 'bob'],
      [undefined, 'carol'],
    ]);
    expect(hub.broadcast('vip', { filter: (meta) => meta === 'vip', event: 'v' })).toBe(1);
    expect(hub.broadcast('alices', { filter: (_meta, id) => id === 'alice' })).toBe(2);
    expect(hub.broadcast('none', { filter: () => false })).toBe(0);
    // A throwing filter writes nothing to anyone.
    expect(() =>
      hub.broadcast('never', {
        filter: (meta) => {
          if (meta === 'vip') throw new RangeError('filter failed');
          return true;
        },
      }),
    ).toThrow(RangeError);
    expect(() => hub.broadcast('x', { filter: 'role' })).toThrow(/^options.filter must be a function/);
    hub.broadcast('end');
    await c.alice1.c.waitFor((x) => x.body() === 'data: "admins"\n\ndata: "alices"\n\ndata: "end"\n\n', 'alice1');
    await c.alice2.c.waitFor((x) => x.body() === 'data: "alices"\n\ndata: "end"\n\n', 'alice2');
    await c.bob.c.waitFor((x) => x.body() === 'event: v\ndata: "vip"\n\ndata: "end"\n\n', 'bob');
    await c.carol.c.waitFor((x) => x.body() === 'data: "end"\n\n', 'carol');
  });

  test('channel and filter together reach only the members that pass the filter', async () => {
    const c = await fourClients();
    hub.join('alice', 'staff');
    hub.join('bob', 'staff');
    expect(hub.broadcast('staff admins', { channel: 'staff', filter: (meta) => meta?.role === 'admin' })).toBe(1);
    expect(hub.publish('staff', 'staff vip', { filter: (meta) => meta === 'vip' })).toBe(1);
    hub.broadcast('end');
    await c.alice1.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'alice1');
    await c.alice2.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'alice2');
    await c.bob.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'bob');
    expect(c.alice1.c.body()).toBe('data: "staff admins"\n\ndata: "end"\n\n');
    expect(c.alice2.c.body()).toBe('data: "end"\n\n');
    expect(c.bob.c.body()).toBe('data: "staff vip"\n\ndata: "end"\n\n');
  });

  test('removing a client, or its disconnecting, takes it out of every channel', async () => {
    const c = await fourClients();
    hub.join('alice', 'a');
    hub.join('alice', 'shared');
    hub.join('bob', 'b');
    hub.join('bob', 'shared');
    hub.join('carol', 'c');
    expect(hub.getStats().channels).toBe(4);
    expect(hub.removeClient(c.alice1.res)).toBe(true);
    expect(hub.getStats().channels).toBe(4);
    expect(hub.publish('a', 'x')).toBe(1);
    expect(hub.removeClientById('alice')).toBe(true);
    expect(hub.getStats().channels).toBe(3);
    expect(hub.publish('a', 'x')).toBe(0);
    c.bob.c.destroy();
    await waitFor(() => hub.getClientCount() === 1, 'bob gone');
    expect(hub.getStats().channels).toBe(1);
    expect(hub.publish('shared', 'x')).toBe(0);
    hub.broadcastAndClose('bye');
    expect(hub.getStats().channels).toBe(0);
    // A new connection under a known id is not a member of the old one's channels.
    const again = await connect('/events?id=carol');
    await waitFor(() => hub.getClientCount() === 1, 'carol again');
    expect(hub.publish('c', 'x')).toBe(0);
    hub.send(again.res, 'hello');
    await again.c.waitFor((x) => x.body() === 'data: "hello"\n\n', 'hello');
  });

  test('bad channel names are TypeErrors', async () => {
    const c = await fourClients();
    for (const bad of ['', 'a\nb', '\r', 'tab\there', 'nul\0', 'x'.repeat(257)]) {
      expect(() => hub.join(c.bob.res, bad)).toThrow(TypeError);
      expect(() => hub.join('bob', bad)).toThrow(/^channel must/);
      expect(() => hub.leave(c.bob.res, bad)).toThrow(TypeError);
      expect(() => hub.leave('bob', bad)).toThrow(TypeError);
    }
    for (const bad of [5, null, undefined, {}]) {
      expect(() => hub.join('bob', bad)).toThrow(/^channel must be a string/);
      expect(() => hub.publish(bad, 'x')).toThrow(/^channel must be a string/);
      if (bad !== undefined) expect(() => hub.broadcast('x', { channel: bad })).toThrow(TypeError);
    }
    expect(() => hub.join({}, 'ok')).toThrow(/^target must be/);
    expect(() => hub.leave(42, 'ok')).toThrow(TypeError);
    expect(hub.getStats().channels).toBe(0);
    expect(hub.join(c.bob.res, 'x'.repeat(256))).toBe(1);
    expect(hub.join(c.bob.res, 'room:42 é')).toBe(1);
    expect(hub.getStats().channels).toBe(2);
  });
});

describe('slow clients on the stream transport', () => {
  const BOUND = 64 * 1024;
  const pad = 's'.repeat(16 * 1024);
  const frame = (seq) => `data: ${JSON.stringify({ seq, pad })}\n\n`;
  const chunkLength = (seq) => {
    const n = Buffer.byteLength(frame(seq));
    return n.toString(16).length + 2 + n + 2;
  };

  /** A stuck client (paused) and a healthy one, both on the stream transport. */
  async function stuckAndHealthy(policy) {
    hub.configure({ transport: 'stream', maxBufferedBytes: BOUND, slowClientPolicy: policy });
    const byId = {};
    await serve((req, res) => {
      byId[req.query.id] = res;
      hub.addClient(req.query.id, res);
    });
    const stuck = await connect('/events?id=stuck');
    const healthy = await connect('/events?id=healthy');
    await waitFor(() => hub.getClientCount() === 2, 'registered');
    expect(hub.getStats()).toMatchObject({ streamConnections: 2, socketConnections: 0 });
    await stuck.c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'stuck headers');
    await healthy.c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'healthy headers');
    stuck.c.socket.pause();
    const healthyHead = healthy.c.raw().length;
    let healthyBytes = healthyHead;
    healthy.c.socket.on('data', (d) => {
      healthyBytes += d.length;
    });
    let seq = 0;
    let expectedHealthyBytes = healthyHead;
    const events = [];
    for (const kind of ['slow', 'disconnect']) hub.on(kind, (e) => events.push({ kind, ...e }));
    /** Broadcasts until `until()` or `max` frames, pacing to the healthy client's reading. */
    async function pump(until, max) {
      const start = seq;
      while (!until() && seq - start < max) {
        hub.broadcast({ seq, pad });
        expectedHealthyBytes += chunkLength(seq);
        seq++;
        await nextTick();
        while (byId.healthy.writableLength > 0) await nextTick();
      }
    }
    return {
      stuck,
      healthy,
      byId,
      events,
      pump,
      sent: () => seq,
      healthyComplete: () => healthyBytes === expectedHealthyBytes,
    };
  }

  const seqsOf = (body) => framesOf(body).map((f) => JSON.parse(f.slice('data: '.length)));

  test("'disconnect' policy: a client that stops reading is disconnected; a healthy one gets every frame", async () => {
    const t = await stuckAndHealthy('disconnect');
    await t.pump(() => hub.getStats().slowDisconnects > 0, 5000);
    expect(hub.getStats().slowDisconnects).toBe(1);
    expect(hub.getClientCount()).toBe(1);
    expect(t.events).toEqual([
      { kind: 'slow', id: 'stuck' },
      { kind: 'disconnect', id: 'stuck', reason: 'slow' },
    ]);
    expect(t.byId.stuck.destroyed).toBe(true);
    await t.pump(() => false, 5);
    await waitFor(t.healthyComplete, 'healthy got every byte', 20_000);
    const seen = seqsOf(t.healthy.c.body());
    expect(seen.map((e) => e.seq)).toEqual([...Array(t.sent()).keys()]);
    expect(seen.every((e) => e.pad === pad)).toBe(true);
    // The server dropped it: once it reads again, the client sees the end.
    t.stuck.c.socket.resume();
    await t.stuck.c.closed;
    expect(hub.getStats().slowDisconnects).toBe(1);
  });

  test("'drop' policy: whole frames are skipped while behind, the connection stays, later frames arrive whole and in order", async () => {
    const t = await stuckAndHealthy('drop');
    await t.pump(() => hub.getStats().framesDropped > 0, 5000);
    expect(hub.getStats().framesDropped).toBe(1);
    await t.pump(() => false, 20);
    expect(hub.getClientCount()).toBe(2);
    expect(t.events).toEqual([]);
    t.stuck.c.socket.resume();
    await waitFor(() => t.byId.stuck.writableLength === 0, 'stuck drained', 20_000);
    const firstFinal = t.sent();
    await t.pump(() => false, 3);
    await t.stuck.c.waitFor((x) => x.body().endsWith(frame(firstFinal + 2)), 'final frames', 20_000);
    const seen = seqsOf(t.stuck.c.body()).map((e) => {
      expect(e.pad).toBe(pad);
      return e.seq;
    });
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
    expect(seen.slice(-3)).toEqual([firstFinal, firstFinal + 1, firstFinal + 2]);
    expect(seen.length).toBeLessThan(t.sent());
    expect(hub.getStats().framesDropped).toBe(t.sent() - seen.length);
    await waitFor(t.healthyComplete, 'healthy got every byte', 20_000);
    expect(seqsOf(t.healthy.c.body()).map((e) => e.seq)).toEqual([...Array(t.sent()).keys()]);
    expect(hub.getStats().slowDisconnects).toBe(0);
  });
});

describe('maxClients', () => {
  test('past the limit addClient throws SseCapacityError, the route answers 503; a freed slot is reused', async () => {
    hub.configure({ maxClients: 2 });
    const errors = [];
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        try {
          // The documented double addClient: the second call re-registers.
          const clientId = req.query.session || hub.addClient(res);
          hub.addClient(clientId, res, { ip: req.ip });
        } catch (err) {
          if (!(err instanceof SseCapacityError)) throw err;
          errors.push(err);
          res.status(err.statusCode).json({ error: err.code });
          return;
        }
        hub.initResponse(res);
        responses.push(res);
        hub.send(res, 'welcome');
      }),
    );
    const a = client();
    const b = client('/events?session=s-b');
    await a.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'a accepted');
    await b.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'b accepted');
    expect(hub.getClientCount()).toBe(2);
    const c = client();
    await c.waitFor((x) => x.raw().includes('ERR_SSE_CAPACITY'), 'c refused');
    expect(c.head()).toMatch(/^HTTP\/1\.1 503 /);
    expect(errors).toHaveLength(1);
    const [err] = errors;
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'SseCapacityError', code: 'ERR_SSE_CAPACITY', statusCode: 503, maxClients: 2 });
    expect(hub.getClientCount()).toBe(2);
    // Re-registering a registered response at the limit is not limited.
    expect(hub.addClient('moved', responses[0], { again: true })).toBe('moved');
    expect(hub.getClientCount()).toBe(2);
    a.destroy();
    await waitFor(() => hub.getClientCount() === 1, 'a left');
    const d = client();
    await d.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'd accepted');
    expect(hub.getClientCount()).toBe(2);
    expect(errors).toHaveLength(1);
    // 0 lifts the limit.
    hub.configure({ maxClients: 0 });
    const e = client();
    await e.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'e accepted');
    expect(hub.getClientCount()).toBe(3);
    for (const bad of [-1, 1.5, '2']) expect(() => hub.configure({ maxClients: bad })).toThrow(TypeError);
  });
});

describe.each(['auto', 'stream'])('lifecycle events, transport %s', (transport) => {
  test('connect and disconnect carry the right ids and reasons', async () => {
    hub.configure({ transport });
    const events = [];
    hub.on('connect', ({ id, res }) => events.push({ kind: 'connect', id, res }));
    hub.on('disconnect', (e) => events.push({ kind: 'disconnect', ...e }));
    await serve((req, res) => {
      if (req.query.broken) {
        res.write = () => {
          throw new Error('boom');
        };
      }
      hub.addClient(req.query.id, res);
      // Re-registering under the same id is not a second connect.
      hub.addClient(req.query.id, res);
    });
    const ids = ['a', 'b', 'c1', 'c1', 'd', 'e'];
    const conns = [];
    for (const id of ids) conns.push(await connect(`/events?id=${id}`));
    const broken = await connect('/events?id=broken&broken=1');
    await waitFor(() => hub.getClientCount() === 7, 'registered');
    expect(events).toEqual([...ids, 'broken'].map((id, i) => ({ kind: 'connect', id, res: responses[i] })));
    events.length = 0;

    conns[0].c.destroy();
    await waitFor(() => events.length === 1, 'close');
    expect(hub.removeClient(conns[1].res)).toBe(true);
    expect(hub.removeClientById('c1')).toBe(true);
    // The broken one's write throws: it is removed, the other two are written.
    expect(hub.broadcast('x')).toBe(2);
    expect(hub.broadcastAndClose('bye')).toBe(2);
    expect(events).toEqual([
      { kind: 'disconnect', id: 'a', reason: 'close' },
      { kind: 'disconnect', id: 'b', reason: 'removed' },
      { kind: 'disconnect', id: 'c1', reason: 'removed' },
      { kind: 'disconnect', id: 'c1', reason: 'removed' },
      { kind: 'disconnect', id: 'broken', reason: 'error' },
      { kind: 'disconnect', id: 'd', reason: 'removed' },
      { kind: 'disconnect', id: 'e', reason: 'removed' },
    ]);
    // The ends the helper made do not report the same connections again.
    for (const { c } of [...conns.slice(1), broken]) await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'ended');
    for (const { c } of conns) c.destroy();
    broken.c.destroy();
    await waitFor(() => responses.every((r) => r.destroyed || r.writableFinished), 'all closed');
    await nextTick();
    expect(events).toHaveLength(7);
  });
});

describe('leaks', () => {
  const MB = 1024 * 1024;
  async function heapUsed() {
    await collectGarbage();
    return process.memoryUsage().heapUsed;
  }

  test('join/leave/remove cycles with channels leave no channel, reference or heap behind', async () => {
    const cycle = (i) => {
      const res = new FakeResponse();
      const id = hub.addClient(`user-${i % 50}`, res, { i });
      hub.join(res, `room-${i % 20}`);
      hub.join(id, `user-channel-${i}`);
      hub.join(res, 'everyone');
      if (i % 3 === 0) hub.leave(res, 'everyone');
      hub.publish(`room-${i % 20}`, { i });
      if (i % 3 === 0) hub.removeClient(res);
      else if (i % 3 === 1) res.emit('close');
      else hub.removeClientById(id);
      if (res.listenerCount('close') !== 0) throw new Error(`listener left on cycle ${i}`);
    };
    for (let i = 0; i < 5_000; i++) cycle(i);
    const before = await heapUsed();
    for (let i = 0; i < 50_000; i++) cycle(i);
    const after = await heapUsed();
    expect(hub.getStats()).toMatchObject({ clients: 0, channels: 0 });
    expect(hub.nativeReferenceCount).toBe(idleRefs);
    expect(after - before).toBeLessThan(2 * MB);
  });

  test('real connections joining channels churn to zero channels and idle references', async () => {
    await serve((req, res) => {
      hub.addClient(req.query.id, res);
      hub.join(res, `room-${req.query.id}`);
      hub.join(req.query.id, 'all');
    });
    const churn = async (rounds) => {
      for (let r = 0; r < rounds; r++) {
        const batch = [];
        for (let i = 0; i < 20; i++) batch.push(client(`/events?id=u${i % 5}`));
        await waitFor(() => hub.getClientCount() === 20, 'batch registered');
        expect(hub.getStats().channels).toBe(6);
        expect(hub.publish('all', { r })).toBe(20);
        if (r % 2) hub.removeClientById('u0');
        for (const c of batch) c.destroy();
        await waitFor(() => hub.getClientCount() === 0, 'batch gone');
        expect(hub.getStats().channels).toBe(0);
      }
      // Keep nothing of finished connections alive.
      clients.length = 0;
      responses.length = 0;
    };
    await churn(5);
    const before = await heapUsed();
    await churn(40);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle references');
    const after = await heapUsed();
    expect(after - before).toBeLessThan(4 * MB);
  });

  test('history on: many broadcasts and reconnect replays keep the heap flat and references idle', async () => {
    hub.configure({ historySize: 64 });
    let replayWrites = 0;
    const cycle = (i) => {
      hub.broadcast({ i, text: 'x'.repeat(100) });
      const res = new FakeResponse();
      // Mostly within the history, sometimes too old (a reset), sometimes unknown.
      const lastEventId = i % 10 === 0 ? 'unknown' : String(Math.max(1, i - (i % 80)));
      hub.addClient(i % 2 ? `s-${i % 7}` : null, res, { i }, { lastEventId });
      hub.join(res, 'r');
      replayWrites += res.writes;
      if (i % 2) res.emit('close');
      else hub.removeClient(res);
    };
    for (let i = 1; i <= 3_000; i++) cycle(i);
    const before = await heapUsed();
    for (let i = 3_001; i <= 33_000; i++) cycle(i);
    const after = await heapUsed();
    const stats = hub.getStats();
    expect(stats).toMatchObject({ clients: 0, channels: 0 });
    expect(stats.replays).toBeGreaterThan(10_000);
    expect(stats.resets).toBeGreaterThan(3_000);
    expect(replayWrites).toBeGreaterThan(10_000);
    expect(hub.nativeReferenceCount).toBe(idleRefs);
    expect(after - before).toBeLessThan(2 * MB);

    // And with real reconnecting clients.
    await serve();
    const reconnects = async (rounds) => {
      for (let r = 0; r < rounds; r++) {
        hub.broadcast({ r });
        const batch = [];
        for (let i = 0; i < 10; i++) batch.push(client('/events', { 'Last-Event-ID': String(33_000 + r - (i % 3)) }));
        await waitFor(() => hub.getClientCount() === 10, 'batch registered');
        for (const c of batch) c.destroy();
        await waitFor(() => hub.getClientCount() === 0, 'batch gone');
      }
      // Keep nothing of finished connections alive.
      clients.length = 0;
      responses.length = 0;
    };
    await reconnects(5);
    const realBefore = await heapUsed();
    await reconnects(40);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle references');
    expect((await heapUsed()) - realBefore).toBeLessThan(4 * MB);
  });
});

describe('behind a compressing middleware', () => {
  test('without no-transform the stream is gzipped, and res.flush() still delivers each event at once', async () => {
    srv = await startServer((app) => {
      app.use(compression());
      // The helper's own headers: no-transform, so `compression` leaves it alone.
      app.get('/sse', (_req, res) => {
        hub.initResponse(res);
        hub.addClient('plain', res);
      });
      // An app that sets the content type itself: compression applies.
      app.get('/gz', (_req, res) => {
        res.setHeader('Content-Type', 'text/event-stream');
        res.setHeader('Cache-Control', 'no-cache');
        hub.addClient('gz', res);
      });
    });
    const plain = client('/sse', { 'Accept-Encoding': 'gzip' });
    const gz = client('/gz', { 'Accept-Encoding': 'gzip' });
    await waitFor(() => hub.getClientCount() === 2, 'registered');
    expect(hub.getStats()).toMatchObject({ streamConnections: 2, socketConnections: 0 });
    const decompressed = () => {
      const body = dechunk(Buffer.from(gz.raw(), 'latin1'));
      if (body.length === 0) return '';
      return zlib.gunzipSync(body, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString('utf8');
    };
    let expected = '';
    for (let i = 1; i <= 5; i++) {
      expect(hub.broadcast({ i, text: 'compressible '.repeat(20) }, { id: String(i) })).toBe(2);
      expected += `id: ${i}\ndata: ${JSON.stringify({ i, text: 'compressible '.repeat(20) })}\n\n`;
      // Event i is readable before event i+1 is sent: nothing waits in the compressor.
      await waitFor(() => decompressed() === expected, `gzip event ${i}`);
      await plain.waitFor((x) => x.body() === expected, `plain event ${i}`);
    }
    expect(gz.head()).toMatch(/\r\nContent-Encoding: gzip\r\n/i);
    expect(dechunk(Buffer.from(gz.raw(), 'latin1')).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(dechunk(Buffer.from(gz.raw(), 'latin1')).length).toBeLessThan(Buffer.byteLength(expected));
    expect(plain.head()).not.toMatch(/content-encoding/i);
  });
});
