// mocha: a real server on 127.0.0.1, a real EventSource client, and a new
// hub per test. `await hub.close()` ends the streams and stops the hub's
// writer thread and timer, so mocha exits by itself (no --exit needed).
const assert = require('node:assert/strict');
const { EventSource } = require('eventsource');
const { SseHub } = require('sse-helper-native');
const { createApp } = require('./testing-app.js');

let hub;
let server;
let url;

beforeEach(async () => {
  hub = new SseHub(); // a registry of its own: nothing leaks between tests
  server = createApp(hub).listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});

afterEach(async () => {
  await hub.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

it('a posted message reaches the stream', async () => {
  const events = new EventSource(`${url}/events`);
  await new Promise((resolve) => events.addEventListener('open', resolve, { once: true }));
  const received = new Promise((resolve) => events.addEventListener('message', resolve, { once: true }));

  const response = await fetch(`${url}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'hi' }),
  });
  assert.deepEqual(await response.json(), { delivered: 1 });
  assert.deepEqual(JSON.parse((await received).data), { text: 'hi' });
  events.close();
});

it('each test starts with no clients', () => {
  assert.equal(hub.getClientCount(), 0);
});
