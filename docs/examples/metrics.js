// The hub's figures: getStats() as JSON, metrics() for Prometheus.
// NODE_DEBUG=sse-helper-native node metrics.js logs each registration and
// the transport it got.
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();

app.get('/events', (_req, res) => {
  sseHelper.initResponse(res);
  sseHelper.addClient(res);
});

app.get('/stats', (_req, res) => res.json(sseHelper.getStats()));

app.get('/metrics', (_req, res) => {
  res.type('text/plain; version=0.0.4; charset=utf-8').send(sseHelper.metrics());
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
