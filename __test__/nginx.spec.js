// Behind a real nginx with its default proxy settings (`proxy_pass` alone:
// HTTP/1.0 to the upstream, `Connection: close`, buffering on): the native
// writer takes the connection (it frames a close-delimited body), events
// stream through without delay (the package's X-Accel-Buffering: no), the
// heartbeat keeps the stream past proxy_read_timeout, and Last-Event-ID
// reaches the app for a replay.

const { sseFixture } = require('./hub-fixture.js');
const { rawGet, waitFor } = require('./helpers.js');
const { NGINX, startNginx } = require('./nginx.js');

let hub;
let srv;
const { serve } = sseFixture((t) => {
  ({ hub, srv } = t);
});

let nginx;
afterEach(async () => {
  await nginx?.stop();
  nginx = undefined;
});

const withNginx = NGINX ? test : test.skip;

withNginx('the default proxy_pass: the socket writer, the exact events, and the upstream sees HTTP/1.0', async () => {
  hub.configure({ heartbeatMs: 0 });
  const versions = [];
  await serve((req, res) => {
    versions.push(req.httpVersion);
    hub.addClient(req.query.id ?? null, res);
  });
  nginx = await startNginx(srv.port);
  const client = rawGet(nginx.port, '/events?id=a');
  await waitFor(() => hub.getClientCount() === 1, 'registered through nginx');
  expect(versions).toEqual(['1.0']);
  expect(hub.getStats()).toMatchObject({ socketConnections: 1, streamConnections: 0 });
  // Nothing was put on the stream, for any reason.
  expect(Object.values(hub.getStats().streamFallbacks).every((n) => n === 0)).toBe(true);
  expect(hub.broadcast({ n: 1 })).toBe(1);
  await client.waitFor((c) => c.body() === 'data: {"n":1}\n\n', 'the first event, unbuffered');
  hub.sendToClient('a', 'two');
  hub.comment('a', 'note');
  await client.waitFor((c) => c.body() === 'data: {"n":1}\n\ndata: "two"\n\n: note\n\n', 'every frame, in order');
  // The end of the upstream body (the connection closing) ends the
  // client's response: nginx sends the last chunk (and keeps the client's
  // connection for its next request).
  hub.removeClientById('a');
  await client.waitFor((c) => c.raw().endsWith('\r\n0\r\n\r\n'), 'the end of the response');
  expect(hub.getClientCount()).toBe(0);
});

withNginx('heartbeats keep the stream open past proxy_read_timeout', async () => {
  hub.configure({ heartbeatMs: 250 });
  await serve();
  nginx = await startNginx(srv.port, { location: 'proxy_read_timeout 1s;' });
  const client = rawGet(nginx.port);
  await waitFor(() => hub.getClientCount() === 1, 'registered through nginx');
  expect(hub.getStats().socketConnections).toBe(1);
  const heartbeats = (c) => c.body().split(': heartbeat\n\n').length - 1;
  // Eight heartbeats span more than 1.75 s, well past the 1 s timeout.
  await client.waitFor((c) => heartbeats(c) >= 8, 'eight heartbeats', 15_000);
  expect(hub.broadcast('still here')).toBe(1);
  await client.waitFor((c) => c.body().endsWith('data: "still here"\n\n'), 'an event after them');
});

withNginx('Last-Event-ID passes through nginx: the replay, then live', async () => {
  hub.configure({ historySize: 10, heartbeatMs: 0 });
  await serve();
  const [epoch] = hub.position().split(':');
  for (let n = 1; n <= 3; n++) hub.broadcast(n);
  nginx = await startNginx(srv.port);
  const client = rawGet(nginx.port, '/events', { 'Last-Event-ID': `${epoch}:1` });
  await waitFor(() => hub.getClientCount() === 1, 'registered through nginx');
  expect(hub.getStats().socketConnections).toBe(1);
  hub.broadcast(4);
  const frame = (n) => `id: ${epoch}:${n}\ndata: ${n}\n\n`;
  await client.waitFor((c) => c.body() === frame(2) + frame(3) + frame(4), 'the replay, then live');
  expect(hub.getStats()).toMatchObject({ replays: 1, resets: 0 });
});
