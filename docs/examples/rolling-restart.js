// Drain on the signals process managers send, then exit as the signal
// would have: PM2 (SIGINT, SIGKILL after 1.6 s), systemd, Docker,
// Kubernetes and node --watch (SIGTERM), nodemon (SIGUSR2).
const express = require('express');
const sseHelper = require('sse-helper-native');

// Clients are told to reconnect after 1 s (to another instance, behind a
// load balancer), their streams are flushed and ended, then the process exits.
sseHelper.drainOnSignals({ retryMs: 1000, signals: ['SIGTERM', 'SIGINT', 'SIGUSR2'] });

const app = express();
app.get('/events', (_req, res) => {
  sseHelper.initResponse(res);
  sseHelper.addClient(res);
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
