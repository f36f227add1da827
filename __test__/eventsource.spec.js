// A WHATWG-conformant client (the `eventsource` package) parsing what the
// helper writes, on a real Express 5 server.

const { EventSource } = require('eventsource');
const sseHelper = require('..');
const { startServer, waitFor, documentedRoute } = require('./helpers.js');

let srv;
const sources = [];

function open(path = '/events') {
  const es = new EventSource(`${srv.url}${path}`);
  sources.push(es);
  const messages = [];
  es.onmessage = (e) => messages.push(JSON.parse(e.data));
  const opened = new Promise((resolve, reject) => {
    es.onopen = resolve;
    es.onerror = reject;
  });
  return { es, messages, opened };
}

afterEach(async () => {
  for (const es of sources.splice(0)) es.close();
  sseHelper.broadcastAndClose('bye');
  await srv?.close();
});

test('the documented route streams parsed events to EventSource clients', async () => {
  srv = await startServer((app) => app.get('/events', documentedRoute(sseHelper)));
  const clients = [open(), open(), open()];
  await Promise.all(clients.map((c) => c.opened));
  await waitFor(() => clients.every((c) => c.messages.length === 1), 'greeting');
  for (const c of clients) expect(Object.keys(c.messages[0])).toEqual(['utc']);
  expect(sseHelper.getClientCount()).toBe(3);

  // A BigInt, which JSON.stringify refuses, arrives as the original's fallback.
  const payloads = [{ n: 1 }, 'two', [3, { four: 4 }], { big: 4n }, { text: 'multi\nline\r\nvalue' }];
  for (const p of payloads) expect(sseHelper.broadcast(p)).toBe(3);
  const expected = [
    { n: 1 },
    'two',
    [3, { four: 4 }],
    { error: 'unserializable payload' },
    { text: 'multi\nline\r\nvalue' },
  ];
  await waitFor(() => clients.every((c) => c.messages.length === 6), 'broadcasts');
  for (const c of clients) expect(c.messages.slice(1)).toEqual(expected);

  clients[0].es.close();
  await waitFor(() => sseHelper.getClientCount() === 2, 'cleanup after close');
});

test('sendToClient reaches only that client', async () => {
  srv = await startServer((app) =>
    app.get('/events', (req, res) => {
      sseHelper.initResponse(res);
      sseHelper.addClient(req.query.user, res);
    }),
  );
  const alice = open('/events?user=alice');
  const bob = open('/events?user=bob');
  await Promise.all([alice.opened, bob.opened]);
  await waitFor(() => sseHelper.getClientCount() === 2, 'both registered');
  expect(sseHelper.sendToClient('alice', { secret: 'for alice' })).toBe(true);
  expect(sseHelper.broadcast({ all: true })).toBe(2);
  await waitFor(() => alice.messages.length === 2 && bob.messages.length === 1, 'delivery');
  expect(alice.messages).toEqual([{ secret: 'for alice' }, { all: true }]);
  expect(bob.messages).toEqual([{ all: true }]);
});
