// Beyond Express: the helper takes Node's own response, so it works wherever
// one is reachable. Bare node:http, Fastify 5 (reply.hijack(), reply.raw)
// and Koa (ctx.respond = false, ctx.res), each as the README shows it: a
// real server, a WHATWG EventSource client (the `eventsource` package)
// receiving events, the native writer taking the connection, and cleanup
// when the client goes.

const http = require('node:http');
const { EventSource } = require('eventsource');
const Fastify = require('fastify');
const Koa = require('koa');
const { SseHub } = require('..');
const { waitFor } = require('./helpers.js');

let hub;
let stop;
let source;

beforeEach(() => {
  hub = new SseHub();
});

afterEach(async () => {
  source?.close();
  source = undefined;
  await hub.close();
  await stop?.();
  stop = undefined;
});

/** Listens on 127.0.0.1 with a free port; sets `stop`; resolves with the base URL. */
async function listenHttp(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  stop = () => new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

/**
 * Opens an EventSource on `url`, checks the greeting, a broadcast and a
 * client-targeted send arrive in order, that the native socket writer has
 * the connection, and that closing the client unregisters it.
 */
async function checkStreams(url, framework) {
  const messages = [];
  source = new EventSource(url);
  source.onmessage = (event) => messages.push(JSON.parse(event.data));
  await new Promise((resolve, reject) => {
    source.onopen = resolve;
    source.onerror = reject;
  });
  await waitFor(() => hub.getClientCount() === 1, 'registered');
  // Eligible (plain HTTP/1.1 over TCP, Node's own write): the native writer took it.
  expect(hub.getStats()).toMatchObject({ clients: 1, socketConnections: 1, streamConnections: 0 });

  expect(hub.broadcast({ n: 1 })).toBe(1);
  expect(hub.sendToClient('me', { n: 2 })).toBe(true);
  await waitFor(() => messages.length === 3, 'events');
  expect(messages).toEqual([{ hello: framework }, { n: 1 }, { n: 2 }]);

  const left = new Promise((resolve) => hub.once('disconnect', resolve));
  source.close();
  expect(await left).toEqual({ id: 'me', reason: 'close' });
  expect(hub.getClientCount()).toBe(0);
  expect(hub.getStats()).toMatchObject({ clients: 0, socketConnections: 0 });
}

test('bare node:http', async () => {
  const server = http.createServer((req, res) => {
    if (req.url !== '/events') {
      res.writeHead(404).end();
      return;
    }
    hub.initResponse(res);
    hub.addClient('me', res);
    hub.send(res, { hello: 'node:http' });
  });
  const url = await listenHttp(server);
  await checkStreams(`${url}/events`, 'node:http');
});

test('Fastify 5: reply.hijack() and reply.raw', async () => {
  const app = Fastify();
  app.get('/events', (_request, reply) => {
    // Fastify leaves the response alone from here on.
    reply.hijack();
    hub.initResponse(reply.raw);
    hub.addClient('me', reply.raw);
    hub.send(reply.raw, { hello: 'fastify' });
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  stop = () => app.close();
  await checkStreams(`${url}/events`, 'fastify');
});

test('Koa: ctx.respond = false and ctx.res', async () => {
  const app = new Koa();
  app.use((ctx, next) => {
    if (ctx.path !== '/events') return next();
    // Koa leaves the response alone from here on.
    ctx.respond = false;
    hub.initResponse(ctx.res);
    hub.addClient('me', ctx.res);
    hub.send(ctx.res, { hello: 'koa' });
  });
  const url = await listenHttp(http.createServer(app.callback()));
  await checkStreams(`${url}/events`, 'koa');
});
