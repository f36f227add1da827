// The Redis bus when Redis goes away: a real redis-server SIGKILLed and
// restarted (empty, same port) under instances in their own processes and
// under an in-process hub; a Redis that is not there yet; one hub cut off
// from a Redis the others still use (a TCP proxy between them). What must
// hold: nothing crashes, broadcasts fall back to local delivery without an
// id, the bus reports one 'disconnected' and one 'connected' per outage,
// delivery across instances resumes, and per connection nothing arrives
// twice or out of stream order.

const { SseHub } = require('..');
const { cleanupsAfterEach, startRedis, spawnInstance } = require('./redis-helpers.js');
const { startServer, rawGet, waitFor, within, delay } = require('./helpers.js');
const {
  request,
  broadcastVia,
  statsOf,
  openSource,
  parseFrames,
  idKey,
  outOfOrder,
  duplicates,
  cuttableProxy,
  waitUntil,
  broadcastLoop,
} = require('./bus-clients.js');

// An unhandled rejection kills the instance (the default in Node 20 too; explicit here).
const STRICT = { NODE_OPTIONS: '--unhandled-rejections=strict' };
const STREAM_ID = /^\d+-\d+$/;

/** Undone after each test, last first: clients, hubs, servers, proxies. */
const cleanups = cleanupsAfterEach();

function raw(port) {
  const c = rawGet(port, '/events');
  cleanups.push(() => c.destroy());
  return c;
}

function source(port) {
  const s = openSource(`http://127.0.0.1:${port}/events`, { types: ['reset'] });
  cleanups.push(() => s.close());
  return s;
}

/** The frames of a raw client whose data is an object with `key`. */
const framesWith = (c, key) =>
  parseFrames(c.body()).filter((f) => f.data && typeof f.data === 'object' && key in f.data);

/** An in-process hub on a Redis bus, with an Express route; records 'bus' and 'error' events. */
async function inProcessHub(redisOption) {
  const hub = new SseHub();
  const busEvents = [];
  const errors = [];
  hub.on('bus', (e) => busEvents.push(e));
  hub.on('error', (e) => errors.push(e));
  hub.configure({ redis: redisOption });
  const srv = await startServer((app) =>
    app.get('/events', (_req, res) => {
      hub.initResponse(res);
      hub.addClient(res);
    }),
  );
  cleanups.push(() => srv.close());
  cleanups.push(() => hub.close());
  return { hub, srv, busEvents, errors };
}

async function busState(port) {
  return (await statsOf(port)).bus.state;
}

describe('Redis SIGKILLed under two instances', () => {
  test('nothing crashes; the outage falls back to local delivery without an id; both reconnect and cross-instance delivery resumes', async () => {
    const redis = await startRedis();
    const a = await spawnInstance({ REDIS_URL: redis.url, ...STRICT });
    const b = await spawnInstance({ REDIS_URL: redis.url, TRANSPORT: 'stream', ...STRICT });
    const rawA = raw(a.port);
    const rawB = raw(b.port);
    const esA = source(a.port);
    const esB = source(b.port);
    await waitUntil(async () => (await statsOf(a.port)).clients === 2, 'two clients on A');
    await waitUntil(async () => (await statsOf(b.port)).clients === 2, 'two clients on B');
    expect((await statsOf(b.port)).streamConnections).toBe(2);

    // Broadcasts flowing from both instances; Redis dies in the middle.
    const loop = broadcastLoop([a.port, b.port], (n) => ({ n }));
    await waitFor(() => [esA, esB].every((s) => s.messages.length >= 10), 'traffic before the kill', 15_000);
    await redis.kill();
    await waitUntil(async () => (await busState(a.port)) === 'disconnected', "A's bus disconnected");
    await waitUntil(async () => (await busState(b.port)) === 'disconnected', "B's bus disconnected");
    // Keep broadcasting into the outage for a while.
    const sentAtOutage = loop.sent.length;
    await waitFor(() => loop.sent.length >= sentAtOutage + 10, 'broadcasts during the outage', 15_000);
    await loop.stop();
    expect(loop.failures).toEqual([]);

    // Both alive and answering.
    for (const inst of [a, b]) {
      expect(inst.child.exitCode).toBeNull();
      expect(inst.child.signalCode).toBeNull();
      expect((await request(inst.port, '/whoami')).body).toEqual({ pid: inst.pid });
      // globalClientCount() rejects (Express answers 500), nothing more.
      const count = await request(inst.port, '/count');
      expect(count.status).toBe(500);
      expect(count.body.error.code).toBe('ERR_SSE_BUS');
    }

    // A broadcast during the outage: local clients at once, no id line, counted.
    const before = { a: (await statsOf(a.port)).bus, b: (await statsOf(b.port)).bus };
    expect(before.a.state).toBe('disconnected');
    expect(await broadcastVia(a.port, { payload: { outage: 'A' } })).toEqual({ result: 2 });
    expect(await broadcastVia(b.port, { payload: { outage: 'B' } })).toEqual({ result: 2 });
    await rawA.waitFor(() => framesWith(rawA, 'outage').length === 1, 'the outage broadcast on A');
    await rawB.waitFor(() => framesWith(rawB, 'outage').length === 1, 'the outage broadcast on B');
    expect(framesWith(rawA, 'outage').map((f) => f.raw)).toEqual(['data: {"outage":"A"}']);
    expect(framesWith(rawB, 'outage').map((f) => f.raw)).toEqual(['data: {"outage":"B"}']);
    await waitFor(() => esA.data().some((d) => d.outage === 'A'), 'EventSource on A got it');
    await waitFor(() => esB.data().some((d) => d.outage === 'B'), 'EventSource on B got it');
    const during = { a: (await statsOf(a.port)).bus, b: (await statsOf(b.port)).bus };
    expect(during.a.localFallbacks).toBe(before.a.localFallbacks + 1);
    expect(during.b.localFallbacks).toBe(before.b.localFallbacks + 1);
    expect(during.a.entriesWritten).toBe(before.a.entriesWritten);

    // Redis back, empty, on the same port: both reconnect.
    await redis.restart();
    await waitUntil(async () => (await busState(a.port)) === 'connected', "A's bus connected again", 20_000);
    await waitUntil(async () => (await busState(b.port)) === 'connected', "B's bus connected again", 20_000);
    for (const inst of [a, b]) expect((await statsOf(inst.port)).bus.reconnects).toBeGreaterThanOrEqual(1);
    await waitUntil(async () => (await request(a.port, '/count')).body.global === 4, 'the global count again');

    // Across instances again, with a stream id, both ways.
    for (const [from, to, tag] of [
      [a, rawB, 'A'],
      [b, rawA, 'B'],
    ]) {
      expect(await broadcastVia(from.port, { payload: { after: tag } })).toEqual({ result: 2 });
      await to.waitFor(() => framesWith(to, 'after').some((f) => f.data.after === tag), `after-${tag} across`, 15_000);
    }
    await waitFor(() => [esA, esB].every((s) => s.data().filter((d) => d.after).length === 2), 'EventSources', 15_000);
    const afterA = framesWith(rawA, 'after');
    const afterB = framesWith(rawB, 'after');
    expect(afterA.map((f) => f.data)).toEqual([{ after: 'A' }, { after: 'B' }]);
    expect(afterB).toEqual(afterA);
    for (const f of afterA) {
      expect(f.id).toMatch(STREAM_ID);
      expect(f.raw).toBe(`id: ${f.id}\ndata: ${JSON.stringify(f.data)}`);
    }
    for (const s of [esA, esB]) {
      expect(s.messages.filter((m) => m.data.after).map((m) => [m.id, m.data])).toEqual(
        afterA.map((f) => [f.id, f.data]),
      );
    }

    // The outage broadcasts stayed where they were made.
    expect(framesWith(rawA, 'outage').map((f) => f.data)).toEqual([{ outage: 'A' }]);
    expect(framesWith(rawB, 'outage').map((f) => f.data)).toEqual([{ outage: 'B' }]);
    expect(esA.data().filter((d) => d.outage)).toEqual([{ outage: 'A' }]);
    expect(esB.data().filter((d) => d.outage)).toEqual([{ outage: 'B' }]);

    for (const inst of [a, b]) {
      expect(inst.child.exitCode).toBeNull();
      expect(inst.stderr()).toBe('');
    }
  });

  test('per connection, across the kill and the restart: stream ids strictly increase, nothing twice, every entry of the new stream delivered in order', async () => {
    const redis = await startRedis();
    const a = await spawnInstance({ REDIS_URL: redis.url, ...STRICT });
    const b = await spawnInstance({ REDIS_URL: redis.url, TRANSPORT: 'stream', ...STRICT });
    const raws = { A: [raw(a.port), raw(a.port)], B: [raw(b.port), raw(b.port)] };
    const sources = { A: [source(a.port), source(a.port)], B: [source(b.port), source(b.port)] };
    await waitUntil(async () => (await statsOf(a.port)).clients === 4, 'four clients on A');
    await waitUntil(async () => (await statsOf(b.port)).clients === 4, 'four clients on B');

    const loop = broadcastLoop([a.port, b.port], (n) => ({ n, from: n % 2 === 0 ? 'A' : 'B' }), { pauseMs: 5 });
    await waitFor(() => loop.sent.length >= 40, 'traffic before the kill', 15_000);
    await redis.kill();
    await waitUntil(async () => (await busState(a.port)) === 'disconnected', "A's bus disconnected");
    await waitUntil(async () => (await busState(b.port)) === 'disconnected', "B's bus disconnected");
    let mark = loop.sent.length;
    await waitFor(() => loop.sent.length >= mark + 20, 'broadcasts during the outage', 15_000);
    await redis.restart();
    await waitUntil(async () => (await busState(a.port)) === 'connected', "A's bus connected again", 20_000);
    await waitUntil(async () => (await busState(b.port)) === 'connected', "B's bus connected again", 20_000);
    mark = loop.sent.length;
    await waitFor(() => loop.sent.length >= mark + 40, 'broadcasts after the restart', 15_000);
    await loop.stop();
    expect(loop.failures).toEqual([]);
    // A last one from each, so every reader is known to have caught up.
    await broadcastVia(a.port, { payload: { last: 'A' } });
    await broadcastVia(b.port, { payload: { last: 'B' } });
    const allRaw = [...raws.A, ...raws.B];
    for (const c of allRaw) await c.waitFor(() => framesWith(c, 'last').length === 2, 'both last broadcasts', 15_000);
    for (const s of [...sources.A, ...sources.B]) {
      await waitFor(() => s.data().filter((d) => d.last).length === 2, 'EventSource: both last', 15_000);
    }

    // Every entry the new Redis holds, in stream order.
    const entries = (await redis.command('XRANGE', 'sse', '-', '+')).map(([id]) => id);
    expect(entries.length).toBeGreaterThanOrEqual(42);
    const firstNew = idKey(entries[0]);

    for (const [home, clients] of Object.entries(raws)) {
      for (const c of clients) {
        const frames = parseFrames(c.body()).filter((f) => f.data !== undefined);
        const ids = frames.filter((f) => f.id !== undefined).map((f) => f.id);
        // Ordered per stream, at most once per connection.
        expect(outOfOrder(ids)).toEqual([]);
        expect(duplicates(ids)).toEqual([]);
        expect(duplicates(frames.map((f) => f.data))).toEqual([]);
        // Without an id: only this instance's own outage fallbacks.
        const withoutId = frames.filter((f) => f.id === undefined);
        expect(withoutId.length).toBeGreaterThan(0);
        expect(withoutId.filter((f) => f.data.from !== home)).toEqual([]);
        // Since the restart, nothing was missed: the new stream, whole and in order.
        expect(ids.filter((id) => idKey(id) >= firstNew)).toEqual(entries);
      }
    }
    for (const clients of Object.values(sources)) {
      for (const s of clients) {
        const messages = s.messages.filter((m) => m.type === 'message');
        expect(duplicates(messages.map((m) => m.data))).toEqual([]);
        // lastEventId never goes back (an event without an id keeps the previous one).
        const ids = messages.map((m) => m.id).filter((id) => id !== '');
        for (let i = 1; i < ids.length; i++) expect(idKey(ids[i]) >= idKey(ids[i - 1])).toBe(true);
        expect(s.messages.filter((m) => m.type === 'reset')).toEqual([]);
      }
    }
    for (const inst of [a, b]) {
      expect(inst.child.exitCode).toBeNull();
      expect(inst.stderr()).toBe('');
    }
  });
});

describe('one hub cut off from a Redis the others still use', () => {
  test('entries another instance wrote meanwhile are delivered after the reconnect, in order, with their ids', async () => {
    const redis = await startRedis();
    const proxy = await cuttableProxy(redis.port);
    cleanups.push(() => proxy.close());
    const { hub, srv, busEvents, errors } = await inProcessHub(proxy.url);
    await within(hub.ready(), 15_000, 'hub.ready()');
    const b = await spawnInstance({ REDIS_URL: redis.url, ...STRICT });
    const mine = raw(srv.port);
    const es = source(srv.port);
    const theirs = raw(b.port);
    await waitFor(() => hub.getClientCount() === 2, 'two clients on the hub');
    await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'a client on B');

    await broadcastVia(b.port, { payload: { n: 0 } });
    await mine.waitFor(() => framesWith(mine, 'n').length === 1, 'n 0 on the hub');

    proxy.cut();
    await waitFor(() => hub.getStats().bus.state === 'disconnected', 'the hub disconnected');
    for (let n = 1; n <= 5; n++) await broadcastVia(b.port, { payload: { n } });
    expect(hub.broadcast({ local: 'hub' })).toBe(2);
    await theirs.waitFor(() => framesWith(theirs, 'n').length === 6, 'n 1..5 on B');
    await mine.waitFor(() => framesWith(mine, 'local').length === 1, 'the local fallback');
    expect(framesWith(mine, 'local').map((f) => f.raw)).toEqual(['data: {"local":"hub"}']);
    expect(hub.getStats().bus.localFallbacks).toBe(1);

    proxy.heal();
    await waitFor(() => hub.getStats().bus.state === 'connected', 'the hub reconnected', 20_000);
    await mine.waitFor(() => framesWith(mine, 'n').length === 6, 'n 1..5 on the hub', 15_000);
    await waitFor(() => es.data().filter((d) => 'n' in d).length === 6, 'n 1..5 on the EventSource', 15_000);
    // Exactly what B's own client got: same entries, same ids, same order.
    expect(framesWith(mine, 'n')).toEqual(framesWith(theirs, 'n'));
    expect(framesWith(mine, 'n').map((f) => f.data.n)).toEqual([0, 1, 2, 3, 4, 5]);
    for (const f of framesWith(mine, 'n')) expect(f.id).toMatch(STREAM_ID);
    expect(es.messages.filter((m) => 'n' in m.data).map((m) => [m.id, m.data])).toEqual(
      framesWith(theirs, 'n').map((f) => [f.id, f.data]),
    );
    expect(hub.getStats().bus.resets).toBe(0);
    // The fallback stayed local.
    expect(framesWith(theirs, 'local')).toEqual([]);
    expect(busEvents.map((e) => e.state)).toEqual(['connected', 'disconnected', 'connected']);
    expect(errors).toEqual([]);
  });

  test('a client that connects with Last-Event-ID while the hub is cut off gets a reset, then local broadcasts at once', async () => {
    const redis = await startRedis();
    const proxy = await cuttableProxy(redis.port);
    cleanups.push(() => proxy.close());
    const { hub, srv, errors } = await inProcessHub(proxy.url);
    await within(hub.ready(), 15_000, 'hub.ready()');
    const b = await spawnInstance({ REDIS_URL: redis.url, ...STRICT });
    const theirs = raw(b.port);
    await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'a client on B');
    for (let n = 1; n <= 3; n++) await broadcastVia(b.port, { payload: { n } });
    await theirs.waitFor(() => framesWith(theirs, 'n').length === 3, 'n 1..3 on B');
    const [first, ...missed] = framesWith(theirs, 'n');

    proxy.cut();
    await waitFor(() => hub.getStats().bus.state === 'disconnected', 'the hub disconnected');
    // Say its instance (B) went away and it comes back here, having seen n 1.
    const back = rawGet(srv.port, '/events', { 'Last-Event-ID': first.id });
    cleanups.push(() => back.destroy());
    await waitFor(() => hub.getClientCount() === 1, 'the client on the hub');
    expect(hub.broadcast({ live: 'during' })).toBe(1);
    proxy.heal();
    await waitFor(() => hub.getStats().bus.state === 'connected', 'the hub reconnected', 20_000);
    expect(hub.broadcast({ live: 'after' })).toBe(1);
    await back.waitFor(
      () => framesWith(back, 'live').some((f) => f.data.live === 'after'),
      'the live one after',
      15_000,
    );

    const frames = parseFrames(back.body()).filter((f) => f.data !== undefined);
    // Its replay cannot be served while Redis is away: a reset at once (with
    // the newest id this hub delivered), then what is live, the one made
    // during the cut without an id, not held back until Redis returns.
    expect(missed).toHaveLength(2);
    const [reset, during, ...rest] = frames;
    expect(reset.raw).toMatch(/^event: reset\nid: \d+-\d+\ndata: null$/);
    expect(during.raw).toBe('data: {"live":"during"}');
    // Then, live once the hub is back, whatever it had not delivered before
    // the cut (after the reset's id), in order, and the broadcast after it.
    const known = [first, ...missed].map((f) => f.id);
    expect(known).toContain(reset.id);
    const pending = [first, ...missed].filter((f) => idKey(f.id) > idKey(reset.id)).map((f) => f.raw);
    expect(rest.map((f) => f.raw)).toEqual([
      ...pending,
      expect.stringMatching(/^id: \d+-\d+\ndata: \{"live":"after"\}$/),
    ]);
    expect(errors).toEqual([]);
  });

  // Ways the entries after the hub's last id can be gone when it is back.
  const removals = [
    [
      "the other instance's own XADD MAXLEN ~ trimming (MAX_LEN 10, 300 entries)",
      { MAX_LEN: 10 },
      async ({ b }) => {
        const res = await request(b.port, '/broadcast-many', { method: 'POST', body: { count: 300, prefix: 'away' } });
        expect(res.status).toBe(200);
      },
    ],
    [
      'XTRIM MAXLEN 0',
      {},
      async ({ b, redis }) => {
        for (let n = 1; n <= 5; n++) await broadcastVia(b.port, { payload: { n } });
        // B answered once each was queued for its bus thread, not once it was
        // in Redis: wait for all six there (the test raced B's XADD, under load).
        await waitUntil(async () => (await redis.command('XLEN', 'sse')) === 6, 'the six entries in Redis');
        expect(await redis.command('XTRIM', 'sse', 'MAXLEN', '0')).toBe(6);
      },
    ],
    [
      'XDEL of every entry after it',
      {},
      async ({ b, redis, theirs }) => {
        for (let n = 1; n <= 5; n++) await broadcastVia(b.port, { payload: { n } });
        await theirs.waitFor(() => framesWith(theirs, 'n').length === 6, 'n 1..5 on B');
        const ids = framesWith(theirs, 'n')
          .slice(1)
          .map((f) => f.id);
        expect(await redis.command('XDEL', 'sse', ...ids)).toBe(5);
      },
    ],
  ];

  test.each(removals)(
    'entries gone while it was away (%s): every local client gets one `event: reset` without an id, then live entries',
    async (_name, env, remove) => {
      const redis = await startRedis();
      const proxy = await cuttableProxy(redis.port);
      cleanups.push(() => proxy.close());
      const { hub, srv, errors } = await inProcessHub(proxy.url);
      await within(hub.ready(), 15_000, 'hub.ready()');
      const b = await spawnInstance({ REDIS_URL: redis.url, ...env, ...STRICT });
      const mine = [raw(srv.port), raw(srv.port)];
      const es = source(srv.port);
      const theirs = raw(b.port);
      await waitFor(() => hub.getClientCount() === 3, 'three clients on the hub');
      await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'a client on B');

      await broadcastVia(b.port, { payload: { n: 0 } });
      for (const c of mine) await c.waitFor(() => framesWith(c, 'n').length === 1, 'n 0 on the hub');

      proxy.cut();
      await waitFor(() => hub.getStats().bus.state === 'disconnected', 'the hub disconnected');
      await remove({ b, redis, theirs });
      const stream = await redis.command('XINFO', 'STREAM', 'sse');

      proxy.heal();
      await waitFor(() => hub.getStats().bus.state === 'connected', 'the hub reconnected', 20_000);
      // A live entry after the gap: once it is here, the reset (if any) has been sent.
      await broadcastVia(b.port, { payload: { live: 1 } });
      for (const c of mine) await c.waitFor(() => framesWith(c, 'live').length === 1, 'the live entry', 15_000);
      await waitFor(() => es.data().some((d) => d?.live === 1), 'the live entry on the EventSource', 15_000);
      const context = `XINFO STREAM after the removal: ${JSON.stringify(stream)}; bus: ${JSON.stringify(hub.getStats().bus)}`;
      for (const c of mine) {
        const frames = parseFrames(c.body());
        const resets = frames.filter((f) => f.event === 'reset');
        expect({ resets: resets.map((f) => f.raw), context }).toEqual({
          resets: ['event: reset\ndata: null'],
          context,
        });
        // Before the live entry, which has its id.
        const live = frames.findIndex((f) => f.data?.live === 1);
        expect(frames.indexOf(resets[0])).toBeLessThan(live);
        expect(frames[live].id).toMatch(STREAM_ID);
      }
      expect(es.messages.filter((m) => m.type === 'reset')).toHaveLength(1);
      expect(hub.getStats().bus.resets).toBe(1);
      expect(errors).toEqual([]);
    },
  );
});

describe('an in-process hub', () => {
  test("'bus' events: one disconnected (with an Error) and one connected per outage; no 'error'; globalClientCount rejects ERR_SSE_BUS while down", async () => {
    const redis = await startRedis();
    const { hub, srv, busEvents, errors } = await inProcessHub(redis.url);
    await within(hub.ready(), 15_000, 'hub.ready()');
    const c = raw(srv.port);
    await waitFor(() => hub.getClientCount() === 1, 'a client');
    await waitUntil(async () => (await hub.globalClientCount()) === 1, 'the global count');
    // The first connection is reported too.
    expect(busEvents).toEqual([{ state: 'connected' }]);

    for (let outage = 1; outage <= 2; outage++) {
      await redis.kill();
      await waitFor(() => busEvents.length === 2 * outage, `disconnected (outage ${outage})`, 15_000);
      const down = busEvents[busEvents.length - 1];
      expect(Object.keys(down).sort()).toEqual(['error', 'state']);
      expect(down.state).toBe('disconnected');
      expect(down.error).toBeInstanceOf(Error);
      expect(down.error.message).not.toBe('');
      expect(hub.getStats().bus.state).toBe('disconnected');
      await expect(within(hub.globalClientCount(), 15_000, 'globalClientCount')).rejects.toMatchObject({
        code: 'ERR_SSE_BUS',
      });
      // Several reconnect attempts fail meanwhile (backoff from 100 ms): still one event.
      await delay(2000);
      expect(busEvents).toHaveLength(2 * outage);
      await redis.restart();
      await waitFor(() => busEvents.length === 2 * outage + 1, `connected (outage ${outage})`, 20_000);
      expect(busEvents[busEvents.length - 1]).toEqual({ state: 'connected' });
      expect(hub.getStats().bus.reconnects).toBe(outage);
      await waitUntil(async () => (await hub.globalClientCount()) === 1, 'the global count again');
    }
    expect(busEvents.map((e) => e.state)).toEqual([
      'connected',
      'disconnected',
      'connected',
      'disconnected',
      'connected',
    ]);
    expect(errors).toEqual([]);
    expect(c.socket.destroyed).toBe(false);
  });

  test('Redis not running at start: broadcasts are local; once Redis is up the bus connects and delivery across processes works', async () => {
    const redis = await startRedis();
    await redis.stop();
    const { hub, srv, busEvents, errors } = await inProcessHub(redis.url);
    let ready = false;
    const readyPromise = hub.ready().then(() => {
      ready = true;
    });
    const mine = raw(srv.port);
    await waitFor(() => hub.getClientCount() === 1, 'a client');
    // Its first attempt failed (on a loaded machine it may not have been
    // made yet: the outage starts with its failure, not before).
    await waitFor(() => hub.getStats().bus.state === 'disconnected', 'the first attempt refused', 20_000);

    expect(hub.broadcast({ early: 1 })).toBe(1);
    await mine.waitFor(() => framesWith(mine, 'early').length === 1, 'the early broadcast');
    expect(framesWith(mine, 'early').map((f) => f.raw)).toEqual(['data: {"early":1}']);
    expect(hub.getStats().bus.localFallbacks).toBe(1);
    expect(ready).toBe(false);

    await redis.restart();
    await within(readyPromise, 20_000, 'hub.ready() once Redis is up');
    expect(hub.getStats().bus.state).toBe('connected');
    // Redis down from the start is one outage: one disconnected, one connected.
    expect(busEvents.map((e) => e.state)).toEqual(['disconnected', 'connected']);
    expect(busEvents[0].error).toBeInstanceOf(Error);
    expect(busEvents[1]).toEqual({ state: 'connected' });

    const b = await spawnInstance({ REDIS_URL: redis.url, ...STRICT });
    const theirs = raw(b.port);
    await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'a client on B');
    expect(hub.broadcast({ cross: 'hub' })).toBe(1);
    await broadcastVia(b.port, { payload: { cross: 'B' } });
    for (const c of [mine, theirs]) {
      await c.waitFor(() => framesWith(c, 'cross').length === 2, 'both cross broadcasts', 15_000);
    }
    const crossMine = framesWith(mine, 'cross');
    expect(crossMine.map((f) => f.data)).toEqual([{ cross: 'hub' }, { cross: 'B' }]);
    for (const f of crossMine) expect(f.id).toMatch(STREAM_ID);
    expect(framesWith(theirs, 'cross')).toEqual(crossMine);
    expect(framesWith(theirs, 'early')).toEqual([]);
    expect(errors).toEqual([]);
  });
});
