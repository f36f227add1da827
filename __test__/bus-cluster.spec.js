// The Redis bus under node:cluster: one fixture instance with CLUSTER=2,
// two worker processes sharing one port (round-robin). A broadcast handled
// by either worker reaches the clients of both, with the same stream id,
// and the workers' clients see one and the same sequence.

const { startRedis, spawnInstance, stopAll } = require('./redis-helpers.js');
const { rawGet, waitFor } = require('./helpers.js');
const { broadcastVia, request, openSource, parseFrames, outOfOrder } = require('./bus-clients.js');

const STREAM_ID = /^\d+-\d+$/;

let redis;
let inst;
/** Every client: { kind: 'eventsource' | 'raw', pid (its worker), events() -> [{ id, data }], close() }. */
const clients = [];
/** Local client count -> worker pid (the counts differ, so a broadcast's result names its worker). */
const workerByCount = new Map();

/** An `eventsource` client (or a raw one) with `?hello`: resolves once it knows its worker. */
async function connect(kind) {
  const path = '/events?hello=1';
  if (kind === 'eventsource') {
    const s = openSource(`${inst.url}${path}`, { types: ['hello'] });
    const c = {
      kind,
      close: () => s.close(),
      events: () => s.messages.filter((m) => m.type === 'message').map((m) => ({ id: m.id, data: m.data })),
    };
    clients.push(c);
    await waitFor(() => s.messages.some((m) => m.type === 'hello'), 'the hello event', 10_000);
    const hello = s.messages.find((m) => m.type === 'hello');
    // Local, without an id.
    expect(hello.id).toBe('');
    c.pid = hello.data.pid;
    return c;
  }
  const r = rawGet(inst.port, path);
  const c = {
    kind,
    close: () => r.destroy(),
    frames: () => parseFrames(r.body()),
    events: () =>
      parseFrames(r.body())
        .filter((f) => f.event === undefined && f.data !== undefined)
        .map((f) => ({ id: f.id, data: f.data })),
  };
  clients.push(c);
  await r.waitFor(() => parseFrames(r.body()).some((f) => f.event === 'hello'), 'the hello frame', 10_000);
  const hello = parseFrames(r.body()).find((f) => f.event === 'hello');
  expect(hello.raw).toBe(`event: hello\ndata: {"pid":${hello.data.pid}}`);
  c.pid = hello.data.pid;
  return c;
}

const countOn = (pid) => clients.filter((c) => c.pid === pid).length;

beforeAll(async () => {
  redis = await startRedis();
  inst = await spawnInstance({ REDIS_URL: redis.url, CLUSTER: 2 });
  expect(inst.workers).toHaveLength(2);
  const [w1, w2] = inst.workers;
  // Kinds in pairs (round-robin alternates workers) until each worker has both
  // kinds and the two counts differ.
  for (let i = 0; ; i++) {
    if (i >= 40) throw new Error(`clients not spread over both workers: ${clients.map((c) => c.pid)}`);
    await connect(Math.floor(i / 2) % 2 === 0 ? 'eventsource' : 'raw');
    const spread = inst.workers.every((pid) =>
      ['eventsource', 'raw'].every((kind) => clients.some((c) => c.pid === pid && c.kind === kind)),
    );
    if (spread && countOn(w1) !== countOn(w2)) break;
  }
  for (const c of clients) expect(inst.workers).toContain(c.pid);
  workerByCount.set(countOn(w1), w1);
  workerByCount.set(countOn(w2), w2);
});

afterAll(async () => {
  for (const c of clients.splice(0)) c.close();
  await stopAll();
});

test('the two workers share one port and both have clients', async () => {
  const [w1, w2] = inst.workers;
  expect(w1).not.toBe(w2);
  expect(countOn(w1)).toBeGreaterThanOrEqual(2);
  expect(countOn(w2)).toBeGreaterThanOrEqual(2);
  // Plain requests, one connection each, reach both workers too.
  const seen = new Set();
  for (let i = 0; i < 20 && seen.size < 2; i++) seen.add((await request(inst.port, '/whoami')).body.pid);
  expect([...seen].sort()).toEqual([...inst.workers].sort());
  const counts = (await request(inst.port, '/count')).body;
  expect(counts.global).toBe(clients.length);
  expect(workerByCount.get(counts.local)).toBeDefined();
});

test('a broadcast handled by either worker reaches every client on both, with the same id', async () => {
  const from = new Set();
  const tags = [];
  // Until one broadcast has been handled by each worker.
  for (let i = 0; i < 40 && from.size < 2; i++) {
    const tag = `one-${i}`;
    const { result } = await broadcastVia(inst.port, { payload: { tag } });
    expect(workerByCount.has(result)).toBe(true);
    from.add(workerByCount.get(result));
    tags.push(tag);
  }
  expect(from.size).toBe(2);
  for (const c of clients) {
    await waitFor(
      () => c.events().filter((e) => e.data.tag).length === tags.length,
      `every broadcast on a ${c.kind} client of ${c.pid}`,
      15_000,
    );
  }
  const reference = clients[0].events().filter((e) => e.data.tag);
  expect(reference.map((e) => e.data.tag)).toEqual(tags);
  for (const e of reference) expect(e.id).toMatch(STREAM_ID);
  for (const c of clients) expect(c.events().filter((e) => e.data.tag)).toEqual(reference);
  // The exact bytes are the same on both workers' raw clients.
  const raws = clients.filter((c) => c.kind === 'raw');
  const rawFrames = (c) =>
    c
      .frames()
      .filter((f) => f.data?.tag)
      .map((f) => f.raw);
  expect(new Set(raws.map((c) => c.pid)).size).toBe(2);
  for (const c of raws)
    expect(rawFrames(c)).toEqual(reference.map((e) => `id: ${e.id}\ndata: ${JSON.stringify(e.data)}`));
});

test('100 events broadcast concurrently through both workers: every client on both has the identical sequence, the stream order', async () => {
  const payloads = Array.from({ length: 100 }, (_, k) => ({ seq: k }));
  const handledBy = [];
  // Four at a time, each on a connection of its own: both workers append, interleaved.
  for (let k = 0; k < payloads.length; k += 4) {
    const batch = payloads.slice(k, k + 4).map((payload) => broadcastVia(inst.port, { payload }));
    for (const { result } of await Promise.all(batch)) handledBy.push(workerByCount.get(result));
  }
  expect(new Set(handledBy)).toEqual(new Set(inst.workers));

  for (const c of clients) {
    await waitFor(
      () => c.events().filter((e) => e.data.seq !== undefined).length >= 100,
      `the 100 events on a ${c.kind} client of ${c.pid}`,
      20_000,
    );
  }
  const reference = clients[0].events().filter((e) => e.data.seq !== undefined);
  expect(reference).toHaveLength(100);
  expect(reference.map((e) => e.data.seq).sort((x, y) => x - y)).toEqual(payloads.map((p) => p.seq));
  expect(outOfOrder(reference.map((e) => e.id))).toEqual([]);
  for (const c of clients) expect(c.events().filter((e) => e.data.seq !== undefined)).toEqual(reference);

  // That sequence is the stream's.
  const entries = await redis.command('XRANGE', 'sse', '-', '+');
  const streamSeq = entries
    .map(([id, fields]) => {
      const f = {};
      for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
      return { id, data: JSON.parse(f.data) };
    })
    .filter((e) => e.data.seq !== undefined);
  expect(streamSeq).toEqual(reference);
});
