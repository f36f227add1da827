// Two stream routes: /events gets the native writer; /compressed sits
// behind the compression middleware, whose wrapped res.write keeps it on
// the stream transport. Run with NODE_DEBUG=sse-helper-native to see why.
const compression = require('compression');
const express = require('express');
const sseHelper = require('sse-helper-native');

const app = express();

function stream(_req, res) {
  sseHelper.initResponse(res);
  sseHelper.addClient(res);
  const { socketConnections, streamConnections } = sseHelper.getStats();
  sseHelper.send(res, { socketConnections, streamConnections });
}

app.get('/events', stream);
app.get('/compressed', compression(), stream);

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
