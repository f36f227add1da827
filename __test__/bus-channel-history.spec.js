// Channel history across instances: on the Redis bus, channel messages go
// through the stream with their channel, so a member reconnecting to
// instance B replays what was published on A — its channels' messages and
// the broadcasts, in stream order, and none of other channels. Both ways of
// rejoining count: channels passed to addClient, and join() in the same
// tick as addClient (the bus replays on the next tick). Real redis-server,
// two in-process hubs behind their own Express 5 servers, raw clients.

const { SseHub } = require('..');
const { inProcessInstances, parseFrames } = require('./bus-clients.js');
const { startServer, waitFor } = require('./helpers.js');
const { startRedis } = require('./redis-helpers.js');

const LONG = 20_000;
let redis;
const { hubs, servers, connect, closeAll } = inProcessInstances(LONG);

beforeEach(async () => {
  redis = await startRedis();
});

afterEach(async () => {
  await closeAll();
  await redis.stop();
});

/** A hub on the test's Redis; its route rejoins `?ch=` by `how`: 'option' (addClient) or 'join'. */
async function instance(stream, transport, how) {
  const hub = new SseHub().configure({ transport, heartbeatMs: 0, redis: { url: redis.url, stream } });
  hubs.push(hub);
  await hub.ready();
  const srv = await startServer((app) => {
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      const channels = req.query.ch ? String(req.query.ch).split(',') : [];
      const options = how === 'option' ? { channels } : undefined;
      const id = hub.addClient(req.query.id ?? null, res, null, options);
      if (how === 'join') for (const channel of channels) hub.join(id, channel);
    });
  });
  servers.push(srv);
  return { hub, srv };
}

const frames = (client) =>
  parseFrames(client.body())
    .filter((f) => f.data !== undefined)
    .map(({ id, data }) => ({ id, data }));

describe.each([
  ['auto', 'option'],
  ['stream', 'option'],
  ['auto', 'join'],
  ['stream', 'join'],
])('transport %s, channels rejoined by %s', (transport, how) => {
  test('a member reconnecting to B gets what A published to its channels and broadcast, in order', async () => {
    const stream = `chist-${process.pid}-${transport}-${how}`;
    const a = await instance(stream, transport, how);
    const b = await instance(stream, transport, how);
    // The member's first connection, on B, sees the first message live.
    const first = await connect(b, '/events?id=m&ch=room');
    a.hub.publish('room', 'seen');
    await first.waitFor((c) => c.body().includes('"seen"'), 'the first message', LONG);
    const [seen] = frames(first);
    first.destroy();
    await waitFor(() => b.hub.getClientCount() === 0, 'the member gone', LONG);
    // A watcher on B that sees 'r2' tells that B has read it all.
    const watcher = await connect(b, '/events?ch=room');
    // While it is away, A publishes to its room, to another, and broadcasts.
    a.hub.publish('room', 'r1');
    a.hub.publish('elsewhere', 'x1');
    a.hub.broadcast('all');
    a.hub.publish('room', 'r2');
    await watcher.waitFor((c) => c.body().includes('"r2"'), 'B caught up', LONG);
    const back = await connect(b, '/events?id=m&ch=room', { 'Last-Event-ID': seen.id });
    await back.waitFor((c) => c.body().includes('"r2"'), 'the replay', LONG);
    a.hub.publish('room', 'live');
    await back.waitFor((c) => c.body().includes('"live"'), 'live after it', LONG);
    const got = frames(back);
    expect(got.map((f) => f.data)).toEqual(['r1', 'all', 'r2', 'live']);
    for (const f of got) expect(f.id).toMatch(/^\d+-\d+$/);
    expect(new Set(got.map((f) => f.id)).size).toBe(got.length);
    expect(b.hub.getStats().bus.replays).toBeGreaterThanOrEqual(1);
  });
});
