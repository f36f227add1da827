// Admission control (issue 28) on real sockets: maxClientsPerKey with the
// default key (the remote address; X-Forwarded-For only behind a trusted
// proxy) or the app's clientKey, the global maxClients, the refusal answered
// before any SSE header (429 or 503, Retry-After, a short body) by
// hub.refuse, limits that hold over a storm of connections whose route
// awaits between initResponse and addClient, reservations given back, the
// counters in getStats() and the metrics, and bad options refused.

const { SseCapacityError, SseKeyCapacityError } = require('..');
const { sseFixture } = require('./hub-fixture.js');
const { waitFor, outcome, refused, collectGarbage, FakeResponse } = require('./helpers.js');

let hub;
// biome-ignore lint/correctness/noUnusedVariables: bodies assign the server they start; the fixture closes it.
let srv;
const { startServer, client } = sseFixture((t) => {
  ({ hub, srv } = t);
});

/** A test double initResponse accepts: it takes headers and flushes them. */
class HeaderResponse extends FakeResponse {
  headersSent = false;
  statusCode = 200;
  headers = {};
  setHeader(name, value) {
    this.headers[name.toLowerCase()] = value;
  }
  flushHeaders() {
    this.headersSent = true;
  }
}

/** A gate the route awaits between initResponse and addClient, opened by the test. */
function gate() {
  let open;
  const opened = new Promise((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * The documented route: initResponse (refused in one line), then an await
 * (the app looking the user up, say), then addClient. `arrived` counts the
 * requests that reached it; `refusals` the errors it answered.
 */
async function serveAdmission({ before = Promise.resolve() } = {}) {
  const seen = { arrived: 0, refusals: [], registered: 0 };
  await startServer((app) =>
    app.get('/events', async (req, res) => {
      seen.arrived++;
      try {
        hub.initResponse(res);
      } catch (err) {
        seen.refusals.push(err);
        return hub.refuse(res, err);
      }
      await before;
      hub.addClient(req.query.id ?? null, res);
      seen.registered++;
      hub.send(res, 'welcome');
    }),
  );
  return seen;
}

const isSse = (c) => /content-type: text\/event-stream/i.test(c.head());
const statusOf = (c) => Number(/^HTTP\/1\.1 (\d{3}) /.exec(c.raw())?.[1]);
const answered = (c) => statusOf(c) === 429 || statusOf(c) === 503 || c.body().includes('data: "welcome"');

describe('maxClientsPerKey', () => {
  test('a storm of 200 connections from one key with a cap of 5: exactly 5 admitted, the rest 429 with Retry-After and a body, no SSE header', async () => {
    hub.configure({ maxClientsPerKey: 5, retryAfterMs: 2500 });
    const { opened, open } = gate();
    const seen = await serveAdmission({ before: opened });
    const clients = Array.from({ length: 200 }, () => client());
    // Every request is in the route before any admitted one registers.
    await waitFor(() => seen.arrived === 200, 'all 200 requests in the route', 20_000);
    expect(hub.getStats()).toMatchObject({ clients: 0, pendingAdmissions: 5, admissionKeys: 1 });
    open();
    await waitFor(() => clients.every(answered), 'every request answered', 20_000);

    const admitted = clients.filter((c) => statusOf(c) === 200);
    const refusedClients = clients.filter((c) => statusOf(c) === 429);
    expect(admitted).toHaveLength(5);
    expect(refusedClients).toHaveLength(195);
    for (const c of admitted) expect(isSse(c)).toBe(true);
    for (const c of refusedClients) {
      expect(isSse(c)).toBe(false);
      expect(c.head()).toMatch(/\r\nretry-after: 3\r\n/i);
      expect(c.head()).toMatch(/\r\ncontent-type: text\/plain; charset=utf-8\r\n/i);
      expect(c.raw().split('\r\n\r\n')[1]).toBe(
        '429 Too Many Requests: this client has too many event streams open; retry in 3 s\n',
      );
    }
    expect(seen.refusals).toHaveLength(195);
    expect(seen.refusals[0]).toBeInstanceOf(SseKeyCapacityError);
    expect(seen.refusals[0]).toMatchObject({
      name: 'SseKeyCapacityError',
      code: 'ERR_SSE_KEY_CAPACITY',
      status: 429,
      statusCode: 429,
      retryAfter: 3,
      maxClientsPerKey: 5,
      key: '127.0.0.1',
      message: 'the SSE hub is at its limit of 5 clients per key',
    });
    expect(hub.getStats()).toMatchObject({
      clients: 5,
      pendingAdmissions: 0,
      admissionKeys: 1,
      refusedMaxClientsPerKey: 195,
      refusedMaxClients: 0,
    });
    expect(hub.metrics()).toContain('\nsse_refused_max_clients_per_key_total 195\n');
    expect(hub.metrics()).toContain('\nsse_pending_admissions 0\n');
  }, 60_000);

  test('many keys (clientKey reads a header), each under its cap, are all admitted; one more for a key is refused', async () => {
    hub.configure({ maxClientsPerKey: 3, clientKey: (req) => req.headers['x-user'] });
    const { opened, open } = gate();
    const seen = await serveAdmission({ before: opened });
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    const clients = users.flatMap((user) => [0, 1, 2].map(() => client('/events', { 'X-User': user })));
    await waitFor(() => seen.arrived === 120, 'all 120 requests in the route', 20_000);
    open();
    await waitFor(() => clients.every(answered), 'every request answered', 20_000);
    expect(clients.filter((c) => statusOf(c) === 200)).toHaveLength(120);
    expect(hub.getStats()).toMatchObject({ clients: 120, admissionKeys: 40, refusedMaxClientsPerKey: 0 });
    const extra = client('/events', { 'X-User': 'user-7' });
    await extra.waitFor((c) => statusOf(c) === 429, 'user-7 refused');
    // A request the app's key leaves out (no header) is not limited per key.
    const anonymous = [client(), client(), client(), client()];
    await waitFor(() => anonymous.every((c) => c.body().includes('welcome')), 'anonymous admitted');
    expect(hub.getStats()).toMatchObject({ clients: 124, admissionKeys: 40, refusedMaxClientsPerKey: 1 });
  }, 60_000);

  test.each(['auto', 'stream'])(
    'a disconnect frees its slot (transport %s); keys are forgotten at zero',
    async (transport) => {
      hub.configure({ transport, maxClientsPerKey: 2 });
      await serveAdmission();
      const a = client();
      const b = client();
      await waitFor(() => [a, b].every((c) => c.body().includes('welcome')), 'a and b admitted');
      const c = client();
      await c.waitFor((x) => statusOf(x) === 429, 'c refused');
      a.destroy();
      await waitFor(() => hub.getClientCount() === 1, 'a left');
      const d = client();
      await d.waitFor((x) => x.body().includes('welcome'), 'd admitted in a’s slot');
      b.destroy();
      d.destroy();
      await waitFor(() => hub.getClientCount() === 0, 'all left');
      expect(hub.getStats()).toMatchObject({ admissionKeys: 0, pendingAdmissions: 0, refusedMaxClientsPerKey: 1 });
    },
  );

  test('X-Forwarded-For is believed only with trustProxy (true, or a function of the peer address)', async () => {
    hub.configure({ maxClientsPerKey: 1 });
    const seen = await serveAdmission();
    const a = client('/events', { 'X-Forwarded-For': '203.0.113.1' });
    await a.waitFor((x) => x.body().includes('welcome'), 'a admitted');
    // Not trusted: every loopback client is 127.0.0.1, whatever it claims.
    const b = client('/events', { 'X-Forwarded-For': '203.0.113.2' });
    await b.waitFor((x) => statusOf(x) === 429, 'b refused');
    expect(seen.refusals.at(-1).key).toBe('127.0.0.1');
    const peers = [];
    hub.configure({
      trustProxy: (address) => {
        peers.push(address);
        return address === '127.0.0.1';
      },
    });
    // The proxy appended what it saw (203.0.113.3) to what the client sent.
    const c = client('/events', { 'X-Forwarded-For': '198.51.100.7, 203.0.113.3' });
    await c.waitFor((x) => x.body().includes('welcome'), 'c admitted under its forwarded address');
    const d = client('/events', { 'X-Forwarded-For': 'anything, 203.0.113.3 ' });
    await d.waitFor((x) => statusOf(x) === 429, 'd refused: the same forwarded address');
    expect(seen.refusals.at(-1).key).toBe('203.0.113.3');
    // Each hop from the peer leftwards, until one is not trusted.
    expect(peers).toEqual(['127.0.0.1', '203.0.113.3', '127.0.0.1', '203.0.113.3']);
    hub.configure({ trustProxy: true });
    const e = client('/events', { 'X-Forwarded-For': '203.0.113.4' });
    await e.waitFor((x) => x.body().includes('welcome'), 'e admitted');
    // A client sending the header itself cannot pick its key (review finding):
    // the leftmost entry is its own, the key is what the proxy appended.
    const spoof = client('/events', { 'X-Forwarded-For': '192.0.2.99, 203.0.113.4' });
    await spoof.waitFor((x) => statusOf(x) === 429, 'the spoofing client refused under the real address');
    expect(seen.refusals.at(-1).key).toBe('203.0.113.4');
    // Trust withdrawn: the peer's address again (taken by a).
    hub.configure({ trustProxy: false });
    const f = client('/events', { 'X-Forwarded-For': '203.0.113.5' });
    await f.waitFor((x) => statusOf(x) === 429, 'f refused again without trust');
  });

  test('addClient without initResponse is limited too, and a registered response is never refused', async () => {
    hub.configure({ maxClientsPerKey: 1, clientKey: (_req, res) => res.key });
    const one = Object.assign(new HeaderResponse(), { key: 'k' });
    const two = Object.assign(new HeaderResponse(), { key: 'k' });
    hub.addClient('one', one);
    expect(outcome(() => hub.addClient('two', two))).toMatchObject({
      threw: 'SseKeyCapacityError',
      code: 'ERR_SSE_KEY_CAPACITY',
    });
    // Moving a registered response is not a new connection.
    expect(hub.addClient('moved', one)).toBe('moved');
    hub.initResponse(one);
    expect(hub.getStats()).toMatchObject({ clients: 1, pendingAdmissions: 0, refusedMaxClientsPerKey: 1 });
    hub.removeClient(one);
    expect(hub.addClient('two', two)).toBe('two');
    hub.removeClient(two);
    expect(hub.getStats()).toMatchObject({ clients: 0, admissionKeys: 0 });
  });
});

describe('maxClients', () => {
  test('reservations count: initResponse refuses past the limit with 503, Retry-After and a body', async () => {
    hub.configure({ maxClients: 3, retryAfterMs: 0 });
    const { opened, open } = gate();
    const seen = await serveAdmission({ before: opened });
    const clients = Array.from({ length: 20 }, () => client());
    await waitFor(() => seen.arrived === 20, 'all 20 requests in the route', 10_000);
    open();
    await waitFor(() => clients.every(answered), 'every request answered', 10_000);
    expect(clients.filter((c) => statusOf(c) === 200)).toHaveLength(3);
    const refusedClients = clients.filter((c) => statusOf(c) === 503);
    expect(refusedClients).toHaveLength(17);
    for (const c of refusedClients) {
      expect(isSse(c)).toBe(false);
      expect(c.head()).toMatch(/\r\nretry-after: 0\r\n/i);
      expect(c.raw().split('\r\n\r\n')[1]).toBe(
        '503 Service Unavailable: the server is at its limit of event streams; retry in 0 s\n',
      );
    }
    const [err] = seen.refusals;
    expect(err).toBeInstanceOf(SseCapacityError);
    // The existing fields as they were, plus status and retryAfter.
    expect(err).toMatchObject({
      name: 'SseCapacityError',
      code: 'ERR_SSE_CAPACITY',
      statusCode: 503,
      maxClients: 3,
      status: 503,
      retryAfter: 0,
      message: 'the SSE hub is at its limit of 3 clients',
    });
    expect(hub.getStats()).toMatchObject({ clients: 3, refusedMaxClients: 17, refusedMaxClientsPerKey: 0 });
    expect(hub.metrics()).toContain('\nsse_refused_max_clients_total 17\n');
  });

  test('the global limit is checked before the per-key one', async () => {
    hub.configure({ maxClients: 1, maxClientsPerKey: 1 });
    const seen = await serveAdmission();
    const a = client();
    await a.waitFor((x) => x.body().includes('welcome'), 'a admitted');
    const b = client();
    await b.waitFor((x) => statusOf(x) === 503, 'b refused by maxClients');
    expect(seen.refusals.map((e) => e.name)).toEqual(['SseCapacityError']);
  });
});

describe('reservations are given back', () => {
  test('a client that leaves between initResponse and addClient frees its place; addClient on it registers nothing', async () => {
    hub.configure({ maxClients: 2, maxClientsPerKey: 2 });
    const { opened, open } = gate();
    const seen = await serveAdmission({ before: opened });
    const a = client();
    const b = client();
    await waitFor(() => hub.getStats().pendingAdmissions === 2, 'two places reserved');
    const c = client();
    await c.waitFor((x) => statusOf(x) === 429 || statusOf(x) === 503, 'c refused while both are reserved');
    a.destroy();
    b.destroy();
    await waitFor(() => hub.getStats().pendingAdmissions === 0, 'both reservations released at close');
    expect(hub.getStats().admissionKeys).toBe(0);
    open();
    await waitFor(() => seen.registered === 2, 'the route went on for a and b');
    // Their responses were over: nothing registered, nothing held.
    expect(hub.getStats()).toMatchObject({ clients: 0, pendingAdmissions: 0, admissionKeys: 0 });
    const d = client('/events');
    const e = client('/events');
    await waitFor(() => [d, e].every((x) => x.body().includes('welcome')), 'd and e admitted');
  });

  test('a client gone before initResponse leaves no reservation behind (review finding: its close had fired)', async () => {
    hub.configure({ maxClients: 1 });
    let gone;
    const left = new Promise((resolve) => {
      gone = resolve;
    });
    let came;
    const arrived = new Promise((resolve) => {
      came = resolve;
    });
    let bailed = 0;
    await startServer((app) =>
      app.get('/events', async (req, res) => {
        if (req.query.late) {
          // The app awaits something, the client leaves meanwhile.
          const closed = new Promise((resolve) => res.once('close', resolve));
          came();
          await closed;
          gone();
          hub.initResponse(res);
          bailed++;
          return; // the route bails out: no addClient
        }
        hub.initResponse(res);
        hub.addClient(res);
        hub.send(res, 'welcome');
      }),
    );
    const late = client('/events?late=1');
    await arrived;
    late.destroy();
    await left;
    await waitFor(() => bailed === 1, 'the route bailed out');
    expect(hub.getStats().pendingAdmissions).toBe(0);
    // The one place is free: a new client is admitted.
    const next = client('/events');
    await next.waitFor((x) => x.body().includes('welcome'), 'the next client admitted');
  });

  test('initResponse that throws (headers sent) gives its reservation back; close() drops the rest', () => {
    hub.configure({ maxClients: 1 });
    const sent = new HeaderResponse();
    sent.headersSent = true;
    expect(() => hub.initResponse(sent)).toThrow(/already sent/);
    expect(hub.getStats().pendingAdmissions).toBe(0);
    const held = new HeaderResponse();
    hub.initResponse(held);
    // Twice: its headers are sent, so it throws, and keeps its one reservation.
    expect(() => hub.initResponse(held)).toThrow(/already sent/);
    expect(hub.getStats().pendingAdmissions).toBe(1);
    expect(outcome(() => hub.initResponse(new HeaderResponse()))).toMatchObject({
      threw: 'SseCapacityError',
      code: 'ERR_SSE_CAPACITY',
    });
    hub.close();
    expect(hub.getStats().pendingAdmissions).toBe(0);
  });

  test('leak: 300 reservations released at close, and by garbage collection for responses without events', async () => {
    hub.configure({ maxClientsPerKey: 1000, clientKey: (_req, res) => res.key });
    const open = [];
    for (let i = 0; i < 300; i++) {
      const res = Object.assign(new HeaderResponse(), { key: `k${i % 7}` });
      hub.initResponse(res);
      if (i % 2 === 0) res.emit('close');
      else open.push(res);
    }
    // Responses that cannot report a close (no `once`): released once collected.
    for (let i = 0; i < 50; i++) {
      hub.initResponse({ write() {}, end() {}, setHeader() {}, key: 'bare' });
    }
    expect(hub.getStats()).toMatchObject({ pendingAdmissions: 200, admissionKeys: 8 });
    await waitFor(
      async () => {
        await collectGarbage();
        return hub.getStats().pendingAdmissions === 150;
      },
      'the 50 collected responses released',
      20_000,
    );
    for (const res of open) res.emit('close');
    // A second close, or a late addClient, changes nothing.
    open[0].emit('close');
    expect(hub.getStats()).toMatchObject({ pendingAdmissions: 0, admissionKeys: 0, clients: 0 });
    for (const res of open) expect(res.listenerCount('close')).toBe(0);
  }, 30_000);
});

describe('refuse and options', () => {
  test('refuse rethrows anything that is not a refusal; err.respond answers by itself', () => {
    const res = new FakeResponse();
    const boom = new Error('boom');
    expect(() => hub.refuse(res, boom)).toThrow(boom);
    expect(res.writableEnded).toBe(false);
    // Bound, like every method of the default hub.
    expect(typeof require('..').refuse).toBe('function');
    const err = new SseKeyCapacityError(2, 30, 'k');
    const written = [];
    const target = {
      headersSent: false,
      writeHead: (status, headers) => written.push(status, headers),
      end: (body) => written.push(body),
    };
    err.respond(target);
    const body = '429 Too Many Requests: this client has too many event streams open; retry in 30 s\n';
    expect(written).toEqual([
      429,
      {
        'Content-Type': 'text/plain; charset=utf-8',
        'Content-Length': String(Buffer.byteLength(body)),
        'Cache-Control': 'no-store',
        'Retry-After': '30',
      },
      body,
    ]);
    // Headers already sent: it can only end the response.
    const late = new HeaderResponse();
    late.headersSent = true;
    err.respond(late);
    expect(late.writableEnded).toBe(true);
    // Constructed as before: one argument, the default Retry-After.
    expect(new SseCapacityError(4)).toMatchObject({ maxClients: 4, statusCode: 503, status: 503, retryAfter: 5 });
  });

  test('bad options are TypeErrors naming the option, and nothing applies', () => {
    const before = hub.getStats();
    const cases = [
      [{ maxClientsPerKey: -1 }, 'ERR_INVALID_ARG_VALUE', 'options.maxClientsPerKey'],
      [{ maxClientsPerKey: 1.5 }, 'ERR_INVALID_ARG_VALUE', 'options.maxClientsPerKey'],
      [{ maxClientsPerKey: '2' }, 'ERR_INVALID_ARG_TYPE', 'options.maxClientsPerKey'],
      [{ retryAfterMs: -1 }, 'ERR_INVALID_ARG_VALUE', 'options.retryAfterMs'],
      [{ retryAfterMs: 86_400_001 }, 'ERR_INVALID_ARG_VALUE', 'options.retryAfterMs'],
      [{ retryAfterMs: '5' }, 'ERR_INVALID_ARG_TYPE', 'options.retryAfterMs'],
      [{ clientKey: 'ip' }, 'ERR_INVALID_ARG_TYPE', 'options.clientKey'],
      [{ trustProxy: 'yes' }, 'ERR_INVALID_ARG_TYPE', 'options.trustProxy'],
      [{ maxClientsPerKey: 2, trustProxy: 1 }, 'ERR_INVALID_ARG_TYPE', 'options.trustProxy'],
    ];
    for (const [options, code, name] of cases) {
      expect(outcome(() => hub.configure(options))).toEqual(refused(code, name));
    }
    expect(outcome(() => hub.configure({ maxClientPerKey: 2 }))).toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringContaining('did you mean options.maxClientsPerKey?'),
    });
    expect(hub.getStats()).toEqual(before);
    // Nothing applied: no limit is on, so nothing is reserved.
    hub.initResponse(new HeaderResponse());
    expect(hub.getStats().pendingAdmissions).toBe(0);
  });

  test('a clientKey returning something else than a string is a TypeError at initResponse, before any header', () => {
    hub.configure({ maxClientsPerKey: 1, clientKey: () => 42 });
    const res = new HeaderResponse();
    expect(outcome(() => hub.initResponse(res))).toEqual(refused('ERR_INVALID_ARG_TYPE', 'options.clientKey'));
    expect(res.headersSent).toBeFalsy();
    expect(hub.getStats().pendingAdmissions).toBe(0);
  });
});
