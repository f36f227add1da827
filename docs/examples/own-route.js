// An app's own stream route: one addClient per connection, under the
// signed-in user's id when there is one. No express-session needed.
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();
app.use(express.json());

// Stand-in for your authentication (passport's req.user, a verified JWT's
// `sub`, ...): here a header names the user. Never trust a client-sent
// header like this in production.
app.use((req, _res, next) => {
  req.user = req.get('x-demo-user') ? { id: req.get('x-demo-user') } : undefined;
  next();
});

app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  // Once. A user's tabs share their id (sendToClient reaches all of them);
  // null generates an id (anon-<ms>-<hex>) for a visitor.
  const id = sseHelper.addClient(req.user?.id ?? null, res, { ip: req.ip });
  sseHelper.send(res, { id }, { event: 'hello' }); // event: hello\ndata: {"id":"..."}
});

// To one user's connections: false when they have none.
app.post('/notify/:user', (req, res) => {
  res.json({ delivered: sseHelper.sendToClient(req.params.user, req.body) });
});

// To everyone: how many connections were written.
app.post('/broadcast', (req, res) => {
  res.json({ clients: sseHelper.broadcast(req.body) });
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
