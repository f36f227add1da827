// The bus on a Redis Cluster (`redis+cluster://`): three masters with a
// replica each (redis-server --cluster-enabled, joined by
// `redis-cli --cluster create`), on loopback, started by the test; two
// instances with real EventSource clients. The stream is named `sse`
// (no hash tag): its presence keys carry `{sse}`, so they share its slot.
// Broadcasts reach both instances' clients with stream ids; a client
// replays from Last-Event-ID; globalClientCount counts both. Then the
// stream's slot is migrated to another master during broadcasts (nothing is
// lost, the reader follows it), and the slot's master is killed (SIGKILL):
// its replica is promoted and the bus resumes on it.
//
// Named bus-rediscluster (bus-cluster.spec.js is about node:cluster).

const { startRedisCluster, clusterNodes, spawnInstance, stopAll } = require('./redis-helpers.js');
const { waitFor } = require('./helpers.js');
const { request, statsOf, openSource, outOfOrder, duplicates, waitUntil, broadcastLoop } = require('./bus-clients.js');

const LONG = 60_000;
const STREAM = 'sse';

let cluster;
let a;
let b;
let slot;
const clients = [];
const loops = [];

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  slot = Number(await cluster.nodes[0].command('CLUSTER', 'KEYSLOT', STREAM));
  a = await spawnInstance({ REDIS_URL: cluster.url, STREAM });
  b = await spawnInstance({ REDIS_URL: cluster.url, STREAM });
}, 120_000);

afterAll(async () => {
  for (const loop of loops) await loop.stop();
  for (const c of clients) c.close();
  await stopAll();
  await cluster?.stop();
});

/** Opens an EventSource on an instance, closed after the file. */
function open(instance, query = '') {
  const client = openSource(`http://127.0.0.1:${instance.port}/events${query}`);
  clients.push(client);
  return client;
}

/** The stream's ids, oldest first, from the master serving its slot. */
async function streamIds() {
  const owner = await cluster.owner(slot);
  const entries = await owner.command('XRANGE', STREAM, '-', '+');
  return entries.map(([id]) => id);
}

/** Every broadcast of `loop` reached `client`, with an id, once, in order. */
function expectAllOf(loop, client) {
  const got = client.messages.filter((m) => m.type === 'message');
  const ids = got.map((m) => m.id);
  expect(ids.filter((id) => !id)).toEqual([]);
  expect(outOfOrder(ids)).toEqual([]);
  expect(duplicates(ids)).toEqual([]);
  const seen = new Set(got.map((m) => m.data?.n));
  expect(loop.sent.filter((n) => !seen.has(n))).toEqual([]);
}

/** Broadcasts through A and B in turn, `pauseMs` apart, until stopped (stopped after the file at the latest). */
function startLoop(pauseMs) {
  const loop = broadcastLoop([a.port, b.port], (n) => ({ n }), { pauseMs });
  loops.push(loop);
  return loop;
}

/**
 * Stops `loop`, which must have had no failures, and waits until each of
 * `receivers` has the stream's last entry: then every broadcast of `loop`
 * reached each (expectAllOf). Returns that last id.
 */
/**
 * Resolves once every broadcast the instances accepted is in the stream: a
 * broadcast made while an instance reconnected waits in its bus's queue and
 * is appended once it is back, and a bus request (globalClientCount, behind
 * /count) is served after every append queued before it.
 */
async function flushAppends() {
  for (const i of [a, b]) await request(i.port, '/count');
}

async function stopAndExpectAll(loop, receivers) {
  await loop.stop();
  expect(loop.failures).toEqual([]);
  await flushAppends();
  const ids = await streamIds();
  const last = ids[ids.length - 1];
  for (const c of receivers) await waitFor(() => c.messages.some((m) => m.id === last), 'the last entry', LONG);
  for (const c of receivers) expectAllOf(loop, c);
  return last;
}

test('broadcasts reach both instances with stream ids; Last-Event-ID replays; globalClientCount counts both', async () => {
  const onA = open(a);
  const onB = open(b);
  await waitUntil(async () => (await request(a.port, '/count')).body.global === 2, 'two clients, from A', LONG);
  expect((await request(b.port, '/count')).body.global).toBe(2);
  // The presence keys carry the stream's tag: one slot, one node.
  const owner = await cluster.owner(slot);
  const keys = await owner.command('CLUSTER', 'GETKEYSINSLOT', slot, 100);
  expect(keys.filter((k) => k.startsWith('{sse}:presence:'))).toHaveLength(2);

  const loop = startLoop(5);
  await waitFor(() => onA.data().length >= 20 && onB.data().length >= 20, 'twenty broadcasts on both', LONG);
  const last = await stopAndExpectAll(loop, [onA, onB]);
  expect(onA.messages.map((m) => m.id)).toEqual(onB.messages.map((m) => m.id));

  // A client of B that saw up to the tenth entry is replayed the rest.
  const from = onA.messages[9].id;
  const back = open(b, `?lastEventId=${encodeURIComponent(from)}`);
  await waitFor(() => back.messages.some((m) => m.id === last), 'the replay up to the last entry', LONG);
  expect(back.messages.map((m) => m.id)).toEqual(onA.messages.slice(10).map((m) => m.id));
  await waitUntil(async () => (await request(a.port, '/count')).body.global === 3, 'three clients', LONG);
  for (const i of [a, b]) expect((await statsOf(i.port)).bus.localFallbacks).toBe(0);
}, 120_000);

test("the stream's slot migrated to another master during broadcasts: nothing is lost, the reader follows it", async () => {
  const onA = open(a);
  const onB = open(b);
  await waitUntil(async () => (await request(a.port, '/count')).body.global === 5, 'five clients', LONG);
  const before = await cluster.owner(slot);
  const masters = (await clusterNodes(before.port)).filter((n) => n.master && !n.failed);
  const to = cluster.nodes.find((n) => n.id === masters.find((m) => m.id !== before.id).id);

  const loop = startLoop(5);
  await waitFor(() => onA.data().length >= 20 && onB.data().length >= 20, 'broadcasts before the move', LONG);
  await cluster.migrate(slot, to);
  expect((await cluster.owner(slot)).id).toBe(to.id);
  // Entries appended after the move, read on the new owner.
  const moved = (await to.command('XLEN', STREAM)) + 0;
  await waitUntil(async () => (await to.command('XLEN', STREAM)) >= moved + 40, 'appends on the new owner', LONG);
  await waitFor(() => onA.data().length >= 80 && onB.data().length >= 80, 'broadcasts after the move', LONG);
  const last = await stopAndExpectAll(loop, [onA, onB]);
  for (const i of [a, b]) {
    const { bus } = await statsOf(i.port);
    expect(bus.state).toBe('connected');
    expect(bus.localFallbacks).toBe(0);
  }
  // The old owner holds nothing of the stream any more.
  expect(Number(await before.command('CLUSTER', 'COUNTKEYSINSLOT', slot))).toBe(0);
  // Replay on the new owner, across instances.
  const from = onB.messages[30].id;
  const back = open(a, `?lastEventId=${encodeURIComponent(from)}`);
  await waitFor(() => back.messages.some((m) => m.id === last), 'the replay after the move', LONG);
  expect(back.messages.map((m) => m.id)).toEqual(onB.messages.slice(31).map((m) => m.id));
  await waitUntil(async () => (await request(b.port, '/count')).body.global === 6, 'six clients', LONG);
}, 180_000);

test("the slot's master killed (SIGKILL): its replica is promoted and the bus resumes on it", async () => {
  const onA = open(a);
  const onB = open(b);
  await waitUntil(async () => (await request(a.port, '/count')).body.global === 8, 'eight clients', LONG);
  const dead = await cluster.owner(slot);
  const loop = startLoop(10);
  await waitFor(() => onA.data().length >= 20 && onB.data().length >= 20, 'broadcasts before the failover', LONG);
  await dead.kill();
  await waitUntil(
    async () => {
      const owner = await cluster.owner(slot);
      return owner !== undefined && owner !== dead;
    },
    'the replica promoted',
    LONG,
  );
  await cluster.waitOk('the cluster to be ok again');
  const promoted = await cluster.owner(slot);
  const atPromotion = await promoted.command('XLEN', STREAM);
  await waitUntil(async () => (await promoted.command('XLEN', STREAM)) >= atPromotion + 40, 'appends after', LONG);
  await loop.stop();
  for (const i of [a, b]) {
    await waitUntil(async () => (await statsOf(i.port)).bus.state === 'connected', 'the bus connected', LONG);
  }
  await flushAppends();
  // Every entry the new master holds reaches every client of both
  // instances, once, in order (what the dead master had not replicated is
  // the documented loss of asynchronous replication).
  const kept = await streamIds();
  const last = kept[kept.length - 1];
  for (const c of [onA, onB]) await waitFor(() => c.messages.some((m) => m.id === last), 'the last entry', LONG);
  for (const c of [onA, onB]) {
    const ids = c.messages.map((m) => m.id).filter(Boolean);
    expect(outOfOrder(ids)).toEqual([]);
    expect(duplicates(ids)).toEqual([]);
    const got = new Set(ids);
    const since = kept.slice(kept.indexOf(ids[0]));
    expect(since.filter((id) => !got.has(id))).toEqual([]);
  }
  if (process.env.SSE_TEST_VERBOSE) {
    const figures = [];
    for (const i of [a, b]) figures.push((await statsOf(i.port)).bus);
    const local = [onA, onB].map((c) => c.messages.filter((m) => !m.id).length);
    console.log(
      JSON.stringify({ sent: loop.sent.length, failures: loop.failures.length, local, figures, kept: kept.length }),
    );
  }
  // Replay from an entry the new master holds, on the other instance.
  const from = kept[kept.length - 5];
  const back = openSource(`http://127.0.0.1:${b.port}/events?lastEventId=${encodeURIComponent(from)}`, {
    types: ['reset'],
  });
  clients.push(back);
  await waitFor(() => back.messages.some((m) => m.id === last), 'the replay after the failover', LONG);
  expect(back.messages.map((m) => m.id)).toEqual(kept.slice(-4));
  await waitUntil(async () => (await request(b.port, '/count')).body.global === 9, 'nine clients', LONG);
}, 180_000);
