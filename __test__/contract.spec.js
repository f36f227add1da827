// Every row of the documented contract, on a real Express 5 server, read back
// as raw bytes; and the codes of the errors bad input gets (issue 9, D11, D14).

const { EventEmitter } = require('node:events');
const sseHelper = require('..');
const { SseHub } = sseHelper;
const {
  FakeResponse,
  startServer,
  rawGet,
  waitFor,
  delay,
  documentedRoute,
  outcome,
  refused,
} = require('./helpers.js');

/** The original's shape of a generated id, with 122 random bits in the hex part. */
const ANON_ID = /^anon-\d{13,}-[0-9a-f]{32}$/;

let srv;
let hub;
let routeResponses;
let idleRefs;

/** Route that registers with `register(req, res)`; defaults to addClient(res). */
async function serve(register = (_req, res) => hub.addClient(res)) {
  srv = await startServer((app) => {
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      routeResponses.push(res);
      register(req, res);
    });
  });
}

async function connect(n = 1, path = '/events') {
  const clients = [];
  const before = hub.getClientCount();
  for (let i = 0; i < n; i++) clients.push(rawGet(srv.port, path));
  await waitFor(() => routeResponses.length >= n && hub.getClientCount() >= before + n, 'clients');
  return clients;
}

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  /** Socket-transport connections when the native writer is on, else 0. */
  const onSocket = (n) => (transport === 'auto' ? n : 0);

  beforeEach(() => {
    hub = new SseHub().configure({ transport });
    idleRefs = hub.nativeReferenceCount;
    routeResponses = [];
  });

  afterEach(async () => {
    hub.broadcastAndClose('bye');
    // Socket-transport responses end once the writer has flushed them.
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references released');
    await srv?.close();
    srv = undefined;
  });

  describe('initResponse', () => {
    test('sends status 200 and the SSE headers at once', async () => {
      await serve();
      const [c] = await connect();
      await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
      const head = c.head();
      expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(head).toContain('\r\nContent-Type: text/event-stream; charset=utf-8\r\n');
      expect(head).toContain('\r\nCache-Control: no-cache, no-transform\r\n');
      expect(head).toContain('\r\nConnection: keep-alive\r\n');
      expect(head).toContain('\r\nX-Accel-Buffering: no\r\n');
      expect(head).toContain('\r\nTransfer-Encoding: chunked');
      // Nothing else was written: the headers left before any event.
      expect(c.raw().endsWith('\r\n\r\n')).toBe(true);
      expect(routeResponses[0].socket.noDelay ?? true).toBe(true);
    });

    test('throws a clear Error when the headers were already sent', async () => {
      let error;
      srv = await startServer((app) => {
        app.get('/events', (_req, res) => {
          res.write('x');
          try {
            hub.initResponse(res);
          } catch (e) {
            error = e;
          }
          res.end();
        });
      });
      const c = rawGet(srv.port);
      await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'response end');
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toMatch(/headers were already sent/);
    });

    test('rejects what is not a response', () => {
      expect(() => hub.initResponse({})).toThrow(TypeError);
      expect(() => hub.initResponse(null)).toThrow(/res must be an http.ServerResponse/);
    });
  });

  describe('addClient', () => {
    test('addClient(res) returns a server-generated anon-<ms>-<hex> id and registers once', async () => {
      const ids = [];
      await serve((_req, res) => ids.push(hub.addClient(res, { tag: 'a' })));
      await connect(3);
      expect(ids).toHaveLength(3);
      for (const id of ids) expect(id).toMatch(ANON_ID);
      expect(new Set(ids).size).toBe(3);
      expect(hub.getClientCount()).toBe(3);
    });

    test('the documented usage example works verbatim, double addClient included', async () => {
      srv = await startServer((app) => app.get('/events', documentedRoute(hub)));
      const c = rawGet(srv.port);
      await c.waitFor((x) => x.body().includes('\n\n'), 'first event');
      expect(c.body()).toMatch(/^data: \{"utc":"\d{4}-\d\d-\d\dT[\d:.]+Z"\}\n\n$/);
      expect(hub.getClientCount()).toBe(1);
      expect(hub.broadcast({ n: 1 })).toBe(1);
      await c.waitFor((x) => x.body().endsWith('data: {"n":1}\n\n'), 'broadcast');
    });

    test('addClient(id, res) uses the caller id; one id may hold several connections', async () => {
      await serve((req, res) => hub.addClient('session-1', res, { ip: req.ip }));
      const [a, b] = await connect(2);
      expect(hub.getClientCount()).toBe(2);
      expect(hub.sendToClient('session-1', { to: 'both' })).toBe(true);
      await a.waitFor((x) => x.body() === 'data: {"to":"both"}\n\n');
      await b.waitFor((x) => x.body() === 'data: {"to":"both"}\n\n');
      // Closing one tab leaves the other registered under the same id.
      a.destroy();
      await waitFor(() => hub.getClientCount() === 1, 'one left');
      expect(hub.sendToClient('session-1', 'still here')).toBe(true);
      await b.waitFor((x) => x.body().endsWith('data: "still here"\n\n'));
    });

    test('registering a registered response again moves it, never duplicates it', async () => {
      await serve((_req, res) => {
        const first = hub.addClient(res, { n: 1 });
        expect(hub.addClient(first, res, { n: 2 })).toBe(first);
        expect(hub.addClient('moved', res, { n: 3 })).toBe('moved');
      });
      const [c] = await connect();
      expect(hub.getClientCount()).toBe(1);
      expect(routeResponses[0].listenerCount('close')).toBe(baselineCloseListeners() + 1);
      expect(hub.sendToClient('moved', 1)).toBe(true);
      await c.waitFor((x) => x.body() === 'data: 1\n\n');
      expect(hub.broadcast(2)).toBe(1);
    });

    test('attaches exactly one close listener and removes it again', async () => {
      await serve((_req, res) => {
        for (let i = 0; i < 20; i++) hub.addClient(res);
        hub.addClient('x', res);
      });
      const warnings = [];
      const onWarning = (w) => warnings.push(w);
      process.on('warning', onWarning);
      await connect();
      const res = routeResponses[0];
      expect(res.listenerCount('close')).toBe(baselineCloseListeners() + 1);
      expect(hub.removeClient(res)).toBe(true);
      // On the socket transport the listener stays until the writer has
      // flushed and Node ended the response.
      await waitFor(() => res.listenerCount('close') === baselineCloseListeners(), 'listener detached');
      process.off('warning', onWarning);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    });

    test('a response that already closed is not registered and keeps no listener', async () => {
      let res;
      let id;
      srv = await startServer((app) => {
        app.get('/events', (_req, r) => {
          hub.initResponse(r);
          res = r;
          r.on('close', () => {
            id = hub.addClient(r);
          });
        });
      });
      const c = rawGet(srv.port);
      await waitFor(() => res, 'route');
      c.destroy();
      await waitFor(() => id, 'close handler');
      expect(id).toMatch(ANON_ID);
      expect(hub.getClientCount()).toBe(0);
      expect(hub.nativeReferenceCount).toBe(idleRefs);
      expect(res.listenerCount('close')).toBe(1);
    });

    test('what the original accepts is accepted; a response that is no object is a TypeError naming it', () => {
      const fakeRes = { write() {}, end() {}, on() {}, removeListener() {} };
      // The original throws here (its WeakMap takes no primitive key).
      expect(() => hub.addClient(42)).toThrow(TypeError);
      expect(() => hub.addClient(42)).toThrow(/^res must be/);
      expect(() => hub.addClient('id', 'not a response')).toThrow(/^res must be/);
      expect(hub.getClientCount()).toBe(0);
      // Any id the original's Map takes, a bare `{ write }`, and even `{}`
      // (the original registers it; its first write fails and removes it).
      expect(hub.addClient('id', { write() {} })).toBe('id');
      expect(hub.addClient(42, fakeRes)).toBe(42);
      for (const id of ['', 'x'.repeat(257), 'a\nb', 'a\u0000b']) expect(hub.addClient(id, { write() {} })).toBe(id);
      expect(hub.addClient({})).toMatch(ANON_ID);
      expect(hub.getClientCount()).toBe(7);
      expect(hub.broadcast(1)).toBe(6);
      expect(hub.getClientCount()).toBe(6);
      expect(hub.removeClient(fakeRes)).toBe(true);
    });
  });

  describe('removal', () => {
    test('removeClient(res) unregisters and ends the response', async () => {
      await serve();
      const [c] = await connect();
      expect(hub.removeClient(routeResponses[0])).toBe(true);
      expect(hub.getClientCount()).toBe(0);
      // The chunked body was terminated properly: no orphaned open socket.
      await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'terminating chunk');
      expect(hub.removeClient(routeResponses[0])).toBe(false);
    });

    test('removeClientById ends every connection under the id', async () => {
      await serve((req, res) => hub.addClient(req.query.id, res));
      const a = rawGet(srv.port, '/events?id=s1');
      const b = rawGet(srv.port, '/events?id=s1');
      const other = rawGet(srv.port, '/events?id=s2');
      await waitFor(() => hub.getClientCount() === 3, 'three clients');
      expect(hub.removeClientById('s1')).toBe(true);
      expect(hub.removeClientById('s1')).toBe(false);
      expect(hub.getClientCount()).toBe(1);
      await a.waitFor((x) => x.raw().endsWith('0\r\n\r\n'));
      await b.waitFor((x) => x.raw().endsWith('0\r\n\r\n'));
      expect(hub.broadcast('left')).toBe(1);
      await other.waitFor((x) => x.body() === 'data: "left"\n\n');
      // Any id is looked up, as in the original: 7 is not '7'.
      expect(hub.removeClientById(7)).toBe(false);
    });

    test('a client that disconnects is cleaned up by its close event', async () => {
      await serve();
      const clients = await connect(10);
      for (const c of clients) c.destroy();
      await waitFor(() => hub.getClientCount() === 0, 'cleanup');
      expect(hub.nativeReferenceCount).toBe(idleRefs);
      for (const res of routeResponses) expect(res.listenerCount('close')).toBe(baselineCloseListeners());
    });
  });

  describe('sending', () => {
    test('send writes to any SSE response, registered or not, and false once closed', async () => {
      await serve(() => {});
      const [c] = await connect(0).then(() => [rawGet(srv.port)]);
      await waitFor(() => routeResponses.length === 1, 'route');
      const res = routeResponses[0];
      expect(hub.send(res, 'hi')).toBe(true);
      await c.waitFor((x) => x.body() === 'data: "hi"\n\n');
      // The exact chunk on the wire: size line, frame, CRLF.
      expect(c.raw().endsWith('\r\n\r\nc\r\ndata: "hi"\n\n\r\n')).toBe(true);
      c.destroy();
      await waitFor(() => res.destroyed, 'closed');
      expect(hub.send(res, 'late')).toBe(false);
      res.end();
      expect(hub.send(res, 'after end')).toBe(false);
      // As the original: an object without `write` is nothing to write to.
      expect(hub.send({}, 1)).toBe(false);
    });

    test('sendToClient returns false for an unknown id', () => {
      expect(hub.sendToClient('nobody', 1)).toBe(false);
      expect(hub.sendToClient(undefined, 1)).toBe(false);
    });

    test('broadcast frames once and returns how many were written', async () => {
      await serve();
      const clients = await connect(5);
      expect(hub.getStats()).toMatchObject({ clients: 5, socketConnections: onSocket(5) });
      expect(hub.broadcast({ a: [1, 'two'], b: null })).toBe(5);
      for (const c of clients) {
        await c.waitFor((x) => x.body() === 'data: {"a":[1,"two"],"b":null}\n\n');
        expect(c.chunks()).toEqual(['data: {"a":[1,"two"],"b":null}\n\n']);
      }
    });

    test('a response ended by the app is skipped and removed, the others still get the frame', async () => {
      await serve();
      const clients = await connect(3);
      routeResponses[1].end();
      expect(hub.broadcast('x')).toBe(2);
      expect(hub.getClientCount()).toBe(2);
      await clients[0].waitFor((x) => x.body() === 'data: "x"\n\n');
      await clients[2].waitFor((x) => x.body() === 'data: "x"\n\n');
      await delay(20);
      expect(clients[1].body()).toBe('');
    });

    test('a write that throws removes that connection only, and ends it', async () => {
      await serve((req, res) => {
        // As a wrapping middleware would: this response's write throws.
        if (req.query.broken) {
          res.write = () => {
            throw new Error('boom');
          };
        }
        hub.addClient(res);
      });
      const good1 = rawGet(srv.port);
      const broken = rawGet(srv.port, '/events?broken=1');
      const good2 = rawGet(srv.port);
      await waitFor(() => hub.getClientCount() === 3, 'clients');
      expect(hub.broadcast({ ok: true })).toBe(2);
      expect(hub.getClientCount()).toBe(2);
      await good1.waitFor((x) => x.body() === 'data: {"ok":true}\n\n');
      await good2.waitFor((x) => x.body() === 'data: {"ok":true}\n\n');
      await broken.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'broken one ended');
      expect(broken.body()).toBe('');
      // The throwing response kept the stream transport: its write is not Node's.
      expect(hub.getStats()).toMatchObject({ clients: 2, socketConnections: onSocket(2) });
    });

    test('broadcastAndClose sends the last frame, ends all and empties the registry', async () => {
      await serve();
      const clients = await connect(4);
      expect(hub.broadcastAndClose({ bye: true })).toBe(4);
      expect(hub.getClientCount()).toBe(0);
      for (const c of clients) {
        await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'end of body');
        expect(c.body()).toBe('data: {"bye":true}\n\n');
      }
      expect(hub.nativeReferenceCount).toBe(idleRefs);
    });
  });

  describe('serialization', () => {
    async function frameOf(payload) {
      // Called twice in one test: one server, a client per call.
      if (!srv) await serve();
      const [c] = await connect();
      hub.broadcast(payload);
      await c.waitFor((x) => x.body().endsWith('\n\n'), 'frame');
      return c.body();
    }

    test('JSON.stringify semantics: key order, toJSON, strings quoted', async () => {
      const payload = { z: 1, a: { toJSON: () => 'custom' }, d: new Date(0), u: undefined };
      expect(await frameOf(payload)).toBe(`data: ${JSON.stringify(payload)}\n\n`);
    });

    test('a circular reference or a BigInt is sent as the original fallback', async () => {
      const a = { name: 'a' };
      a.self = a;
      expect(await frameOf(a)).toBe('data: {"error":"unserializable payload"}\n\n');
      expect(await frameOf({ big: 12345678901234567890n })).toBe('data: {"error":"unserializable payload"}\n\n');
    });

    test('a repeated, non-circular reference is serialized every time', async () => {
      const shared = { v: 1 };
      expect(await frameOf({ x: shared, y: [shared, shared] })).toBe('data: {"x":{"v":1},"y":[{"v":1},{"v":1}]}\n\n');
    });

    test.each([
      ['undefined', undefined],
      ['a function', () => 1],
      ['a symbol', Symbol('s')],
    ])('a top-level %s is sent as the original sends it, undefined', async (_name, payload) => {
      expect(await frameOf(payload)).toBe('data: undefined\n\n');
    });

    test('line breaks never leave the data line', async () => {
      expect(await frameOf({ text: 'a\nb\r\nc\u2028' })).toBe('data: {"text":"a\\nb\\r\\nc\u2028"}\n\n');
    });

    test('a throwing getter or toJSON never throws: the original fallback is written', async () => {
      await serve();
      const [c] = await connect();
      const getter = {
        get x() {
          throw new Error('secret');
        },
      };
      const toJSON = {
        toJSON: () => {
          throw new RangeError('nope');
        },
      };
      const fallback = 'data: {"error":"unserializable payload"}\n\n';
      for (const bad of [getter, toJSON]) {
        expect(hub.broadcast(bad)).toBe(1);
        expect(hub.send(routeResponses[0], bad)).toBe(true);
        expect(hub.sendToClient('any', bad)).toBe(false);
      }
      expect(hub.broadcast('after')).toBe(1);
      await c.waitFor((x) => x.body().endsWith('data: "after"\n\n'));
      expect(c.body()).toBe(`${fallback.repeat(4)}data: "after"\n\n`);
    });
  });

  describe('cleanupStaleClients', () => {
    test('removes ended/destroyed connections and ends those older than maxAgeMs', async () => {
      await serve();
      const clients = await connect(3);
      routeResponses[0].end();
      routeResponses[1].destroy();
      // On the socket transport the app's res.end() and res.destroy() already
      // unregistered them.
      expect(hub.cleanupStaleClients(60_000)).toBe(transport === 'auto' ? 0 : 2);
      expect(hub.getClientCount()).toBe(1);
      await delay(15);
      expect(hub.cleanupStaleClients(5)).toBe(1);
      expect(hub.getClientCount()).toBe(0);
      await clients[2].waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'ended');
    });

    test('takes any maxAgeMs as the original does: the default one hour, falsy for none, else compared as a number', async () => {
      await serve();
      await connect(2);
      for (const arg of [undefined, 0, null, Number.NaN, Number.POSITIVE_INFINITY, '1e9', 1e9, {}]) {
        expect(hub.cleanupStaleClients(arg)).toBe(0);
      }
      expect(hub.getClientCount()).toBe(2);
      await delay(5);
      // A negative age limit, or one the comparison cannot convert (the
      // original's throws per client, which it then removes), takes everyone.
      expect(hub.cleanupStaleClients(-1)).toBe(2);
      expect(hub.getClientCount()).toBe(0);
      await connect(1);
      expect(hub.cleanupStaleClients(Symbol('x'))).toBe(1);
    });
  });
});

describe('module shape', () => {
  test('default export, bound named functions and separate instances', () => {
    const names = [
      'initResponse',
      'addClient',
      'removeClient',
      'removeClientById',
      'sendToClient',
      'send',
      'broadcast',
      'broadcastAndClose',
      'getClientCount',
      'cleanupStaleClients',
    ];
    for (const name of names) expect(typeof sseHelper[name]).toBe('function');
    const { getClientCount } = sseHelper;
    expect(getClientCount()).toBe(0);
    const fakeRes = { write() {}, end() {}, on() {}, removeListener() {} };
    const other = new SseHub();
    other.addClient(fakeRes);
    expect(other.getClientCount()).toBe(1);
    expect(sseHelper.getClientCount()).toBe(0);
    other.removeClient(fakeRes);
    expect(sseHelper.default).toBe(sseHelper);
  });
});

describe('error codes', () => {
  // Fake responses only; written for the stream transport.
  beforeEach(() => {
    hub = new SseHub().configure({ transport: 'stream' });
    idleRefs = hub.nativeReferenceCount;
  });

  describe('D11: every bad-input TypeError carries a code', () => {
    const res = new FakeResponse();
    test.each([
      ['configure(null)', () => hub.configure(null), 'options'],
      ['send(res, 1, { event: 5 })', () => hub.send(res, 1, { event: 5 }), 'options.event'],
      ['join(res, 5)', () => hub.join(res, 5), 'channel'],
      ['initResponse(5)', () => hub.initResponse(5), 'res'],
      ['addClient(5)', () => hub.addClient(5), 'res'],
      ['broadcast(1, { channel: 5 })', () => hub.broadcast(1, { channel: 5 }), 'options.channel'],
      ['broadcast(1, { filter: 5 })', () => hub.broadcast(1, { filter: 5 }), 'options.filter'],
      ['comment(null, 5)', () => hub.comment(null, 5), 'text'],
      ['send(res, 5, { raw: true })', () => hub.send(res, 5, { raw: true }), 'payload'],
    ])('%s throws a TypeError with code ERR_INVALID_ARG_TYPE', (_name, call, arg) => {
      expect(outcome(call)).toEqual(refused('ERR_INVALID_ARG_TYPE', arg));
      expect(res.writes).toBe(0);
    });
  });

  describe('strict options: an unknown key is a TypeError naming it, with the likely intended key', () => {
    const res = new FakeResponse();
    test.each([
      ['configure({ maxBuffer: 1e6 })', () => hub.configure({ maxBuffer: 1e6 }), 'maxBuffer', 'maxBufferedBytes'],
      [
        "configure({ redis: { url, strem: 'x' } })",
        () => hub.configure({ redis: { url: 'redis://127.0.0.1:1', strem: 'x' } }),
        'redis.strem',
        'redis.stream',
      ],
      ['configure({ heartbeatMS: 5 })', () => hub.configure({ heartbeatMS: 5 }), 'heartbeatMS', 'heartbeatMs'],
      ["send(res, 1, { evnt: 'x' })", () => hub.send(res, 1, { evnt: 'x' }), 'evnt', 'event'],
      ["sendToClient('a', 1, { retyr: 5 })", () => hub.sendToClient('a', 1, { retyr: 5 }), 'retyr', 'retry'],
      ["broadcast(1, { chanel: 'news' })", () => hub.broadcast(1, { chanel: 'news' }), 'chanel', 'channel'],
      ["publish('news', 1, { channel: 'x' })", () => hub.publish('news', 1, { channel: 'x' }), 'channel', undefined],
      [
        'broadcastAndClose(1, { filter: f })',
        () => hub.broadcastAndClose(1, { filter: () => true }),
        'filter',
        undefined,
      ],
      [
        "addClient(res, null, { lastEventID: '3' })",
        () => hub.addClient(res, null, { lastEventID: '3' }),
        'lastEventID',
        'lastEventId',
      ],
    ])('%s', (_name, call, key, hint) => {
      const before = hub.getStats();
      expect(outcome(call)).toEqual({
        ...refused('ERR_INVALID_ARG_VALUE', `options.${key}`),
        message: hint
          ? expect.stringContaining(`options.${key} is not a known option; did you mean options.${hint}?`)
          : expect.stringMatching(new RegExp(`^options\\.${key} is not a known option \\(known: `)),
      });
      // Nothing was applied, registered or written.
      expect(hub.getStats()).toEqual(before);
      expect(res.writes).toBe(0);
    });

    test('every documented option is still accepted', () => {
      hub.configure({
        transport: 'stream',
        maxBufferedBytes: 1 << 20,
        slowClientPolicy: 'drop',
        historySize: 10,
        heartbeatMs: 1000,
        maxClients: 5,
        endTimeoutMs: 1000,
      });
      const id = hub.addClient(res, null, { lastEventId: '1' });
      expect(hub.send(res, 'x', { event: 'e', id: '1', retry: 5, raw: true })).toBe(true);
      expect(hub.broadcast('x', { event: 'e', raw: true, filter: () => true })).toBe(1);
      expect(hub.publish('news', 'x', { event: 'e' })).toBe(0);
      expect(hub.sendToClient(id, 'x', { retry: 1 })).toBe(true);
      expect(hub.broadcastAndClose('x', { id: '9' })).toBe(1);
    });
  });

  describe('writerThreads', () => {
    test('an integer from 1 to 64; anything else is a TypeError and changes nothing', () => {
      const threads = hub.getStats().writerThreads;
      expect(threads).toBeGreaterThanOrEqual(1);
      for (const bad of [0, 65, 1.5, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
        expect(outcome(() => hub.configure({ writerThreads: bad }))).toEqual(
          refused('ERR_INVALID_ARG_VALUE', 'options.writerThreads'),
        );
      }
      expect(outcome(() => hub.configure({ writerThreads: '2' }))).toEqual(
        refused('ERR_INVALID_ARG_TYPE', 'options.writerThreads'),
      );
      expect(hub.getStats().writerThreads).toBe(threads);
      for (const good of [1, 64, 3]) {
        hub.configure({ writerThreads: good });
        expect(hub.getStats()).toMatchObject({ writerThreads: good, socketConnectionsByThread: [] });
      }
    });
  });

  describe('D14: responses that cannot be extended', () => {
    /** An EventEmitter response keeping its state in closures, so it still works frozen. */
    function closureResponse() {
      const log = { writes: [], ends: 0 };
      const res = new EventEmitter();
      res.write = (chunk) => log.writes.push(chunk) > 0;
      res.end = () => {
        log.ends += 1;
      };
      return { res, log, emitter: res };
    }

    test.each(['preventExtensions', 'seal', 'freeze'])(
      'a response under Object.%s is registered, written, found and removed as any other',
      (method) => {
        const { res, log, emitter } = closureResponse();
        Object[method](res);
        expect(hub.addClient('a', res)).toBe('a');
        expect(hub.getClientCount()).toBe(1);
        expect(hub._resIndex.get(res)).toBe('a');
        hub.broadcast({ n: 1 });
        expect(hub.sendToClient('a', { n: 2 })).toBe(true);
        expect(log.writes).toEqual(['data: {"n":1}\n\n', 'data: {"n":2}\n\n']);
        // Moved to another id: found under it, not twice.
        expect(hub.addClient('b', res)).toBe('b');
        expect([...hub._clients.keys()]).toEqual(['b']);
        // Its close ends it and removes it, as the original's listener does.
        // (A frozen EventEmitter cannot emit to a `once` listener: Node's
        // removeListener throws on its frozen `_eventsCount`, here as with
        // the original; removeClient does the same work.)
        if (method === 'freeze') expect(hub.removeClient(res)).toBe(true);
        else emitter.emit('close');
        expect({ clients: hub.getClientCount(), ends: log.ends, removed: hub.removeClient(res) }).toEqual({
          clients: 0,
          ends: 1,
          removed: false,
        });
        // Under a generated id, then removed by the response.
        const other = closureResponse();
        Object[method](other.res);
        expect(hub.addClient(other.res)).toMatch(ANON_ID);
        expect(hub.removeClient(other.res)).toBe(true);
        expect({ clients: hub.getClientCount(), refs: hub.nativeReferenceCount, ends: other.log.ends }).toEqual({
          clients: 0,
          refs: idleRefs,
          ends: 1,
        });
      },
    );
  });
});

/** Express and node:http attach their own close listeners to responses. */
function baselineCloseListeners() {
  return routeResponses.length
    ? routeResponses[0].listeners('close').filter((l) => l.name !== 'sseHelperOnClose').length
    : 0;
}

describe('drain(), ready() and globalClientCount() without a Redis bus', () => {
  test('drain() rejects bad options with a TypeError naming the key, and applies nothing', async () => {
    const hub = new SseHub();
    const rejection = async (call) => {
      try {
        await call();
      } catch (err) {
        return { name: err.name, code: err.code, message: err.message };
      }
      return 'resolved';
    };
    expect(await rejection(() => hub.drain({ retryMS: 5 }))).toEqual({
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringMatching(/^options\.retryMS is not a known option; did you mean options\.retryMs\?/),
    });
    expect(await rejection(() => hub.drain({ retryMs: '5' }))).toMatchObject({
      code: 'ERR_INVALID_ARG_TYPE',
      message: expect.stringMatching(/^options\.retryMs must be a number/),
    });
    for (const bad of [-1, 1.5, 2 ** 31, Number.NaN]) {
      expect(await rejection(() => hub.drain({ retryMs: bad }))).toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
        message: expect.stringMatching(/^options\.retryMs must be an integer from 0 to 2147483647/),
      });
    }
    // Nothing was applied: the hub still takes clients.
    expect(typeof hub.addClient(new FakeResponse())).toBe('string');
    await hub.close();
  });

  test('drain({ retryMs }) sends the retry field alone, ends every connection and closes the hub', async () => {
    class Recording extends FakeResponse {
      text = '';
      write(chunk) {
        this.text += Buffer.from(chunk).toString();
        return super.write();
      }
    }
    const hub = new SseHub();
    hub.configure({ transport: 'stream' });
    const a = new Recording();
    const b = new Recording();
    hub.addClient(a);
    hub.addClient('x', b);
    await hub.drain({ retryMs: 250 });
    for (const res of [a, b]) {
      expect(res.text).toBe('retry: 250\n\n');
      expect(res.writableEnded).toBe(true);
    }
    expect(hub.getClientCount()).toBe(0);
    expect(outcome(() => hub.addClient(new FakeResponse()))).toMatchObject({ code: 'ERR_SSE_CLOSED' });
  });

  test('ready() resolves at once and globalClientCount() is this hub count', async () => {
    const hub = new SseHub();
    hub.addClient(new FakeResponse());
    await expect(hub.ready()).resolves.toBeUndefined();
    await expect(hub.globalClientCount()).resolves.toBe(1);
    expect(hub.getStats().bus).toBeNull();
    await hub.close();
  });
});

test('configure({ redis }) with a bad URL applies none of the other options either', () => {
  const hub = new SseHub();
  const before = hub.getStats();
  expect(outcome(() => hub.configure({ writerThreads: 3, redis: 'redis://127.0.0.1:notaport' }))).toMatchObject({
    threw: 'TypeError',
    code: 'ERR_INVALID_ARG_VALUE',
    message: expect.stringMatching(/^options\.redis\.url is not a usable Redis URL/),
  });
  expect(hub.getStats()).toEqual(before);
  expect(hub.getStats().bus).toBeNull();
});
