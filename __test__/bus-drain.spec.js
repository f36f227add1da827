// A rolling restart on the Redis bus: two instances on one Redis behind a
// TCP proxy that sends new connections to the first instance that accepts
// them. Real `eventsource` clients land on A; B broadcasts numbered events
// continuously; A drains (`retry: 200`, then its connections end) and exits;
// the clients reconnect by themselves, through the proxy, to B, with
// Last-Event-ID, and are replayed what they missed. A deploy loses nothing
// and duplicates nothing.

const path = require('node:path');
const { SseHub } = require('..');
const { cleanupsAfterEach, startRedis, spawnInstance, tcpProxy } = require('./redis-helpers.js');
const { startServer, rawGet, rawBytes, parseChunked, waitFor, within, runToExit, outcome } = require('./helpers.js');
const { request, statsOf, openSource, parseFrames, outOfOrder, waitUntil, broadcastLoop } = require('./bus-clients.js');

const PACKAGE = JSON.stringify(path.join(__dirname, '..'));

const cleanups = cleanupsAfterEach();

test('A drains while B broadcasts: every client gets every event exactly once, in order, across the move to B', async () => {
  const redis = await startRedis();
  const a = await spawnInstance({ REDIS_URL: redis.url });
  const b = await spawnInstance({ REDIS_URL: redis.url });
  const targets = [a.port, b.port];
  const proxy = await tcpProxy(targets);
  cleanups.push(() => proxy.close());

  const clients = [0, 1, 2].map(() => openSource(`http://127.0.0.1:${proxy.port}/events`));
  for (const c of clients) cleanups.push(() => c.close());
  // One more on A directly, to see the bytes of the drain.
  const onA = rawGet(a.port, '/events');
  cleanups.push(() => onA.destroy());
  await waitUntil(async () => (await statsOf(a.port)).clients === 4, 'the three clients and the raw one on A');
  expect((await statsOf(b.port)).clients).toBe(0);

  const loop = broadcastLoop([b.port], (n) => ({ n }), { pauseMs: 10 });
  await waitFor(() => clients.every((c) => c.messages.length >= 20), 'events before the drain', 15_000);

  const drained = await within(
    request(a.port, '/drain', { method: 'POST', body: { retryMs: 200 } }),
    30_000,
    'POST /drain',
  );
  expect(drained).toEqual({ status: 200, body: { ok: true } });
  expect(await within(a.exited, 15_000, 'A exiting')).toEqual({ code: 0, signal: null });

  // The clients come back by themselves, through the proxy, to B.
  await waitUntil(async () => (await statsOf(b.port)).clients === 3, 'the three clients on B', 20_000);
  const sentAtMove = loop.sent.length;
  await waitFor(() => loop.sent.length >= sentAtMove + 20, 'events after the move', 15_000);
  await loop.stop();
  expect(loop.failures).toEqual([]);
  const last = loop.sent[loop.sent.length - 1];
  for (const c of clients) {
    await waitFor(() => c.data().some((d) => d.n === last), `the last event (n ${last})`, 15_000);
  }

  const all = Array.from({ length: last + 1 }, (_, n) => n);
  expect(loop.sent).toEqual(all);
  for (const c of clients) {
    // No loss, no duplicate, in order.
    expect(c.data().map((d) => d.n)).toEqual(all);
    const ids = c.messages.map((m) => m.id);
    expect(outOfOrder(ids)).toEqual([]);
    expect(c.opens).toBe(2);
  }
  // The same event has the same id everywhere.
  expect(clients[1].messages).toEqual(clients[0].messages);
  expect(clients[2].messages).toEqual(clients[0].messages);
  const bus = (await statsOf(b.port)).bus;
  expect(bus.replays).toBeGreaterThanOrEqual(3);
  expect(bus.resets).toBe(0);

  // What A wrote before it ended the stream: `retry: 200` as a frame of its own, then the end.
  await onA.closed;
  const wire = parseChunked(rawBytes(onA));
  expect(wire.error).toBeNull();
  expect(wire.ended).toBe(true);
  const body = wire.body.toString('utf8');
  expect(body).toContain('\n\nretry: 200\n\n');
  const frames = parseFrames(body);
  expect(frames.filter((f) => f.retry !== undefined).map((f) => f.raw)).toEqual(['retry: 200']);
  // Up to the drain, the raw client on A saw a gapless prefix of the events.
  const seen = frames.filter((f) => f.data?.n !== undefined).map((f) => f.data.n);
  expect(seen).toEqual(all.slice(0, seen.length));
  expect(seen.length).toBeGreaterThanOrEqual(20);
});

test('the broadcasts go through the proxy too (A, draining included, until it exits; then B): every one answered 200 reaches every client exactly once, in order', async () => {
  const redis = await startRedis();
  const a = await spawnInstance({ REDIS_URL: redis.url });
  const b = await spawnInstance({ REDIS_URL: redis.url });
  const proxy = await tcpProxy([a.port, b.port]);
  cleanups.push(() => proxy.close());

  const clients = [0, 1, 2].map(() => openSource(`http://127.0.0.1:${proxy.port}/events`));
  for (const c of clients) cleanups.push(() => c.close());
  await waitUntil(async () => (await statsOf(a.port)).clients === 3, 'the three clients on A');

  // Each POST on a connection of its own, through the proxy: A appends until it is gone.
  const loop = broadcastLoop([proxy.port], (n) => ({ n }), { pauseMs: 5 });
  await waitFor(() => clients.every((c) => c.messages.length >= 20), 'events before the drain', 15_000);
  const drained = await within(
    request(a.port, '/drain', { method: 'POST', body: { retryMs: 200 } }),
    30_000,
    'POST /drain',
  );
  expect(drained).toEqual({ status: 200, body: { ok: true } });
  expect(await within(a.exited, 15_000, 'A exiting')).toEqual({ code: 0, signal: null });
  await waitUntil(async () => (await statsOf(b.port)).clients === 3, 'the three clients on B', 20_000);
  const sentAtMove = loop.sent.length;
  await waitFor(() => loop.sent.length >= sentAtMove + 20, 'events after the move', 15_000);
  await loop.stop();
  const last = loop.sent[loop.sent.length - 1];
  for (const c of clients) {
    await waitFor(() => c.data().some((d) => d.n === last), `the last event (n ${last})`, 15_000);
  }
  // A request A refuses once its hub is closed (503), or that its exit cuts, fails, and the caller
  // knows; every one answered 200 is delivered.
  for (const f of loop.failures) expect(f.error).toMatch(/: 503 .*ERR_SSE_CLOSED|ECONNRESET|socket hang up/);
  const xr = await redis.command('XRANGE', 'sse', '-', '+');
  const inStream = new Set(xr.map(([, f]) => JSON.parse(f[f.indexOf('data') + 1]).n));
  for (const c of clients) {
    const got = new Set(c.data().map((d) => d.n));
    const missing = loop.sent
      .filter((n) => !got.has(n))
      .map((n) => ({ n, result: loop.results.get(n), inStream: inStream.has(n) }));
    expect({ missing, failures: loop.failures }).toEqual({ missing: [], failures: loop.failures });
    expect(c.data().map((d) => d.n)).toEqual(loop.sent);
    expect(outOfOrder(c.messages.map((m) => m.id))).toEqual([]);
  }
  expect(clients[1].messages).toEqual(clients[0].messages);
  expect(clients[2].messages).toEqual(clients[0].messages);
});

test("broadcasts made while draining (by a 'disconnect' listener) are appended for the other instances, or refused; never dropped silently", async () => {
  const redis = await startRedis();
  const b = await spawnInstance({ REDIS_URL: redis.url });
  const theirs = rawGet(b.port, '/events');
  cleanups.push(() => theirs.destroy());
  const hub = new SseHub();
  hub.configure({ redis: redis.url });
  cleanups.push(() => hub.close());
  await within(hub.ready(), 15_000, 'hub.ready()');
  const srv = await startServer((app) =>
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      hub.addClient(String(req.query.id), res);
    }),
  );
  cleanups.push(() => srv.close());
  const mine = ['u1', 'u2', 'u3'].map((id) => rawGet(srv.port, `/events?id=${id}`));
  for (const c of mine) cleanups.push(() => c.destroy());
  await waitFor(() => hub.getClientCount() === 3, 'three clients on the hub');
  await waitUntil(async () => (await statsOf(b.port)).clients === 1, 'a client on B');

  // The usual presence pattern: tell everyone who left.
  const calls = [];
  hub.on('disconnect', ({ id }) => {
    const state = hub.getStats().bus.state;
    const result = outcome(() => hub.broadcast({ left: id }));
    const { entriesWritten, localFallbacks } = hub.getStats().bus;
    calls.push({ id, state, outcome: result, after: { entriesWritten, localFallbacks } });
  });
  hub.broadcast({ before: 1 });
  await within(hub.drain({ retryMs: 200 }), 30_000, 'hub.drain()');
  expect(calls.map((c) => c.id).sort()).toEqual(['u1', 'u2', 'u3']);

  // Before the drain: on B with its id.
  await theirs.waitFor(() => theirs.body().includes('"before"'), 'the broadcast before the drain on B', 15_000);
  // A sentinel from B, so that B has read everything appended before it.
  await request(b.port, '/broadcast', { method: 'POST', body: { payload: { sentinel: 1 } } });
  await theirs.waitFor(() => theirs.body().includes('"sentinel"'), 'the sentinel on B', 15_000);
  const leftOnB = parseFrames(theirs.body())
    .filter((f) => f.data?.left)
    .map((f) => f.data.left);
  const stream = (await redis.command('XRANGE', 'sse', '-', '+')).map(([, f]) => f[f.indexOf('data') + 1]);
  // Each call either threw ERR_SSE_CLOSED (the caller knows) or its entry reached B.
  const silentlyLost = calls
    .filter((c) => c.outcome.code !== 'ERR_SSE_CLOSED' && !leftOnB.includes(c.id))
    .map((c) => ({ ...c, inStream: stream.includes(JSON.stringify({ left: c.id })) }));
  expect(silentlyLost).toEqual([]);
});

test('drain(), close() and globalClientCount() settle in a process that nothing else keeps alive', async () => {
  const redis = await startRedis();
  const results = {};
  for (const [name, body] of [
    ['ready', "await hub.ready(); console.log('ok');"],
    ['globalClientCount', "await hub.ready(); console.log('ok', await hub.globalClientCount());"],
    ['drain', "await hub.ready(); await hub.drain({ retryMs: 100 }); console.log('ok');"],
    ['close', "await hub.ready(); await hub.close(); console.log('ok');"],
  ]) {
    const { code, stdout } = await runToExit(`
      const { SseHub } = require(${PACKAGE});
      const hub = new SseHub();
      hub.configure({ redis: ${JSON.stringify(redis.url)} });
      (async () => { ${body} })().catch((err) => console.log('failed', err.message));`);
    results[name] = { code, stdout };
  }
  expect(results).toEqual({
    ready: { code: 0, stdout: 'ok\n' },
    globalClientCount: { code: 0, stdout: 'ok 0\n' },
    drain: { code: 0, stdout: 'ok\n' },
    close: { code: 0, stdout: 'ok\n' },
  });
});
