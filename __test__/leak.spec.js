// Leak tests, run with --expose-gc: many cycles, then the registry, the
// listeners, the native references and the heap must be back where they were.

const net = require('node:net');
const { SseHub } = require('..');
const { FakeResponse, startServer, waitFor, collectGarbage } = require('./helpers.js');

async function heapUsed() {
  await collectGarbage();
  return process.memoryUsage().heapUsed;
}

const MB = 1024 * 1024;

test('100k add/remove cycles leave nothing behind', async () => {
  const hub = new SseHub();
  const idleRefs = hub.nativeReferenceCount;
  const cycle = (i) => {
    const res = new FakeResponse();
    const id = i % 2 ? hub.addClient(res, { i }) : hub.addClient(`session-${i % 100}`, res, { i });
    hub.addClient(id, res, { again: true });
    if (i % 3 === 0) hub.broadcast({ i });
    if (i % 2) hub.removeClient(res);
    else res.emit('close');
    if (res.listenerCount('close') !== 0) throw new Error(`listener left on cycle ${i}`);
  };
  for (let i = 0; i < 5_000; i++) cycle(i); // warm up lazily allocated state
  const before = await heapUsed();
  for (let i = 0; i < 100_000; i++) cycle(i);
  const after = await heapUsed();
  expect(hub.getClientCount()).toBe(0);
  expect(hub.nativeReferenceCount).toBe(idleRefs);
  expect(after - before).toBeLessThan(2 * MB);
});

test('100k cycles on one long-lived response never grow its listeners', async () => {
  const hub = new SseHub();
  const res = new FakeResponse();
  const warnings = [];
  process.on('warning', (w) => warnings.push(w));
  const before = await heapUsed();
  for (let i = 0; i < 100_000; i++) {
    hub.addClient(res);
    hub.addClient(`id-${i % 10}`, res);
    hub.removeClient(res);
    res.writableEnded = false;
    res.finished = false;
  }
  const after = await heapUsed();
  expect(res.listenerCount('close')).toBe(0);
  expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  expect(after - before).toBeLessThan(2 * MB);
});

test('5k real connection churns: registry empty, no listeners, flat heap', async () => {
  const hub = new SseHub();
  const idleRefs = hub.nativeReferenceCount;
  const responses = new Set();
  const srv = await startServer((app) =>
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      hub.addClient(res, { ip: req.ip });
      hub.send(res, { hello: true });
      responses.add(res);
      res.on('close', () => responses.delete(res));
    }),
  );
  const churn = async (count) => {
    const batch = 50;
    for (let done = 0; done < count; done += batch) {
      const sockets = [];
      for (let i = 0; i < batch; i++) {
        const s = net.connect(srv.port, '127.0.0.1');
        s.on('error', () => {});
        s.write(`GET /events HTTP/1.1\r\nHost: x\r\n\r\n`);
        sockets.push(s);
      }
      await waitFor(() => hub.getClientCount() === batch, 'batch registered', 10_000);
      // Half go abruptly, half are removed by the server.
      hub.broadcast({ done });
      for (let i = 0; i < batch; i++) {
        if (i % 2) sockets[i].destroy();
      }
      for (const res of [...responses]) if (done % 100 === 0) hub.removeClient(res);
      for (const s of sockets) s.destroy();
      await waitFor(() => hub.getClientCount() === 0 && responses.size === 0, 'batch gone', 10_000);
    }
  };
  await churn(500);
  const before = await heapUsed();
  await churn(5_000);
  const after = await heapUsed();
  await srv.close();
  expect(hub.getClientCount()).toBe(0);
  expect(hub.nativeReferenceCount).toBe(idleRefs);
  expect(after - before).toBeLessThan(4 * MB);
});

test('a dropped hub releases its own references once its connections are gone', async () => {
  // Hubs are created and dropped; the finalizer must not throw or leak.
  const before = await heapUsed();
  for (let i = 0; i < 20_000; i++) {
    const hub = new SseHub();
    const res = new FakeResponse();
    hub.addClient(res);
    res.emit('close');
  }
  const after = await heapUsed();
  expect(after - before).toBeLessThan(2 * MB);
});
