// Channels, replay after a reconnection (Last-Event-ID), and handing the
// page a position to subscribe from.
const express = require('express');
const sseHelper = require('sse-helper-native');

// Keep the last 500 broadcasts; each gets an id <epoch>:<n>.
sseHelper.configure({ historySize: 500 });

const app = express();
app.use(express.json());

const notes = []; // the app's own state, rendered into the page

// The page's state and, with it, the position to stream from.
app.get('/state', (_req, res) => {
  res.json({ notes, position: sseHelper.position() });
});

app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  // A reconnecting EventSource sends Last-Event-ID; addClient reads it from
  // the request and replays what the client missed. ?from= (a position()
  // the page embedded) takes precedence.
  sseHelper.addClient(res, null, { lastEventId: req.query.from });
  if (req.query.room) sseHelper.join(res, req.query.room);
});

// Kept in history and replayed: a broadcast to everyone.
app.post('/notes', (req, res) => {
  notes.push(req.body);
  res.json({ clients: sseHelper.broadcast(req.body) });
});

// Live only: a channel publish reaches the room's members.
app.post('/rooms/:room', (req, res) => {
  res.json({ members: sseHelper.publish(req.params.room, req.body, { event: 'room' }) });
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
