// The position rule of a hub with a Redis bus (issue 26): a connection gets
// every entry appended to the stream after its headers were flushed
// (initResponse), in order, once, or an `event: reset`; never a silent gap.
// Two instances of the bus fixture (each in its own process) on a
// throwaway redis-server: B serves the client, A broadcasts.
//
// - entries B's bus delivers between initResponse and addClient (the route
//   works synchronously until B has read them), on a fresh and a warm
//   instance, both transports;
// - a Last-Event-ID replay never waits out the blocking read (the reader's
//   CLIENT UNBLOCK can miss an XREAD not yet at Redis);
// - a client registered while B's first connection to Redis is held back;
// - promises keep Node alive until they settle: the code after
//   `await hub.close()` runs; ready() rejects when the hub closes first.
//
// Nothing waits on a sleep being long enough: each step waits for the state
// it needs (the headers on the wire, the entries read by B's bus).

const { SseHub } = require('..');
const { broadcastVia, cuttableProxy, parseFrames, statsOf, waitUntil } = require('./bus-clients.js');
const { outcome, rawGet, runToExit, waitFor } = require('./helpers.js');
const { freePort, spawnInstance, startRedis } = require('./redis-helpers.js');

const LONG = 20_000;

let redis;
const instances = [];
const clients = [];
const closers = [];
let streamCount = 0;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(instances.splice(0).map((i) => i.stop()));
  for (const close of closers.splice(0)) await close();
});

const newStream = () => `first-entry-${process.pid}-${++streamCount}`;

async function instance(stream, env = {}) {
  const inst = await spawnInstance({ REDIS_URL: redis.url, STREAM: stream, ...env });
  instances.push(inst);
  return inst;
}

function connect(inst, path, headers) {
  const client = rawGet(inst.port, path, headers);
  clients.push(client);
  return client;
}

/** The data events a raw client got: { id, event, data }. */
const events = (client) =>
  parseFrames(client.body())
    .filter((f) => f.data !== undefined || f.event !== undefined)
    .map(({ id, event, data }) => ({ id, event, data }));

const hasHeaders = (client) => client.raw().startsWith('HTTP/1.1 200') && client.raw().includes('\r\n\r\n');

async function broadcastAll(inst, payloads) {
  for (const payload of payloads) await broadcastVia(inst.port, { payload });
}

/**
 * Connects a client to `b` whose route works until `b` has read `n` more
 * entries, broadcasts n from `a` once the client has its headers, then a
 * marker; resolves with what the client got up to the marker.
 */
async function throughTheWindow(a, b, name, n) {
  const client = connect(b, `/events?id=${name}&waitEntries=${n}`);
  await client.waitFor(hasHeaders, `${name}'s headers`, LONG);
  const payloads = Array.from({ length: n }, (_, i) => ({ [name]: i }));
  await broadcastAll(a, payloads);
  await broadcastVia(a.port, { payload: { [name]: 'marker' } });
  await client.waitFor((c) => c.body().includes(`{"${name}":"marker"}`), `${name}'s marker`, LONG);
  return { client, payloads };
}

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  test('entries delivered between initResponse and addClient reach the client: a fresh instance, then a warm one', async () => {
    const stream = newStream();
    const a = await instance(stream);
    const b = await instance(stream, { TRANSPORT: transport });
    // The first client of a freshly started instance (its writer not yet started).
    const first = await throughTheWindow(a, b, 'first', 5);
    const got = events(first.client);
    expect(got.map((e) => e.data)).toEqual([...first.payloads, { first: 'marker' }]);
    expect(got.every((e) => /^\d+-\d+$/.test(e.id) && e.event === undefined)).toBe(true);
    // A warm instance: a second client, the first still connected.
    const second = await throughTheWindow(a, b, 'second', 3);
    expect(events(second.client).map((e) => e.data)).toEqual([...second.payloads, { second: 'marker' }]);
    // The first got the second's broadcasts live, each once (its own socket:
    // waited for, not assumed to be as far as the second's).
    await first.client.waitFor(
      (c) => c.body().includes('{"second":"marker"}'),
      "the second's marker on the first",
      LONG,
    );
    expect(events(first.client).map((e) => e.data)).toEqual([
      ...first.payloads,
      { first: 'marker' },
      ...second.payloads,
      { second: 'marker' },
    ]);
    const { bus } = await statsOf(b.port);
    expect(bus).toMatchObject({ resets: 0, localFallbacks: 0, state: 'connected' });
    expect(bus.replays).toBeGreaterThanOrEqual(2);
  });

  test('a Last-Event-ID replay never waits out the blocking read (40 reconnections)', async () => {
    const stream = newStream();
    const a = await instance(stream);
    const b = await instance(stream, { TRANSPORT: transport });
    const probe = connect(b, '/events?id=probe');
    await probe.waitFor(hasHeaders, "the probe's headers", LONG);
    for (let i = 0; i < 40; i++) {
      await broadcastAll(a, [
        { round: i, n: 0 },
        { round: i, n: 1 },
      ]);
      await probe.waitFor((c) => c.body().includes(`{"round":${i},"n":1}`), `round ${i} live`, LONG);
      const firstId = events(probe).find((e) => e.data?.round === i && e.data.n === 0).id;
      const client = connect(b, `/events?id=r${i}`, { 'Last-Event-ID': firstId });
      // Within BLOCK (5 s): a replay that waited for the read to time out would take it all.
      await client.waitFor((c) => c.body().includes(`{"round":${i},"n":1}`), `round ${i} replayed`, 4000);
      expect(events(client).map((e) => e.data)).toEqual([{ round: i, n: 1 }]);
      client.destroy();
    }
  });
});

test.each(['auto', 'stream'])(
  'a client registered before the first connection to Redis gets what was appended meanwhile, or a reset (%s)',
  async (transport) => {
    const stream = newStream();
    const a = await instance(stream);
    const proxy = await cuttableProxy(redis.port);
    proxy.hold();
    closers.push(() => proxy.close());
    const b = await instance(stream, { REDIS_URL: proxy.url, NO_READY: '1', TRANSPORT: transport });
    await waitFor(() => proxy.waiting() > 0, "B's first connection attempt", LONG);
    const client = connect(b, '/events?id=early');
    await client.waitFor(hasHeaders, 'the headers', LONG);
    await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'the client registered');
    const missed = [{ early: 0 }, { early: 1 }, { early: 2 }];
    await broadcastAll(a, missed);
    proxy.release();
    await waitUntil(async () => (await statsOf(b.port)).bus.state === 'connected', 'B connected', LONG);
    await broadcastVia(a.port, { payload: { early: 'marker' } });
    await client.waitFor((c) => c.body().includes('{"early":"marker"}'), 'the marker', LONG);
    const got = events(client);
    const reset = got.findIndex((e) => e.event === 'reset');
    const data = got.filter((e) => e.event === undefined).map((e) => e.data);
    // Never a silent gap: all three, or a reset before what follows. This
    // build answers with the reset (the reader cannot know which entries
    // came after the registration).
    expect(reset === -1 ? data : got.slice(reset)).toEqual(
      reset === -1
        ? [...missed, { early: 'marker' }]
        : [expect.objectContaining({ event: 'reset' }), expect.objectContaining({ data: { early: 'marker' } })],
    );
    expect(reset).not.toBe(-1);
  },
);

test('the code after `await hub.close()` runs (close keeps Node alive until it settles), 8 runs', async () => {
  // The sequence that ended the process before close() settled: two
  // clients, one leaves, a new one 200 ms later, both leave, the server
  // closes, then `await hub.close()` with nothing else alive.
  const script = `
    const http = require('node:http');
        const { SseHub } = require(${JSON.stringify(require.resolve('..'))});
    const hub = new SseHub();
    const server = http.createServer((req, res) => { hub.initResponse(res); hub.addClient(res); });
    const open = () => new Promise((resolve) => {
      const s = net.connect(server.address().port, '127.0.0.1', () => s.write('GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'));
      s.once('data', () => resolve(s));
    });
    server.listen(0, '127.0.0.1', async () => {
      const one = await open();
      const two = await open();
      one.destroy();
      await new Promise((r) => setTimeout(r, 200));
      const three = await open();
      two.destroy();
      three.destroy();
      await new Promise((r) => server.close(r));
      await hub.close();
      console.log('after close');
    });
  `;
  for (let run = 0; run < 8; run++) {
    expect(await runToExit(script, LONG)).toEqual({ code: 0, stdout: 'after close\n' });
  }
});

test('ready() rejects with ERR_SSE_CLOSED when the hub closes before Redis was ever reached', async () => {
  const port = await freePort();
  const hub = new SseHub().configure({ redis: `redis://127.0.0.1:${port}` });
  const ready = hub.ready();
  await hub.close();
  await expect(ready).rejects.toMatchObject({ code: 'ERR_SSE_CLOSED' });
});

test('ERR_SSE_CLOSED is one error wherever a closed hub refuses: addClient, configure({ redis }), ready()', async () => {
  const port = await freePort();
  const hub = new SseHub().configure({ redis: `redis://127.0.0.1:${port}` });
  const ready = hub.ready();
  // Closing with a bus flushes first: new clients are refused from the start.
  const closing = hub.close();
  const fake = { writableEnded: false, headersSent: true, write() {}, end() {}, once() {}, on() {} };
  const errors = [
    outcome(() => hub.addClient(fake)),
    outcome(() => hub.configure({ redis: `redis://127.0.0.1:${port}` })),
  ];
  await closing;
  errors.push(
    await ready.then(
      () => ({ returned: 'ready' }),
      (err) => ({ threw: 'Error', code: err.code, message: err.message }),
    ),
  );
  errors.push(await hub.ready().catch((err) => ({ threw: 'Error', code: err.code, message: err.message })));
  for (const error of errors) expect(error).toEqual({ ...errors[0], threw: error.threw });
  expect(errors[0]).toMatchObject({ code: 'ERR_SSE_CLOSED' });
  expect(hub.getClientCount()).toBe(0);
});
