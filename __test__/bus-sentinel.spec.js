// The bus on Redis Sentinel (`redis+sentinel://`): a master, a replica and
// three Sentinels (redis-server --sentinel), all on loopback, started by
// the test; two instances broadcasting. The master is killed (SIGKILL)
// mid-stream: the Sentinels promote the replica, both instances go to it
// (they ask the Sentinels at every connect), and every entry the new master
// holds reaches every client of both instances, once, in order. The old
// master then comes back empty, calling itself a master until the
// Sentinels demote it: the bus never connects to it. And a URL that names
// a replica directly is refused at connect by its ROLE.

const { SseHub } = require('..');
const { cleanupsAfterEach, startRedis, startSentinel, spawnInstance } = require('./redis-helpers.js');
const { waitFor } = require('./helpers.js');
const { request, statsOf, openSource, outOfOrder, duplicates, waitUntil, broadcastLoop } = require('./bus-clients.js');

const LONG = 30_000;
const cleanups = cleanupsAfterEach();

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** The stream's ids on a server, oldest first. */
async function idsOn(server, stream) {
  const entries = await server.command('XRANGE', stream, '-', '+');
  return entries.map(([id]) => id);
}

test('a master killed mid-stream: the bus follows the failover, and never writes to the old master when it returns empty', async () => {
  const master = await startRedis();
  cleanups.push(() => master.stop());
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
  cleanups.push(() => replica.stop());
  await waitUntil(
    async () => /master_link_status:up/.test(await replica.command('INFO', 'replication')),
    'the replica in sync',
    LONG,
  );
  const sentinels = [];
  for (let i = 0; i < 3; i++) {
    const sentinel = await startSentinel(master.port);
    cleanups.push(() => sentinel.stop());
    sentinels.push(sentinel);
  }
  // They find each other and the replica through the master (every 2 s).
  await waitUntil(
    async () => {
      for (const s of sentinels) {
        if ((await s.command('SENTINEL', 'sentinels', 'm')).length < 2) return false;
        if ((await s.command('SENTINEL', 'replicas', 'm')).length < 1) return false;
      }
      return true;
    },
    'the Sentinels aware of each other and of the replica',
    LONG,
  );
  const url = `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/m`;
  const stream = 'ha';
  const a = await spawnInstance({ REDIS_URL: url, STREAM: stream });
  const b = await spawnInstance({ REDIS_URL: url, STREAM: stream });
  const clients = [a, b, a, b].map((i) => openSource(`http://127.0.0.1:${i.port}/events`));
  for (const c of clients) cleanups.push(() => c.close());
  await waitUntil(async () => (await request(a.port, '/count')).body.global === 4, 'four clients', LONG);

  const loop = broadcastLoop([a.port, b.port], (n) => ({ n }), { pauseMs: 20 });
  cleanups.push(() => loop.stop());
  await waitFor(() => clients.every((c) => c.data().length >= 10), 'events before the failover', LONG);
  await master.kill();
  const masterPort = async () => (await sentinels[0].command('SENTINEL', 'get-master-addr-by-name', 'm'))[1];
  await waitUntil(async () => (await masterPort()) === String(replica.port), 'the replica promoted', LONG);
  await waitUntil(
    async () => (await statsOf(a.port)).bus.state === 'connected' && (await statsOf(b.port)).bus.state === 'connected',
    'both instances on the new master',
    LONG,
  );
  const promoted = (await idsOn(replica, stream)).length;
  await waitUntil(
    async () => (await idsOn(replica, stream)).length >= promoted + 20,
    'entries on the new master',
    LONG,
  );

  // The old master back on its port, empty: a master by its own ROLE until
  // the Sentinels make it a replica. The bus must never write to it.
  await master.restart();
  let busConnections = 0;
  for (const until = Date.now() + 4000; Date.now() < until; await delay(100)) {
    const list = String(await master.command('CLIENT', 'LIST'));
    busConnections += (list.match(/name=sse-helper-native-bus/g) ?? []).length;
  }
  expect(busConnections).toBe(0);
  await waitUntil(async () => (await master.command('ROLE'))[0] === 'slave', 'the old master demoted', LONG);

  await loop.stop();
  // Broadcasts queued in a bus while it reconnected are appended once it is
  // back; a bus request is served after every append queued before it.
  for (const i of [a, b]) await request(i.port, '/count');
  const kept = await idsOn(replica, stream);
  const last = kept[kept.length - 1];
  for (const c of clients) await waitFor(() => c.messages.some((m) => m.id === last), 'the last entry', LONG);
  for (const c of clients) {
    const ids = c.messages.map((m) => m.id).filter(Boolean);
    // In order, once each, and nothing the new master holds is missing.
    expect(outOfOrder(ids)).toEqual([]);
    expect(duplicates(ids)).toEqual([]);
    const got = new Set(ids);
    expect(kept.filter((id) => !got.has(id))).toEqual([]);
  }
}, 120_000);

test('a URL that names a replica is refused at connect (ROLE), never written to', async () => {
  const master = await startRedis();
  cleanups.push(() => master.stop());
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
  cleanups.push(() => replica.stop());
  const hub = new SseHub().configure({ heartbeatMs: 0, redis: { url: replica.url, stream: 'ro' } });
  cleanups.push(() => hub.close());
  const events = [];
  hub.on('bus', (event) => events.push(event));
  await waitFor(() => events.some((e) => e.state === 'disconnected'), 'the refusal', LONG);
  const refusal = events.find((e) => e.state === 'disconnected');
  expect(refusal.error.code).toBe('ERR_SSE_BUS');
  expect(refusal.error.message).toMatch(/not a master \(ROLE\)/);
  expect(hub.getStats().bus.state).not.toBe('connected');
  // Delivered locally meanwhile; nothing reached the replica.
  expect(hub.broadcast('local')).toBe(0);
  expect(hub.getStats().bus.localFallbacks).toBe(1);
  expect(Number(await replica.command('EXISTS', 'ro'))).toBe(0);
});

test('the object form { sentinels, masterName, db } reaches the master the Sentinels name, as its URL does', async () => {
  const master = await startRedis();
  cleanups.push(() => master.stop());
  const sentinel = await startSentinel(master.port);
  cleanups.push(() => sentinel.stop());
  const stream = 'object-form';
  const byObject = new SseHub().configure({
    redis: { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], masterName: 'm', db: 3, stream },
  });
  cleanups.push(() => byObject.close());
  const byUrl = new SseHub().configure({ redis: { url: `redis+sentinel://127.0.0.1:${sentinel.port}/m/3`, stream } });
  cleanups.push(() => byUrl.close());
  await Promise.all([byObject.ready(), byUrl.ready()]);
  // What one appends, the other reads back: one master, one database.
  const http = require('node:http');
  const server = http.createServer((_req, res) => {
    byUrl.initResponse(res);
    byUrl.addClient(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  const client = openSource(`http://127.0.0.1:${server.address().port}/events`);
  cleanups.push(() => client.close());
  await waitFor(() => byUrl.getClientCount() === 1, 'the client on the URL hub');
  byObject.broadcast({ via: 'object' });
  await waitFor(() => client.messages.some((m) => m.data?.via === 'object'), 'the entry, read back by the other hub');
  expect(client.messages.find((m) => m.data?.via === 'object').id).toMatch(/^\d+-\d+$/);
  // In database 3, not the default one.
  expect(await master.command('XLEN', stream)).toBe(0);
  server.closeAllConnections();
}, 60_000);

test('a Sentinel that requires a password: refused without the Sentinel credentials, reached with them (URL query or object form)', async () => {
  const master = await startRedis();
  cleanups.push(() => master.stop());
  // PING and INFO stay open (the harness checks the Sentinel is up with
  // them); everything else needs the user 'app'.
  const sentinel = await startSentinel(master.port, {
    config: ['user default on nopass -@all +ping +info', 'user app on >sentinel-secret ~* &* +@all'],
  });
  cleanups.push(() => sentinel.stop());
  const stream = 'sentinel-auth';
  const hosts = `127.0.0.1:${sentinel.port}`;

  const without = new SseHub().configure({ heartbeatMs: 0, redis: { url: `redis+sentinel://${hosts}/m`, stream } });
  cleanups.push(() => without.close());
  const events = [];
  without.on('bus', (event) => events.push(event));
  // Refused for want of the permission (not a timeout, which a loaded
  // machine could give first).
  await waitFor(
    () => events.some((e) => e.state === 'disconnected' && /NoPerm: .*no permissions/.test(e.error.message)),
    'the refusal (NoPerm)',
    LONG,
  );

  const byUrl = new SseHub().configure({
    heartbeatMs: 0,
    redis: { url: `redis+sentinel://${hosts}/m?sentinelUsername=app&sentinelPassword=sentinel-secret`, stream },
  });
  cleanups.push(() => byUrl.close());
  const byObject = new SseHub().configure({
    heartbeatMs: 0,
    redis: {
      sentinels: [hosts],
      masterName: 'm',
      sentinelUsername: 'app',
      sentinelPassword: 'sentinel-secret',
      stream,
    },
  });
  cleanups.push(() => byObject.close());
  await Promise.all([byUrl.ready(), byObject.ready()]);
  // Both reached the master the Sentinel named: what one appends is there.
  byUrl.broadcast({ via: 'url' });
  byObject.broadcast({ via: 'object' });
  await waitUntil(async () => Number(await master.command('XLEN', stream)) === 2, 'both entries on the master', LONG);
  for (const hub of [byUrl, byObject]) {
    await waitFor(() => hub.getStats().bus.entriesWritten === 1, 'the append counted');
    expect(hub.getStats().bus.state).toBe('connected');
  }
  expect(without.getStats().bus.state).not.toBe('connected');
}, 60_000);

test('the object form is checked: each option named in its TypeError', () => {
  const refusedWith = (redis) => {
    try {
      new SseHub().configure({ redis });
    } catch (err) {
      return [err.code, err.message];
    }
    return ['accepted'];
  };
  expect(refusedWith({ sentinels: [], masterName: 'm' })[0]).toBe('ERR_INVALID_ARG_TYPE');
  expect(refusedWith({ sentinels: ['127.0.0.1:1:2'], masterName: 'm' })).toEqual([
    'ERR_INVALID_ARG_VALUE',
    expect.stringMatching(/^options\.redis\.sentinels\[0\] /),
  ]);
  expect(refusedWith({ sentinels: [{ host: '127.0.0.1', port: 70000 }], masterName: 'm' })).toEqual([
    'ERR_INVALID_ARG_VALUE',
    expect.stringMatching(/^options\.redis\.sentinels\[0\]\.port /),
  ]);
  expect(refusedWith({ sentinels: [{ host: '127.0.0.1', prot: 1 }], masterName: 'm' })[1]).toMatch(/prot/);
  expect(refusedWith({ sentinels: ['127.0.0.1'] })).toEqual([
    'ERR_INVALID_ARG_TYPE',
    expect.stringMatching(/^options\.redis\.masterName /),
  ]);
  expect(refusedWith({ sentinels: ['127.0.0.1'], masterName: 'm', db: -1 })[1]).toMatch(/^options\.redis\.db /);
  expect(refusedWith({ sentinels: ['127.0.0.1'], masterName: 'm', password: 5 })).toEqual([
    'ERR_INVALID_ARG_TYPE',
    expect.stringMatching(/^options\.redis\.password /),
  ]);
  expect(refusedWith({ url: 'redis://127.0.0.1:1', masterName: 'm' })[1]).toMatch(/^options\.redis\.masterName /);
  expect(refusedWith({ sentinels: ['127.0.0.1'], masterName: 'm', sentinelPassword: 1 })).toEqual([
    'ERR_INVALID_ARG_TYPE',
    'options.redis.sentinelPassword must be a string, got number',
  ]);
  expect(refusedWith({ url: 'redis://127.0.0.1:1', sentinelPassword: 'x' })[1]).toMatch(
    /^options\.redis\.sentinelPassword goes with options\.redis\.sentinels/,
  );
  expect(refusedWith({ url: 'redis+sentinel://127.0.0.1/m?password=x' })[0]).toBe('ERR_INVALID_ARG_VALUE');
  expect(refusedWith({ url: 'redis://127.0.0.1:1', sentinels: ['127.0.0.1'], masterName: 'm' })[0]).toBe(
    'ERR_INVALID_ARG_VALUE',
  );
});
