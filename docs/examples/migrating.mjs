// sseHelper.js's own usage example, with the one import changed. Nothing
// else in the app changes. (Without express-session, req.sessionID is
// undefined and the first addClient generates the id.)
import express from 'express';
// before: import sseHelper from './modules/sse/sseHelper.js';
import sseHelper from 'sse-helper-native';

const app = express();

app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  const clientId = req.sessionID || sseHelper.addClient(res);
  sseHelper.addClient(clientId, res, { ip: req.ip });
  sseHelper.send(res, { utc: new Date().toISOString() });
});

setInterval(() => sseHelper.broadcast({ utc: new Date().toISOString() }), 1000);

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
