// Getting started: an Express 5 app that serves a page and its event stream.
// Run it with `node getting-started.js` and open http://127.0.0.1:3000/.
const path = require('node:path');
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();

// The page: its script opens the stream (getting-started.html).
app.get('/', (_req, res) => res.sendFile(path.join(__dirname, 'getting-started.html')));

app.get('/events', (req, res) => {
  sseHelper.initResponse(res); // status 200 and the SSE headers, flushed at once
  sseHelper.addClient(res, { ip: req.ip }); // a generated id; removed by itself when the client leaves
  sseHelper.send(res, { hello: 'world' }); // to this client only: data: {"hello":"world"}
});

// To every client, once a second: data: {"utc":"2026-12-02T13:00:00.000Z"}
setInterval(() => sseHelper.broadcast({ utc: new Date().toISOString() }), 1000);

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
