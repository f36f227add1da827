// One hub across processes and machines: every instance on the same Redis
// stream. Start two (PORT=3001 and PORT=3002) and a broadcast made on either
// reaches the clients of both.
const express = require('express');
const sseHelper = require('sse-helper-native');

// redis://[user:password@]host[:port][/db], rediss:// for TLS, or
// redis+sentinel://host:26379,host:26380/<master name>
sseHelper.configure({ redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
sseHelper.drainOnSignals({ retryMs: 1000 }); // rolling restarts: clients resume elsewhere

const app = express();
app.use(express.json());

app.get('/events', (_req, res) => {
  sseHelper.initResponse(res);
  sseHelper.addClient(res); // a reconnection anywhere is replayed from the stream
});

app.post('/broadcast', (req, res) => {
  // Appended to the stream; every instance delivers it. Returns this instance's clients.
  res.json({ here: sseHelper.broadcast(req.body) });
});

app.get('/presence', async (_req, res) => {
  res.json({ here: sseHelper.getClientCount(), everywhere: await sseHelper.globalClientCount() });
});

// ready() is optional: it resolves once the bus has reached Redis.
sseHelper.ready().then(() => {
  const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${server.address().port}/`);
  });
});
