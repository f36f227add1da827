// Leaks on the Redis bus, run with --expose-gc: 10,000 broadcasts through a
// real Redis to clients on both transports leave the heap and RSS flat and
// every client with every event; hubs with a bus, made and closed many
// times, leave no Redis connection, thread-held fd, napi reference or
// presence key behind.

const fs = require('node:fs');
const { SseHub } = require('..');
const { startRedis } = require('./redis-helpers.js');
const { startServer, rawGet, waitFor, collectGarbage } = require('./helpers.js');

const MB = 1024 * 1024;
// The broadcasts go out in tight bursts, far faster than a reader on this
// 2-core machine keeps up with: the stream keeps them all, or a reader that
// fell behind the trimming would rightly get `reset` instead.
const BURST_MAX_LEN = 20_000;
let redis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

async function memory() {
  await collectGarbage();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}

/** Redis clients connected now (CLIENT LIST has one line per client, this probe included). */
async function redisClients() {
  const list = await redis.command('CLIENT', 'LIST');
  return list.trim().split('\n').length - 1;
}

const openFds = () => fs.readdirSync('/proc/self/fd').length;

test('10,000 broadcasts through Redis: every event delivered, heap and RSS flat', async () => {
  const hub = new SseHub();
  hub.configure({ redis: { url: redis.url, stream: 'leak', maxLen: BURST_MAX_LEN } });
  await hub.ready();
  const streamHub = new SseHub();
  streamHub.configure({ transport: 'stream', redis: { url: redis.url, stream: 'leak', maxLen: BURST_MAX_LEN } });
  await streamHub.ready();
  const srv = await startServer((app) => {
    app.get('/socket', (_req, res) => {
      hub.initResponse(res);
      hub.addClient(res);
    });
    app.get('/stream', (_req, res) => {
      streamHub.initResponse(res);
      streamHub.addClient(res);
    });
  });
  const clients = [rawGet(srv.port, '/socket'), rawGet(srv.port, '/stream')];
  await waitFor(() => hub.getClientCount() === 1 && streamHub.getClientCount() === 1, 'both clients');
  expect(hub.getStats().socketConnections).toBe(1);
  expect(streamHub.getStats().streamConnections).toBe(1);

  // Only the newest frames are kept per client, so the clients' own
  // buffers do not count against the server's memory.
  const received = clients.map(() => ({ count: 0, last: -1 }));
  clients.forEach((c, i) => {
    let tail = '';
    c.socket.on('data', (d) => {
      tail += d.toString('latin1');
      const frames = tail.split('\n\n');
      tail = frames.pop();
      for (const f of frames) {
        const m = /data: \{"n":(\d+)\}/.exec(f);
        if (m) {
          received[i].count++;
          received[i].last = Number(m[1]);
        }
      }
    });
  });
  let n = 0;
  const round = async (count) => {
    for (let i = 0; i < count; i++) {
      (i % 2 ? streamHub : hub).broadcast({ n: n++ });
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    // Two hubs append independently, so the stream's last entry need not be
    // the last n: wait for the count.
    await waitFor(() => received.every((r) => r.count === n), 'every event to both clients', 30_000);
  };
  await round(2_000); // warm up lazily allocated state
  const before = await memory();
  await round(10_000);
  const after = await memory();

  expect(received.map((r) => r.count)).toEqual([12_000, 12_000]);
  expect(hub.getStats().bus).toMatchObject({ state: 'connected', entriesWritten: 6_000, entriesRead: 12_000 });
  expect(streamHub.getStats().bus).toMatchObject({ entriesWritten: 6_000, entriesRead: 12_000 });
  expect(after.heapUsed - before.heapUsed).toBeLessThan(4 * MB);
  expect(after.rss - before.rss).toBeLessThan(24 * MB);
  // The stream itself stays near maxLen.
  expect(Number(await redis.command('XLEN', 'leak'))).toBeLessThan(BURST_MAX_LEN + 1_000);
  expect(hub.getStats().bus.resets + streamHub.getStats().bus.resets).toBe(0);

  for (const c of clients) c.destroy();
  await Promise.all([hub.close(), streamHub.close()]);
  await srv.close();
});

test('200 hubs with a bus, made and closed: no Redis connection, fd, reference or presence key is left', async () => {
  const baselineClients = await redisClients();
  const cycle = async (i) => {
    const hub = new SseHub();
    const idleRefs = hub.nativeReferenceCount;
    hub.configure({ redis: { url: redis.url, stream: 'cycle' } });
    await hub.ready();
    hub.broadcast({ i });
    expect(await hub.globalClientCount()).toBe(0);
    await hub.close();
    expect(hub.getStats().bus.state).toBe('closed');
    expect(hub.nativeReferenceCount).toBe(idleRefs);
  };
  for (let i = 0; i < 10; i++) await cycle(i); // warm up
  const fdsBefore = openFds();
  const before = await memory();
  for (let i = 0; i < 200; i++) await cycle(i);
  const after = await memory();
  // close() resolved after the bus closed its connections; Redis may take
  // a moment to notice the last one.
  await waitFor(async () => (await redisClients()) === baselineClients, 'Redis clients back to the baseline');
  expect(await redisClients()).toBe(baselineClients);
  expect(openFds()).toBeLessThanOrEqual(fdsBefore);
  expect(await redis.command('KEYS', 'cycle:presence:*')).toEqual([]);
  expect(after.heapUsed - before.heapUsed).toBeLessThan(4 * MB);
});

test('hubs with a bus that are dropped without close() are collected, and their bus threads let Redis go', async () => {
  const baselineClients = await redisClients();
  const fdsBefore = openFds();
  const collected = [];
  const registry = new FinalizationRegistry((i) => collected.push(i));
  // In a function of its own, so no frame of the test keeps the last hub.
  const make = async (i) => {
    const hub = new SseHub();
    hub.configure({ redis: { url: redis.url, stream: 'dropped' } });
    await hub.ready();
    hub.broadcast({ i });
    registry.register(hub, i);
  };
  for (let i = 0; i < 20; i++) await make(i);
  await waitFor(
    async () => {
      await collectGarbage();
      return collected.length === 20;
    },
    'every hub collected',
    20_000,
  );
  // The finalizer told each bus thread to stop; they close their connections.
  await waitFor(async () => (await redisClients()) === baselineClients, 'Redis clients back to the baseline', 20_000);
  await waitFor(() => openFds() <= fdsBefore, 'fds back to the baseline', 20_000);
  expect(await redisClients()).toBe(baselineClients);
});

test("a hub dropped while a bus request waits is kept until the bus answers: the app's promise settles", async () => {
  const collected = [];
  const registry = new FinalizationRegistry((i) => collected.push(i));
  // Redis holds every command for a while, so the answer comes after
  // the collections below.
  const make = async () => {
    const hub = new SseHub();
    hub.configure({ redis: { url: redis.url, stream: 'dropped-asking' } });
    await hub.ready();
    registry.register(hub, 'asking');
    await redis.command('CLIENT', 'PAUSE', '1500', 'ALL');
    // Wrapped, so awaiting make() does not await the count itself.
    return { promise: hub.globalClientCount() };
  };
  const counted = await make();
  // Nothing but the promise refers to the hub now.
  await collectGarbage();
  await collectGarbage();
  const outcome = await Promise.race([
    counted.promise.then(
      (n) => ({ resolved: n }),
      (e) => ({ rejected: e.code }),
    ),
    new Promise((resolve) => setTimeout(() => resolve({ pending: true }), 15_000)),
  ]);
  expect(outcome).toEqual({ resolved: 0 });
  // Once answered, the hub is collected as any other.
  await waitFor(
    async () => {
      await collectGarbage();
      return collected.length === 1;
    },
    'the hub collected after the answer',
    20_000,
  );
});
