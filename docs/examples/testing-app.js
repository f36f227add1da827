// The app under test takes its hub as an argument: production passes the
// default one, each test a new SseHub() of its own.
const express = require('express');

/** Builds the app around `hub` (an SseHub, or the package's default export). */
function createApp(hub) {
  const app = express();
  app.use(express.json());
  app.get('/events', (_req, res) => {
    hub.initResponse(res);
    hub.addClient(res);
  });
  app.post('/messages', (req, res) => {
    res.json({ delivered: hub.broadcast(req.body, { event: 'message' }) });
  });
  return app;
}

module.exports = { createApp };

// In production: node testing-app.js
if (require.main === module) {
  const sseHelper = require('sse-helper-native');
  createApp(sseHelper).listen(Number(process.env.PORT ?? 3000), '127.0.0.1');
}
