// Holes in the Redis bus found by an adversarial run (issue 20), each on a
// real redis-server and real clients, in-process hubs behind Express 5:
//
// 1. ids that go backwards (an entry from the future, then the stream lost):
//    the reader must not go deaf past every new entry;
// 2. a client reconnecting with Last-Event-ID while Redis is down gets a
//    reset and then local broadcasts, not nothing until Redis is back;
// 3. local broadcasts held for such a client past maxBufferedBytes end in a
//    reset after those that fit, never a silent gap;
// 9. on a slow link a reply that outlasts the read's deadline is not asked
//    for again at the same size for ever: the reader makes progress;
// 4. broadcast() then close() reaches this instance's own clients;
// 5. a producer trimming to a shorter MAXLEN than this instance's while it
//    is behind: a reset, not a silent gap;
// 8. another program's non-numeric `<stream>:presence:*` key neither breaks
//    globalClientCount() nor tears the bus session down.
//
// Every wait is for the state asserted, with a generous deadline.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { SseHub } = require('..');
const { broadcastVia, cuttableProxy, inProcessInstances, parseFrames, throttledProxy } = require('./bus-clients.js');
const { rawGet, startServer, waitFor } = require('./helpers.js');
const { freePort, spawnInstance, startRedis } = require('./redis-helpers.js');

const LONG = 20_000;

let redis;
const { hubs, servers, clients, connect, closeAll } = inProcessInstances(LONG);
let streamCount = 0;

beforeEach(async () => {
  redis = await startRedis();
});

afterEach(async () => {
  await closeAll();
  await redis.stop();
});

const newStream = () => `holes-${process.pid}-${++streamCount}`;

/**
 * A hub on this test's Redis (or `url`), serving /events on a server of its
 * own; ready unless `ready` is false. Other options go to configure().
 */
async function busHub(stream, { transport = 'auto', url = redis.url, ready = true, ...options } = {}) {
  const hub = new SseHub().configure({ transport, heartbeatMs: 0, ...options, redis: { url, stream } });
  hubs.push(hub);
  if (ready) await hub.ready();
  const srv = await startServer((app) => {
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      hub.addClient(req.query.id ?? null, res);
    });
  });
  servers.push(srv);
  return { hub, srv };
}

const frames = (client) =>
  parseFrames(client.body())
    .filter((f) => f.data !== undefined)
    .map(({ id, event, data }) => ({ id, event, data }));

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  test('1: ids going backwards (a future id, then the stream lost) end in a reset, and delivery goes on', async () => {
    const stream = newStream();
    const served = await busHub(stream, { transport });
    const { hub } = served;
    const client = await connect(served, '/events?id=c');
    // Another producer appends an entry a day in the future; the reader passes it.
    const future = `${Date.now() + 86_400_000}-0`;
    await redis.command('XADD', stream, future, 'kind', 'broadcast', 'data', '"future"');
    await client.waitFor((c) => c.body().includes('"future"'), 'the future entry', LONG);
    // The stream is lost; this hub's own broadcast gets an id below the position.
    await redis.command('DEL', stream);
    expect(hub.broadcast('mine')).toBe(1);
    await client.waitFor((c) => c.body().includes('"mine"'), 'its own broadcast', LONG);
    // Another instance's broadcast, read by the blocking read.
    const other = await busHub(stream, { transport });
    other.hub.broadcast('other');
    await client.waitFor((c) => c.body().includes('"other"'), "the other instance's broadcast", LONG);
    const got = frames(client);
    expect(got.map((f) => f.event ?? f.data)).toEqual(['future', 'reset', 'mine', 'other']);
    expect(hub.getStats().bus).toMatchObject({ state: 'connected', resets: 1 });
  });

  test('1: a stream lost after a future id is noticed without a broadcast of this instance', async () => {
    const stream = newStream();
    const served = await busHub(stream, { transport });
    const client = await connect(served, '/events?id=c');
    const future = `${Date.now() + 86_400_000}-0`;
    await redis.command('XADD', stream, future, 'kind', 'broadcast', 'data', '"future"');
    await client.waitFor((c) => c.body().includes('"future"'), 'the future entry', LONG);
    await redis.command('DEL', stream);
    const other = await busHub(stream, { transport });
    other.hub.broadcast('other');
    // Within one blocking read's timeout (5 s) the reader sees the stream went back.
    await client.waitFor((c) => c.body().includes('"other"'), "the other instance's broadcast", LONG);
    expect(frames(client).map((f) => f.event ?? f.data)).toEqual(['future', 'reset', 'other']);
  });

  test('1: a stream that lost its tail (Redis restarted from a snapshot, a failover) resumes after the last entry it kept: no duplicate, no reset', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-snapshot-'));
    try {
      await redis.stop();
      redis = await startRedis({ args: ['--dir', dir, '--dbfilename', 'dump.rdb'] });
      const stream = newStream();
      const served = await busHub(stream, { transport });
      const { hub } = served;
      const client = await connect(served, '/events?id=c');
      for (const n of [1, 2, 3]) hub.broadcast(n);
      await client.waitFor((c) => c.body().includes('data: 3\n'), 'the first three', LONG);
      await redis.command('SAVE');
      // Delivered, then lost: not in the snapshot.
      for (const n of [4, 5]) hub.broadcast(n);
      await client.waitFor((c) => c.body().includes('data: 5\n'), 'the two after the snapshot', LONG);
      // Restarted from the snapshot (saving is off: nothing newer is written).
      await redis.restart();
      expect(Number(await redis.command('XLEN', stream))).toBe(3);
      await waitFor(() => hub.getStats().bus.state === 'connected', 'the bus back', LONG);
      // Its first append gets an id below the position: noticed at once.
      hub.broadcast(6);
      hub.broadcast(7);
      await client.waitFor((c) => c.body().includes('data: 7\n'), 'the broadcasts after the restart', LONG);
      expect(frames(client).map((f) => f.event ?? f.data)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(hub.getStats().bus.resets).toBe(0);
    } finally {
      await redis.stop();
      redis = await startRedis();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('2: a Last-Event-ID reconnection while Redis is down gets a reset, then local broadcasts at once', async () => {
    const stream = newStream();
    const served = await busHub(stream, { transport });
    const { hub } = served;
    const first = await connect(served, '/events?id=first');
    hub.broadcast('before');
    await first.waitFor((c) => c.body().includes('"before"'), 'the broadcast', LONG);
    const [{ id }] = frames(first);
    await redis.kill();
    await waitFor(() => hub.getStats().bus.state === 'disconnected', 'the bus disconnected', LONG);
    const again = await connect(served, '/events?id=again', { 'Last-Event-ID': id });
    await again.waitFor((c) => c.body().includes('event: reset'), 'the reset', LONG);
    expect(hub.broadcast('during')).toBe(2);
    await again.waitFor((c) => c.body().includes('"during"'), 'the local broadcast', LONG);
    expect(frames(again).map((f) => f.event ?? f.data)).toEqual(['reset', 'during']);
    // Local, so without an id.
    expect(frames(again)[1].id).toBeUndefined();
    // Restart Redis for afterEach's stop().
    await redis.restart();
  });

  test('3: local broadcasts held for a replay past maxBufferedBytes: those that fit, then a reset, never a silent gap', async () => {
    const stream = newStream();
    // An entry the client has seen: its replay finds nothing missed.
    const seen = String(await redis.command('XADD', stream, '*', 'kind', 'broadcast', 'data', '"seen"'));
    const proxy = await cuttableProxy(redis.port);
    proxy.hold();
    const served = await busHub(stream, { transport, url: proxy.url, ready: false, maxBufferedBytes: 256 * 1024 });
    const { hub } = served;
    try {
      await waitFor(() => proxy.waiting() > 0, 'the first connection attempt', LONG);
      // Registered held: its replay waits for the first session.
      const client = await connect(served, '/events?id=held', { 'Last-Event-ID': seen });
      // Redis not reached yet: delivered locally (no id), held for after the replay.
      const big = 'x'.repeat(100 * 1024);
      for (let n = 0; n < 30; n++) hub.broadcast({ n, big });
      proxy.release();
      await hub.ready();
      hub.broadcast('marker');
      await client.waitFor((c) => c.body().includes('"marker"'), 'the marker', LONG);
      const got = frames(client).map((f) => f.event ?? (typeof f.data === 'object' ? f.data.n : f.data));
      // The two that fit 256 KB, then the reset for the 28 dropped, then live.
      expect(got).toEqual([0, 1, 'reset', 'marker']);
    } finally {
      await proxy.close();
    }
  });

  test('4: broadcast() then close() reaches this instance own clients (5 hubs)', async () => {
    for (let round = 0; round < 5; round++) {
      const stream = newStream();
      const served = await busHub(stream, { transport });
      const client = await connect(served, `/events?id=r${round}`);
      expect(served.hub.broadcast({ round })).toBe(1);
      await served.hub.close();
      await client.waitFor((c) => c.raw().endsWith('0\r\n\r\n'), 'the end of the stream', LONG);
      expect(frames(client).map((f) => f.data)).toEqual([{ round }]);
      expect(frames(client)[0].id).toMatch(/^\d+-\d+$/);
    }
  });
});

test('position() on a bus: the last entry delivered here, from which a page subscribes without a gap', async () => {
  const stream = newStream();
  // Before Redis is reached there is no position. (Asserted on a hub whose
  // Redis is not there: one whose Redis is may reach it at any moment.)
  const away = new SseHub().configure({
    heartbeatMs: 0,
    redis: { url: `redis://127.0.0.1:${await freePort()}`, stream },
  });
  hubs.push(away);
  expect(away.position()).toBeNull();
  const hub = new SseHub().configure({ heartbeatMs: 0, redis: { url: redis.url, stream } });
  hubs.push(hub);
  await hub.ready();
  const srv = await startServer((app) => {
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      hub.addClient(res, null, { lastEventId: req.query.from });
    });
  });
  servers.push(srv);
  const served = { hub, srv };
  const watcher = await connect(served, '/events');
  hub.broadcast('rendered');
  await watcher.waitFor((c) => c.body().includes('"rendered"'), 'the first entry', LONG);
  const rendered = hub.position();
  expect(rendered).toBe(frames(watcher)[0].id);
  hub.broadcast('between');
  await watcher.waitFor((c) => c.body().includes('"between"'), 'the second entry', LONG);
  const page = await connect(served, `/events?from=${encodeURIComponent(rendered)}`);
  hub.broadcast('live');
  await page.waitFor((c) => c.body().includes('"live"'), 'live', LONG);
  expect(frames(page).map((f) => f.data)).toEqual(['between', 'live']);
});

test('9: on a slow link (12 KB/s) a backlog bigger than one deadline still arrives, then the instance delivers its own broadcasts', async () => {
  const stream = newStream();
  const proxy = await throttledProxy(redis.port, 12 * 1024);
  try {
    const served = await busHub(stream, { url: proxy.url });
    const { hub } = served;
    const client = await connect(served, '/events?id=slow');
    // Another producer appends 25 entries of 10 KB at once: one reply of
    // 250 KB takes about 21 s at 12 KB/s, past the read's 15 s.
    const big = 'y'.repeat(10 * 1024);
    const data = Array.from({ length: 25 }, (_, n) => JSON.stringify({ n, big }));
    // One script: the blocked reader wakes once, to all 25.
    const script = "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'kind', 'broadcast', 'data', ARGV[i]) end";
    await redis.command('EVAL', script, 1, stream, ...data);
    await client.waitFor((c) => c.body().includes('"n":24'), 'the whole backlog', 100_000);
    hub.broadcast('own');
    await client.waitFor((c) => c.body().includes('"own"'), "the instance's own broadcast", LONG);
    const got = frames(client).map((f) => f.data?.n ?? f.data);
    expect(got).toEqual([...Array.from({ length: 25 }, (_, n) => n), 'own']);
    expect(hub.getStats().bus.reconnects).toBeGreaterThanOrEqual(1);
  } finally {
    await proxy.close();
  }
}, 150_000);

test("8: another program's non-numeric presence key: globalClientCount counts instances only, the session stays", async () => {
  const stream = newStream();
  const served = await busHub(stream);
  await connect(served, '/events?id=c');
  await redis.command('SET', `${stream}:presence:alice`, 'online');
  await redis.command('SET', `${stream}:presence:${'f'.repeat(32)}`, 'not a number');
  for (let i = 0; i < 10; i++) expect(await served.hub.globalClientCount()).toBe(1);
  expect(served.hub.getStats().bus).toMatchObject({ state: 'connected', reconnects: 0 });
});

test.each([
  ['Redis', []],
  // The check falls back to XRANGE on a Redis that refuses scripts.
  ['Redis without EVAL', ['--rename-command', 'EVAL', '']],
])(
  '5: another producer trims to a shorter MAXLEN while this instance is behind: a reset, never a silent gap (%s)',
  async (_name, args) => {
    if (args.length > 0) {
      await redis.stop();
      redis = await startRedis({ args });
    }
    const stream = newStream();
    // B keeps 10,000 entries; A (another deploy, another program) trims to 10.
    const a = await spawnInstance({ REDIS_URL: redis.url, STREAM: stream, MAX_LEN: 10 });
    const b = await spawnInstance({ REDIS_URL: redis.url, STREAM: stream, MAX_LEN: 10000 });
    try {
      const client = rawGet(b.port, '/events?id=behind');
      clients.push(client);
      await client.waitFor((c) => c.raw().includes('\r\n\r\n'), 'the headers', LONG);
      await broadcastVia(a.port, { payload: 'first' });
      await client.waitFor((c) => c.body().includes('"first"'), 'the first entry', LONG);
      // B falls behind: stopped while A appends 600 and trims the stream to ~10.
      process.kill(b.pid, 'SIGSTOP');
      try {
        for (let i = 0; i < 6; i++) await broadcastVia(a.port, { payload: { batch: i } });
        const res = await fetch(`${a.url}/broadcast-many`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ count: 600, prefix: 'A' }),
        });
        expect(res.status).toBe(200);
        await waitFor(async () => Number(await redis.command('XLEN', stream)) < 400, 'the stream trimmed', LONG);
      } finally {
        process.kill(b.pid, 'SIGCONT');
      }
      await broadcastVia(a.port, { payload: 'marker' });
      await client.waitFor((c) => c.body().includes('"marker"'), 'the marker', LONG);
      const got = frames(client);
      const kept = got.filter((f) => f.event === undefined).length;
      // Either every entry (608) or a reset before what follows the gap.
      expect(kept === 608 || got.some((f) => f.event === 'reset')).toBe(true);
      expect(got.some((f) => f.event === 'reset')).toBe(true);
    } finally {
      await a.stop();
      await b.stop();
    }
  },
);

test.each([
  // Before the byte stop the replay read all 600; with one it read a batch of 257 (2.1 MB).
  [600, 8 * 1024],
  // Entries as big as the cap: before, all 20 (5 MB) in the first batch.
  [20, 256 * 1024],
])(
  '6: a replay of %d entries of %d bytes reads about maxBufferedBytes from Redis, then resets',
  async (count, size) => {
    const cap = 256 * 1024;
    const stream = newStream();
    const served = await busHub(stream, { maxBufferedBytes: cap });
    const { hub } = served;
    const big = 'x'.repeat(size);
    for (let n = 0; n < count; n++) hub.broadcast({ n, big });
    // Read back (delivered live to nobody: a live client could fall behind
    // the same cap on a loaded machine and be disconnected as too slow).
    await waitFor(() => hub.getStats().bus.entriesRead >= count, `all ${count} read back`, LONG);
    const [[id]] = await redis.command('XRANGE', stream, '-', '+', 'COUNT', 1);
    const sent = async () => {
      const info = String(await redis.command('INFO', 'stats'));
      return Number(/total_net_output_bytes:(\d+)/.exec(info)[1]);
    };
    const before = await sent();
    const again = await connect(served, '/events?id=again', { 'Last-Event-ID': id });
    await again.waitFor((c) => c.body().includes('event: reset'), 'the reset', LONG);
    const read = (await sent()) - before;
    // The cap, plus the first read's 5 entries (its size unknown before it),
    // plus 64 KB for the rest of the traffic meanwhile.
    expect(read).toBeLessThan(cap + 5 * size + 64 * 1024);
    expect(frames(again).map((f) => f.event)).toEqual(['reset']);
  },
);
