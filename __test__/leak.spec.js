// Leak tests, run with --expose-gc: many cycles, then the registry, the
// listeners, the native references and the heap must be back where they were;
// also with channels and replay history, on fake and real connections.

const net = require('node:net');
const { SseHub } = require('..');
const { sseFixture } = require('./hub-fixture.js');
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

test('a removed response is collected while its hub lives: the hub keeps nothing of it', async () => {
  const hub = new SseHub();
  const collected = [];
  const registry = new FinalizationRegistry((i) => collected.push(i));
  const idleRefs = hub.nativeReferenceCount;
  // In a function of its own, so no frame of the test keeps a response.
  const churn = (i) => {
    const res = new FakeResponse();
    hub.addClient(`client-${i}`, res);
    hub.broadcast({ i });
    if (i % 2) hub.removeClient(res);
    else res.emit('close');
    registry.register(res, i);
  };
  for (let i = 0; i < 50; i++) churn(i);
  // A response still registered holds the ones before it in no way either.
  const kept = new FakeResponse();
  hub.addClient(kept);
  await waitFor(
    async () => {
      await collectGarbage();
      return collected.length === 50;
    },
    'every removed response collected',
    20_000,
  );
  expect(hub.getClientCount()).toBe(1);
  hub.removeClient(kept);
  expect(hub.nativeReferenceCount).toBe(idleRefs);
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

/** Threads and open fds of this process, from /proc (Linux). */
function processCounts() {
  const fs = require('node:fs');
  return {
    threads: fs.readdirSync('/proc/self/task').length,
    fds: fs.readdirSync('/proc/self/fd').length,
  };
}

const maybeLinux = process.platform === 'linux' ? test : test.skip;

maybeLinux('close() stops the writer thread and closes every fd, cycle after cycle', async () => {
  const srvHubs = [];
  const srv = await startServer((app) =>
    app.get('/events', (_req, res) => {
      const hub = srvHubs.at(-1);
      hub.initResponse(res);
      hub.addClient(res);
    }),
  );
  const cycle = async () => {
    const hub = new SseHub();
    srvHubs.push(hub);
    const sockets = [];
    for (let i = 0; i < 5; i++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
      sockets.push(s);
    }
    await waitFor(() => hub.getStats().socketConnections === 5, 'handed to the writer');
    hub.broadcast({ hello: true });
    await hub.close();
    expect(hub.getClientCount()).toBe(0);
    for (const s of sockets) s.destroy();
  };
  await cycle();
  const before = processCounts();
  for (let i = 0; i < 20; i++) await cycle();
  // Writer threads exit on their own after close() resolved; fds close with them.
  await waitFor(() => {
    const now = processCounts();
    return now.threads <= before.threads && now.fds <= before.fds;
  }, 'threads and fds back where they were');
  await srv.close();
});

maybeLinux('a dropped hub whose connections are gone lets its writer thread exit', async () => {
  const before = processCounts();
  const srv = await startServer((app) =>
    app.get('/events', (_req, res) => {
      const hub = new SseHub();
      hub.initResponse(res);
      hub.addClient(res);
      res.on('close', () => {});
    }),
  );
  const sockets = [];
  for (let i = 0; i < 10; i++) {
    const s = net.connect(srv.port, '127.0.0.1');
    s.on('error', () => {});
    s.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((resolve) => s.once('data', resolve));
    sockets.push(s);
  }
  // One hub each, each with its writer thread.
  expect(processCounts().threads).toBeGreaterThanOrEqual(before.threads + 10);
  for (const s of sockets) s.destroy();
  await srv.close();
  // Every hub is now unreachable with nothing registered: once collected,
  // each lets go of its writer, whose thread exits by itself.
  const deadline = Date.now() + 10_000;
  let now = processCounts();
  while (now.threads > before.threads || now.fds > before.fds) {
    if (Date.now() > deadline) throw new Error(`writer threads or fds left: ${JSON.stringify({ before, now })}`);
    await collectGarbage();
    await new Promise((r) => setTimeout(r, 20));
    now = processCounts();
  }
});

describe('leaks', () => {
  let hub;
  let idleRefs;
  const { serve, client, clients, responses } = sseFixture((t) => {
    ({ hub, idleRefs } = t);
  });

  test('join/leave/remove cycles with channels leave no channel, reference or heap behind', async () => {
    const cycle = (i) => {
      const res = new FakeResponse();
      const id = hub.addClient(`user-${i % 50}`, res, { i });
      hub.join(res, `room-${i % 20}`);
      hub.join(id, `user-channel-${i}`);
      hub.join(res, 'everyone');
      if (i % 3 === 0) hub.leave(res, 'everyone');
      hub.publish(`room-${i % 20}`, { i });
      if (i % 3 === 0) hub.removeClient(res);
      else if (i % 3 === 1) res.emit('close');
      else hub.removeClientById(id);
      if (res.listenerCount('close') !== 0) throw new Error(`listener left on cycle ${i}`);
    };
    for (let i = 0; i < 5_000; i++) cycle(i);
    const before = await heapUsed();
    for (let i = 0; i < 50_000; i++) cycle(i);
    const after = await heapUsed();
    expect(hub.getStats()).toMatchObject({ clients: 0, channels: 0 });
    expect(hub.nativeReferenceCount).toBe(idleRefs);
    expect(after - before).toBeLessThan(2 * MB);
  });

  test('real connections joining channels churn to zero channels and idle references', async () => {
    await serve((req, res) => {
      hub.addClient(req.query.id, res);
      hub.join(res, `room-${req.query.id}`);
      hub.join(req.query.id, 'all');
    });
    const churn = async (rounds) => {
      for (let r = 0; r < rounds; r++) {
        const batch = [];
        for (let i = 0; i < 20; i++) batch.push(client(`/events?id=u${i % 5}`));
        await waitFor(() => hub.getClientCount() === 20, 'batch registered');
        expect(hub.getStats().channels).toBe(6);
        expect(hub.publish('all', { r })).toBe(20);
        if (r % 2) hub.removeClientById('u0');
        for (const c of batch) c.destroy();
        await waitFor(() => hub.getClientCount() === 0, 'batch gone');
        expect(hub.getStats().channels).toBe(0);
      }
      // Keep nothing of finished connections alive.
      clients.length = 0;
      responses.length = 0;
    };
    await churn(5);
    const before = await heapUsed();
    await churn(40);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle references');
    const after = await heapUsed();
    expect(after - before).toBeLessThan(4 * MB);
  });

  test('history on: many broadcasts and reconnect replays keep the heap flat and references idle', async () => {
    hub.configure({ historySize: 64 });
    const [epoch] = hub.position().split(':');
    let replayWrites = 0;
    const cycle = (i) => {
      hub.broadcast({ i, text: 'x'.repeat(100) });
      const res = new FakeResponse();
      // Mostly within the history, sometimes too old (a reset), sometimes unknown.
      const lastEventId = i % 10 === 0 ? 'unknown' : `${epoch}:${Math.max(1, i - (i % 80))}`;
      hub.addClient(i % 2 ? `s-${i % 7}` : null, res, { i }, { lastEventId });
      hub.join(res, 'r');
      replayWrites += res.writes;
      if (i % 2) res.emit('close');
      else hub.removeClient(res);
    };
    for (let i = 1; i <= 3_000; i++) cycle(i);
    const before = await heapUsed();
    for (let i = 3_001; i <= 33_000; i++) cycle(i);
    const after = await heapUsed();
    const stats = hub.getStats();
    expect(stats).toMatchObject({ clients: 0, channels: 0 });
    expect(stats.replays).toBeGreaterThan(10_000);
    expect(stats.resets).toBeGreaterThan(3_000);
    expect(replayWrites).toBeGreaterThan(10_000);
    expect(hub.nativeReferenceCount).toBe(idleRefs);
    expect(after - before).toBeLessThan(2 * MB);

    // And with real reconnecting clients.
    await serve();
    const reconnects = async (rounds) => {
      for (let r = 0; r < rounds; r++) {
        hub.broadcast({ r });
        const batch = [];
        for (let i = 0; i < 10; i++)
          batch.push(client('/events', { 'Last-Event-ID': `${epoch}:${33_000 + r - (i % 3)}` }));
        await waitFor(() => hub.getClientCount() === 10, 'batch registered');
        for (const c of batch) c.destroy();
        await waitFor(() => hub.getClientCount() === 0, 'batch gone');
      }
      // Keep nothing of finished connections alive.
      clients.length = 0;
      responses.length = 0;
    };
    await reconnects(5);
    const realBefore = await heapUsed();
    await reconnects(40);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle references');
    expect((await heapUsed()) - realBefore).toBeLessThan(4 * MB);
  });
});
