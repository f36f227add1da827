// The drop-in rule (issue 19): every call of the original sseHelper.js that a
// migrating app or its tests make behaves as the original, one test per row
// of the table, on the original suite's kind of mock response and on
// a real Express 5 response read byte by byte.

const sseHelper = require('..');
const { SseHub } = sseHelper;
const { startServer, rawGet, waitFor } = require('./helpers.js');
const { MockResponse } = require('./mock-response.js');

let hub;
beforeEach(() => {
  hub = new SseHub();
});
afterEach(async () => {
  await hub.close();
});

describe('on the original kind of mock', () => {
  test('1: formatSSEMessage is exported and returns the wire format', () => {
    expect(sseHelper.formatSSEMessage({ a: 1 })).toBe('data: {"a":1}\n\n');
    expect(hub.formatSSEMessage('x')).toBe('data: "x"\n\n');
    expect(hub.formatSSEMessage(undefined)).toBe('data: undefined\n\n');
  });

  test('2: _clients is a live Map view, _resIndex a WeakMap view', () => {
    const res = new MockResponse();
    hub.addClient('a', res, { ip: '1.2.3.4' });
    expect(hub._clients.has('a')).toBe(true);
    expect(hub._clients.size).toBe(1);
    const entry = hub._clients.get('a');
    expect(entry.res).toBe(res);
    expect(entry.meta).toEqual({ ip: '1.2.3.4' });
    expect(typeof entry.createdAt).toBe('number');
    expect(Math.abs(entry.createdAt - Date.now())).toBeLessThan(60_000);
    expect([...hub._clients.keys()]).toEqual(['a']);
    expect(hub._resIndex.get(res)).toBe('a');
    expect(hub._resIndex.has(res)).toBe(true);
    // An entry set by hand is seen by sendToClient and pruned by cleanup.
    const other = new MockResponse();
    hub._clients.set('hand', { res: other, meta: {}, createdAt: Date.now() });
    expect(hub.getClientCount()).toBe(2);
    expect(hub.sendToClient('hand', { n: 1 })).toBe(true);
    expect(other.writes).toEqual(['data: {"n":1}\n\n']);
    other.writableEnded = true;
    hub.cleanupStaleClients();
    expect(hub._clients.has('hand')).toBe(false);
    // delete drops the entry without ending the response, as the map does.
    expect(hub._clients.delete('a')).toBe(true);
    expect(res.writableEnded).toBe(false);
    expect(hub.getClientCount()).toBe(0);
    expect(res.listenerCount('close')).toBe(0);
  });

  test('3: initResponse on an object with Express set only', () => {
    const res = new MockResponse();
    let flushed = false;
    res.flushHeaders = () => {
      flushed = true;
    };
    expect(() => hub.initResponse(res)).not.toThrow();
    expect(res.headers).toEqual({
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
    expect(flushed).toBe(true);
  });

  test('4: cleanupStaleClients() defaults to one hour', () => {
    const res = new MockResponse();
    hub.addClient('a', res);
    expect(() => hub.cleanupStaleClients()).not.toThrow();
    expect(hub.getClientCount()).toBe(1);
    hub._clients.get('a'); // still there
    hub._clients.set('old', { res: new MockResponse(), createdAt: Date.now() - 61 * 60 * 1000 });
    hub.cleanupStaleClients();
    expect(hub._clients.has('old')).toBe(false);
    expect(hub._clients.has('a')).toBe(true);
  });

  test.each([0, null, Number.NaN, Number.POSITIVE_INFINITY, false, ''])(
    '5: cleanupStaleClients(%p) has no age limit: only ended responses go',
    async (arg) => {
      const live = new MockResponse();
      const ended = new MockResponse();
      hub.addClient('live', live);
      hub.addClient('ended', ended);
      ended.writableEnded = true;
      await new Promise((r) => setTimeout(r, 5));
      expect(() => hub.cleanupStaleClients(arg)).not.toThrow();
      expect([...hub._clients.keys()]).toEqual(['live']);
      expect(live.writableEnded).toBe(false);
    },
  );

  test('6: a res.write replaced after addClient is the one called', () => {
    const res = new MockResponse();
    hub.addClient('a', res);
    const seen = [];
    const original = res.write;
    res.write = function spy(chunk) {
      seen.push(chunk);
      return original.call(this, chunk);
    };
    hub.broadcast({ n: 1 });
    hub.sendToClient('a', { n: 2 });
    hub.send(res, { n: 3 });
    expect(seen).toEqual(['data: {"n":1}\n\n', 'data: {"n":2}\n\n', 'data: {"n":3}\n\n']);
  });

  test('7: a response whose writableEnded is true is skipped and pruned', () => {
    const a = new MockResponse();
    const b = new MockResponse();
    hub.addClient('a', a);
    hub.addClient('b', b);
    a.writableEnded = true;
    hub.broadcast({ n: 1 });
    expect(a.writes).toEqual([]);
    expect(b.writes).toEqual(['data: {"n":1}\n\n']);
    expect(hub._clients.has('a')).toBe(false);
    expect(hub.getClientCount()).toBe(1);
  });

  test('8: a response without a native socket receives strings', () => {
    const res = new MockResponse();
    hub.addClient('a', res);
    hub.broadcast({ n: 1 });
    hub.send(res, 'x');
    hub.sendToClient('a', [1]);
    expect(res.writes).toEqual(['data: {"n":1}\n\n', 'data: "x"\n\n', 'data: [1]\n\n']);
    for (const chunk of res.writes) expect(typeof chunk).toBe('string');
  });

  test('8: one string per broadcast, shared by every recipient', () => {
    const a = new MockResponse();
    const b = new MockResponse();
    hub.addClient('a', a);
    hub.addClient('b', b);
    hub.broadcast({ n: 1 });
    expect(a.writes[0]).toBe(b.writes[0]);
  });

  test('9: numeric ids are registered, found and returned as given; 42 and "42" are two clients', () => {
    const n = new MockResponse();
    const s = new MockResponse();
    expect(hub.addClient(42, n)).toBe(42);
    expect(hub.addClient('42', s)).toBe('42');
    expect(hub.getClientCount()).toBe(2);
    expect(hub.sendToClient(42, 'to-number')).toBe(true);
    expect(n.writes).toEqual(['data: "to-number"\n\n']);
    expect(s.writes).toEqual([]);
    expect(hub._clients.has(42)).toBe(true);
    expect(hub._resIndex.get(n)).toBe(42);
    expect([...hub._clients.keys()]).toEqual([42, '42']);
    hub.removeClientById(42);
    expect(n.writableEnded).toBe(true);
    expect(s.writableEnded).toBe(false);
    const events = [];
    hub.on('disconnect', (e) => events.push(e.id));
    hub.addClient(-0, new MockResponse());
    hub.removeClientById(0);
    expect(events).toEqual([0]);
  });

  test('10: nullish ids in lookups are a no-op, even inside a close handler', () => {
    const res = new MockResponse();
    hub.addClient(res);
    expect(() => hub.removeClientById(undefined)).not.toThrow();
    expect(hub.sendToClient(undefined, { a: 1 })).toBe(false);
    expect(hub.sendToClient(null, { a: 1 })).toBe(false);
    res.once('close', () => hub.removeClientById(undefined));
    expect(() => res.end()).not.toThrow();
    expect(hub.getClientCount()).toBe(0);
  });

  test('11: send(undefined, p) and removeClient(null) are no-ops', () => {
    expect(() => hub.send(undefined, { a: 1 })).not.toThrow();
    expect(() => hub.send(null, { a: 1 })).not.toThrow();
    expect(() => hub.send('text', { a: 1 })).not.toThrow();
    expect(() => hub.removeClient(null)).not.toThrow();
    expect(() => hub.removeClient(7)).not.toThrow();
  });

  test.each([
    [
      'a throwing toJSON',
      {
        toJSON: () => {
          throw new Error('no');
        },
      },
    ],
    [
      'a throwing getter',
      Object.defineProperty({}, 'x', {
        enumerable: true,
        get: () => {
          throw new Error('no');
        },
      }),
    ],
    ['a boxed BigInt', Object(10n)],
    ['a BigInt', 10n],
    [
      'a cycle',
      (() => {
        const o = {};
        o.o = o;
        return o;
      })(),
    ],
  ])('12: %s writes the original fallback instead of throwing', (_name, payload) => {
    const res = new MockResponse();
    hub.addClient('a', res);
    expect(() => hub.broadcast(payload)).not.toThrow();
    expect(() => hub.send(res, payload)).not.toThrow();
    expect(() => hub.sendToClient('a', payload)).not.toThrow();
    const fallback = 'data: {"error":"unserializable payload"}\n\n';
    expect(res.writes).toEqual([fallback, fallback, fallback]);
    expect(hub.formatSSEMessage(payload)).toBe(fallback);
    expect(() => hub.broadcastAndClose(payload)).not.toThrow();
    expect(res.writes[3]).toBe(fallback);
  });

  test('13: a throwing res.write in send and sendToClient ends and removes the client', () => {
    const a = new MockResponse();
    hub.addClient('a', a);
    a.write = () => {
      throw new Error('boom');
    };
    expect(hub.sendToClient('a', { n: 1 })).toBe(true);
    expect(a.writableEnded).toBe(true);
    expect(hub.getClientCount()).toBe(0);
    const b = new MockResponse();
    hub.addClient('b', b);
    b.write = () => {
      throw new Error('boom');
    };
    hub.send(b, { n: 1 });
    expect(b.writableEnded).toBe(true);
    expect(hub.getClientCount()).toBe(0);
    // Unregistered: ended all the same, as the original does.
    const c = new MockResponse();
    c.write = () => {
      throw new Error('boom');
    };
    expect(() => hub.send(c, 1)).not.toThrow();
    expect(c.writableEnded).toBe(true);
  });

  test("a response's close event removes it and ends it, as the original's listener does", () => {
    const res = new MockResponse();
    let ends = 0;
    const end = res.end.bind(res);
    res.end = () => {
      ends += 1;
      end();
    };
    hub.addClient('a', res);
    res.emit('close');
    expect(ends).toBe(1);
    expect(res.writableEnded).toBe(true);
    expect(hub.getClientCount()).toBe(0);
    expect(res.listenerCount('close')).toBe(0);
  });

  test('registering a response again restarts its age, under another id or its own', () => {
    const res = new MockResponse();
    hub.addClient('a', res);
    const first = hub._clients.get('a').createdAt;
    // The clock must move on for the restart to show.
    const until = first + 5;
    while (Date.now() <= until) {}
    const before = Date.now();
    hub.addClient('b', res);
    expect(hub._clients.get('b').createdAt).toBeGreaterThanOrEqual(before);
    while (Date.now() <= before + 5) {}
    const again = Date.now();
    hub.addClient('b', res);
    expect(hub._clients.get('b').createdAt).toBeGreaterThanOrEqual(again);
  });

  test('15: a plain { write, end } response without on/once is registered', () => {
    const writes = [];
    const res = { write: (c) => writes.push(c), end() {} };
    const id = hub.addClient(res);
    expect(hub.getClientCount()).toBe(1);
    hub.broadcast({ n: 1 });
    expect(writes).toEqual(['data: {"n":1}\n\n']);
    hub.removeClientById(id);
    expect(hub.getClientCount()).toBe(0);
  });

  test('15: a frozen response is registered, written and removed', () => {
    const writes = [];
    const res = Object.freeze({ write: (c) => writes.push(c), end() {} });
    expect(hub.addClient('f', res)).toBe('f');
    hub.broadcast({ n: 1 });
    expect(hub.sendToClient('f', { n: 2 })).toBe(true);
    expect(writes).toEqual(['data: {"n":1}\n\n', 'data: {"n":2}\n\n']);
    expect(hub._resIndex.get(res)).toBe('f');
    hub.removeClient(res);
    expect(hub.getClientCount()).toBe(0);
  });

  test('16: generated ids have the original shape, anon-<ms>-<hex>, with 128-bit-class randomness', () => {
    const before = Date.now();
    const ids = new Set();
    for (let i = 0; i < 200; i++) ids.add(hub.addClient(new MockResponse()));
    expect(ids.size).toBe(200);
    for (const id of ids) {
      const [, ms, hex] = /^anon-(\d+)-([0-9a-f]+)$/.exec(id);
      expect(Number(ms)).toBeGreaterThanOrEqual(before);
      expect(Number(ms)).toBeLessThanOrEqual(Date.now());
      expect(hex.length).toBeGreaterThanOrEqual(16);
    }
  });

  test("17: ids '', over 256 characters and with control characters are accepted, and never alias", () => {
    const ids = ['', 'x'.repeat(300), 'a\nb', 'a\u0000b', '\u0000n42', '\uD800', '\uDBFF', '\uFFFD', 42];
    const responses = ids.map(() => new MockResponse());
    ids.forEach((id, i) => {
      expect(hub.addClient(id, responses[i])).toBe(id);
    });
    expect(hub.getClientCount()).toBe(ids.length);
    ids.forEach((id, i) => {
      expect(hub.sendToClient(id, i)).toBe(true);
    });
    responses.forEach((res, i) => {
      expect(res.writes).toEqual([`data: ${i}\n\n`]);
    });
    expect([...hub._clients.keys()]).toEqual(ids);
  });
});

describe('on a real Express 5 response', () => {
  let srv;
  let responses;
  beforeEach(async () => {
    responses = [];
    srv = await startServer((app) => {
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        responses.push(res);
        const id =
          req.query.id === undefined
            ? undefined
            : Number.isNaN(Number(req.query.id))
              ? req.query.id
              : Number(req.query.id);
        if (id === undefined) hub.addClient(res);
        else hub.addClient(id, res);
      });
    });
  });
  afterEach(async () => {
    await hub.close();
    await srv.close();
  });

  async function connect(query = '') {
    const client = rawGet(srv.port, `/events${query}`);
    const before = responses.length;
    await waitFor(() => responses.length > before && hub.getClientCount() > 0, 'registration');
    return { client, res: responses[responses.length - 1] };
  }

  test('9: a numeric id on the wire, and a string id that looks the same is another client', async () => {
    const { client } = await connect('?id=7');
    expect(hub.sendToClient('7', { no: 1 })).toBe(false);
    expect(hub.sendToClient(7, { yes: 1 })).toBe(true);
    await client.waitFor((c) => c.body().includes('data: {"yes":1}\n\n'));
    expect(client.body()).not.toContain('no');
    client.destroy();
  });

  test('14: res.end() on the native writer sets writableEnded at once, and the bytes still flush', async () => {
    const { client, res } = await connect('?id=a');
    hub.broadcast({ last: true });
    res.end();
    expect(res.writableEnded).toBe(true);
    expect(res.finished).toBe(true);
    // The chunked body's terminator: Node's own end ran after the flush.
    await client.waitFor((c) => c.raw().endsWith('0\r\n\r\n'), 'the end of the body');
    expect(client.body()).toBe('data: {"last":true}\n\n');
    client.destroy();
  });

  test.each(['auto', 'stream'])(
    'a client that disconnects leaves its response ended, as the original listener does (%s transport)',
    async (transport) => {
      hub.configure({ transport });
      const { client, res } = await connect('?id=a');
      expect(res.writableEnded).toBe(false);
      client.destroy();
      await waitFor(() => hub.getClientCount() === 0, 'the close seen');
      expect(res.writableEnded).toBe(true);
    },
  );

  test('6 and 8: a wrapped res.write on a stream connection gets strings', async () => {
    hub.configure({ transport: 'stream' });
    const { client, res } = await connect('?id=w');
    const seen = [];
    const write = res.write;
    res.write = function wrapped(chunk, ...rest) {
      seen.push(chunk);
      return write.call(this, chunk, ...rest);
    };
    hub.broadcast({ n: 1 });
    expect(seen).toEqual(['data: {"n":1}\n\n']);
    await client.waitFor((c) => c.body() === 'data: {"n":1}\n\n');
    client.destroy();
  });

  test('12: an unserializable payload reaches the wire as the original fallback', async () => {
    const { client } = await connect('?id=u');
    const cycle = {};
    cycle.self = cycle;
    expect(() => hub.broadcast(cycle)).not.toThrow();
    await client.waitFor((c) => c.body() === 'data: {"error":"unserializable payload"}\n\n');
    client.destroy();
  });
});
