// A shutdown handler of your own: drain the hub, then close the server and
// exit. (With your own listener for a signal, drainOnSignals leaves the
// decision to it; this is the same with drain() alone.)
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();
app.get('/events', (_req, res) => {
  sseHelper.initResponse(res);
  sseHelper.addClient(res);
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});

process.once('SIGTERM', async () => {
  // Refuses new clients, sends retry: 1000, flushes and ends every stream.
  await sseHelper.drain({ retryMs: 1000 });
  server.close(() => process.exit(0));
});
