// What goes on the wire for one event: the event, id, retry and data
// fields, raw mode, comments and their validation; a property test that
// random payloads and fields round-trip through a spec parser on both
// transports; heartbeats (comment frames on idle connections); and keys that
// are not well-formed UTF-16 (issue 9, D4).

const path = require('node:path');
// A dependency of `eventsource`, not a direct devDependency of this package.
const { createParser } = require('eventsource-parser');
const { SseHub } = require('..');
const { sseFixture } = require('./hub-fixture.js');
const {
  FakeResponse,
  waitFor,
  dechunk,
  runToExit,
  framesOf,
  nextTurn: nextTick,
  outcome,
  refused,
} = require('./helpers.js');

let hub;
let srv;
const { serve, client, connect, openEventSource, extraHubs } = sseFixture((t) => {
  ({ hub, srv } = t);
});

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

describe('D4: ids, channels and event ids must be well-formed UTF-16', () => {
  // Written for the stream transport.
  beforeEach(() => hub.configure({ transport: 'stream' }));

  test.each(['\uD800', '\uDBFF', '\uDC00'])(
    "a lone surrogate (%j) is refused with ERR_INVALID_ARG_VALUE wherever the package's own APIs make a string a key, and nothing is written",
    (s) => {
      hub.configure({ historySize: 10 });
      const member = new FakeResponse();
      hub.addClient('ok', member);
      hub.join(member, 'room');
      const fresh = new FakeResponse();
      const calls = {
        'comment(id)': [() => hub.comment(`user${s}`, 'c'), 'target'],
        'join(id, channel)': [() => hub.join(`user${s}`, 'room'), 'target'],
        'leave(id, channel)': [() => hub.leave(`user${s}`, 'room'), 'target'],
        'join(res, channel)': [() => hub.join(member, `room${s}`), 'channel'],
        'leave(res, channel)': [() => hub.leave(member, `room${s}`), 'channel'],
        'publish(channel)': [() => hub.publish(`room${s}`, 1), 'channel'],
        'broadcast({ channel })': [() => hub.broadcast(1, { channel: `room${s}` }), 'options.channel'],
        'send({ id })': [() => hub.send(member, 1, { id: `e${s}` }), 'options.id'],
        'broadcast({ id })': [() => hub.broadcast(1, { id: `e${s}` }), 'options.id'],
        'addClient(res, meta, { lastEventId })': [
          () => hub.addClient(fresh, undefined, { lastEventId: `1${s}` }),
          'options.lastEventId',
        ],
      };
      const got = {};
      const expected = {};
      for (const [name, [call, arg]] of Object.entries(calls)) {
        got[name] = outcome(call);
        expected[name] = refused('ERR_INVALID_ARG_VALUE', arg);
      }
      expect(got).toEqual(expected);
      expect({ clients: hub.getClientCount(), member: member.writes, fresh: fresh.writes }).toEqual({
        clients: 1,
        member: 0,
        fresh: 0,
      });
      expect(hub.getStats()).toMatchObject({ framesSent: 0, channels: 1 });
    },
  );

  test("'user\\uD800' and 'user\\uDBFF' can no longer reach each other; surrogate pairs still work", () => {
    const a = new FakeResponse();
    const b = new FakeResponse();
    // The original's functions take any id, as its Map does: lone
    // surrogates are kept distinct (encoded), never refused or merged.
    expect(hub.addClient('user\uD800', a)).toBe('user\uD800');
    // U+FFFD, what a lone surrogate used to turn into, is a legitimate id of its own.
    expect(hub.addClient('user\uFFFD', b)).toBe('user\uFFFD');
    expect(hub.sendToClient('user\uDBFF', 'x')).toBe(false);
    expect(hub.removeClientById('user\uDC00')).toBe(false);
    expect(hub.sendToClient('user\uD800', 'to a')).toBe(true);
    expect({ a: a.writes, b: b.writes, clients: hub.getClientCount() }).toEqual({ a: 1, b: 0, clients: 2 });
    const c = new FakeResponse();
    expect(hub.addClient('user\uD83D\uDE00', c)).toBe('user\uD83D\uDE00');
    expect(hub.sendToClient('user\uD83D\uDE00', 'smile')).toBe(true);
    expect({ b: b.writes, c: c.writes }).toEqual({ b: 0, c: 1 });
  });
});
