// A hub that gets its Redis bus after clients connected: the native writer
// learns what entries route those connections by (client id, channels).

const { SseHub } = require('..');
const { startRedis } = require('./redis-helpers.js');
const { startServer, rawGet, waitFor } = require('./helpers.js');

let redis;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

test('connections registered before configure({ redis }) get channel and client entries', async () => {
  const hub = new SseHub();
  const srv = await startServer((app) =>
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      hub.addClient(req.query.id, res);
      hub.join(res, 'room');
    }),
  );
  try {
    const client = rawGet(srv.port, '/events?id=early');
    await waitFor(() => hub.getClientCount() === 1, 'the client');
    expect(hub.getStats().socketConnections).toBe(1);
    hub.configure({ redis: { url: redis.url, stream: 'late' } });
    await hub.ready();
    expect(hub.publish('room', { to: 'room' })).toBe(1);
    expect(hub.sendToClient('early', { to: 'early' })).toBe(true);
    hub.broadcast({ to: 'all' });
    await client.waitFor((c) => c.body().includes('{"to":"all"}'), 'the broadcast');
    const data = client
      .body()
      .split('\n')
      .filter((l) => l.startsWith('data: '));
    expect(data).toEqual(['data: {"to":"room"}', 'data: {"to":"early"}', 'data: {"to":"all"}']);
    client.destroy();
  } finally {
    await hub.close();
    await srv.close();
  }
});
