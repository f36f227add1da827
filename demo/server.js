// The demo: an Express app that streams the UTC clock once a second to a page
// using EventSource. `npm start`; PORT picks the port (default 3000, or a
// free one when 3000 is taken).

const path = require('node:path');
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();

app.get('/', (_req, res) => res.sendFile(path.join(__dirname, 'index.html')));

// The helper's documented usage, unchanged.
app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  const clientId = req.sessionID || sseHelper.addClient(res);
  sseHelper.addClient(clientId, res, { ip: req.ip });
  sseHelper.send(res, { utc: new Date().toISOString() });
});

const tick = setInterval(() => {
  sseHelper.broadcast({ utc: new Date().toISOString(), clients: sseHelper.getClientCount() });
}, 1000);

let server;
function listen(port) {
  server = app.listen(port, '127.0.0.1', () => {
    console.log(`sse-helper-native demo: http://127.0.0.1:${server.address().port}/ (Ctrl+C to stop)`);
  });
  server.on('error', (err) => {
    if (err.code === 'EADDRINUSE' && !process.env.PORT) return listen(0);
    throw err;
  });
}
listen(Number(process.env.PORT ?? 3000));

function shutdown() {
  clearInterval(tick);
  sseHelper.broadcastAndClose({ bye: true });
  server.close(() => process.exit(0));
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
