// A connection's life in the hub: maxClients, the 'connect' and
// 'disconnect' events with their reasons, a throwing 'connect' listener,
// calls back into the hub from inside it, durations too large for a timer,
// all-or-nothing registration, and the socket writer thread dying (issue 9,
// D1, D2, D13). How connections end: ending.spec.js.
// Scenarios that aborted the process run in a child, so an abort fails one
// test instead of killing the Jest worker.

const path = require('node:path');
const { isNativeError } = require('node:util').types;
const { SseCapacityError } = require('..');
const { sseFixture } = require('./hub-fixture.js');
const {
  waitFor,
  within,
  nextTurn: nextTick,
  runToExit,
  runNode,
  fdLink,
  fdsOn,
  outcome,
  refused,
} = require('./helpers.js');

const ROOT = path.join(__dirname, '..');
const PACKAGE = JSON.stringify(ROOT);
const HELPERS = JSON.stringify(path.join(__dirname, 'helpers.js'));

let hub;
let idleRefs;
// biome-ignore lint/correctness/noUnusedVariables: bodies assign the server they start; the fixture closes it.
let srv;
const { serve, client, connect, startServer, responses } = sseFixture((t) => {
  ({ hub, srv, idleRefs } = t);
});

/** Runs `body` with `node -e`, with `SseHub` and `FakeResponse` in scope. */
function runChild(body) {
  return runToExit(`
    const { SseHub } = require(${PACKAGE});
    const { FakeResponse } = require(${HELPERS});
    ${body}`);
}

describe('maxClients', () => {
  test('past the limit addClient throws SseCapacityError, the route answers 503; a freed slot is reused', async () => {
    hub.configure({ maxClients: 2 });
    const errors = [];
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        try {
          // The documented double addClient: the second call re-registers.
          const clientId = req.query.session || hub.addClient(res);
          hub.addClient(clientId, res, { ip: req.ip });
        } catch (err) {
          if (!(err instanceof SseCapacityError)) throw err;
          errors.push(err);
          res.status(err.statusCode).json({ error: err.code });
          return;
        }
        hub.initResponse(res);
        responses.push(res);
        hub.send(res, 'welcome');
      }),
    );
    const a = client();
    const b = client('/events?session=s-b');
    await a.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'a accepted');
    await b.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'b accepted');
    expect(hub.getClientCount()).toBe(2);
    const c = client();
    await c.waitFor((x) => x.raw().includes('ERR_SSE_CAPACITY'), 'c refused');
    expect(c.head()).toMatch(/^HTTP\/1\.1 503 /);
    expect(errors).toHaveLength(1);
    const [err] = errors;
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'SseCapacityError', code: 'ERR_SSE_CAPACITY', statusCode: 503, maxClients: 2 });
    expect(hub.getClientCount()).toBe(2);
    // Re-registering a registered response at the limit is not limited.
    expect(hub.addClient('moved', responses[0], { again: true })).toBe('moved');
    expect(hub.getClientCount()).toBe(2);
    a.destroy();
    await waitFor(() => hub.getClientCount() === 1, 'a left');
    const d = client();
    await d.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'd accepted');
    expect(hub.getClientCount()).toBe(2);
    expect(errors).toHaveLength(1);
    // 0 lifts the limit.
    hub.configure({ maxClients: 0 });
    const e = client();
    await e.waitFor((x) => x.body() === 'data: "welcome"\n\n', 'e accepted');
    expect(hub.getClientCount()).toBe(3);
    for (const bad of [-1, 1.5, '2']) expect(() => hub.configure({ maxClients: bad })).toThrow(TypeError);
  });
});

describe.each(['auto', 'stream'])('lifecycle events, transport %s', (transport) => {
  test('connect and disconnect carry the right ids and reasons', async () => {
    hub.configure({ transport });
    const events = [];
    hub.on('connect', ({ id, res }) => events.push({ kind: 'connect', id, res }));
    hub.on('disconnect', (e) => events.push({ kind: 'disconnect', ...e }));
    await serve((req, res) => {
      if (req.query.broken) {
        res.write = () => {
          throw new Error('boom');
        };
      }
      hub.addClient(req.query.id, res);
      // Re-registering under the same id is not a second connect.
      hub.addClient(req.query.id, res);
    });
    const ids = ['a', 'b', 'c1', 'c1', 'd', 'e'];
    const conns = [];
    for (const id of ids) conns.push(await connect(`/events?id=${id}`));
    const broken = await connect('/events?id=broken&broken=1');
    await waitFor(() => hub.getClientCount() === 7, 'registered');
    expect(events).toEqual([...ids, 'broken'].map((id, i) => ({ kind: 'connect', id, res: responses[i] })));
    events.length = 0;

    conns[0].c.destroy();
    await waitFor(() => events.length === 1, 'close');
    expect(hub.removeClient(conns[1].res)).toBe(true);
    expect(hub.removeClientById('c1')).toBe(true);
    // The broken one's write throws: it is removed, the other two are written.
    expect(hub.broadcast('x')).toBe(2);
    expect(hub.broadcastAndClose('bye')).toBe(2);
    expect(events).toEqual([
      { kind: 'disconnect', id: 'a', reason: 'close' },
      { kind: 'disconnect', id: 'b', reason: 'removed' },
      { kind: 'disconnect', id: 'c1', reason: 'removed' },
      { kind: 'disconnect', id: 'c1', reason: 'removed' },
      { kind: 'disconnect', id: 'broken', reason: 'error' },
      { kind: 'disconnect', id: 'd', reason: 'removed' },
      { kind: 'disconnect', id: 'e', reason: 'removed' },
    ]);
    // The ends the helper made do not report the same connections again.
    for (const { c } of [...conns.slice(1), broken]) await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'ended');
    for (const { c } of conns) c.destroy();
    broken.c.destroy();
    await waitFor(() => responses.every((r) => r.destroyed || r.writableFinished), 'all closed');
    await nextTick();
    expect(events).toHaveLength(7);
  });
});

describe('D13: a throwing connect listener', () => {
  test('addClient still returns the id and registers; the error is rethrown on the next tick', async () => {
    const { code, stdout } = await runChild(`
      process.on('uncaughtException', (err) => console.log('uncaughtException: ' + err.message));
      const hub = new SseHub().configure({ transport: 'stream' });
      hub.on('connect', ({ id }) => {
        throw new Error('listener failed for ' + id);
      });
      let id;
      try {
        id = hub.addClient('a', new FakeResponse());
      } catch (err) {
        console.log('addClient threw: ' + err.message);
      }
      console.log('addClient returned: ' + id);
      console.log('count: ' + hub.getClientCount());`);
    expect({ code, stdout }).toEqual({
      code: 0,
      stdout: 'addClient returned: a\ncount: 1\nuncaughtException: listener failed for a\n',
    });
  });
});

describe('registration is all or nothing', () => {
  /** `res` behind a Proxy whose `on` throws: as a method, or as a property read once registration began. */
  /**
   * `res` behind a Proxy whose trap throws at one of registration's steps
   * that run JS after the core has committed: `key` when the hub sets its
   * key on the response, `once` when it attaches its close listener (which
   * the original tolerates, so it must not fail the registration).
   */
  function throwingAt(res, kind) {
    return new Proxy(res, {
      get(target, key) {
        if (kind === 'once' && key === 'once') {
          return () => {
            throw new Error('once failed');
          };
        }
        return Reflect.get(target, key, target);
      },
      set(target, key, value) {
        if (kind === 'key' && typeof key === 'symbol' && key.description === 'sse-helper-native connection') {
          throw new Error('set failed');
        }
        return Reflect.set(target, key, value, target);
      },
    });
  }

  test.each(['auto', 'stream'])(
    'transport %s: when a step of the registration throws, addClient throws and leaves no client, reference, hook or fd behind; a throwing once is tolerated',
    async (transport) => {
      hub.configure({ transport });
      const attempts = [];
      srv = await startServer((app) =>
        app.get('/events', (req, res) => {
          hub.initResponse(res);
          if (req.query.id === 'ok') {
            hub.addClient('ok', res);
            return;
          }
          const attempt = { kind: req.query.kind, res, link: fdLink(res.socket._handle.fd) };
          try {
            hub.addClient(req.query.kind, throwingAt(res, req.query.kind));
            attempt.threw = false;
          } catch {
            attempt.threw = true;
          }
          attempt.count = hub.getClientCount();
          attempts.push(attempt);
        }),
      );
      // A registered client first, so the socket writer already runs.
      client('/events?id=ok');
      await waitFor(() => hub.getClientCount() === 1, 'ok registered');
      expect(hub.getStats().socketConnections).toBe(transport === 'auto' ? 1 : 0);
      const refs = hub.nativeReferenceCount;
      for (const kind of ['key']) {
        client(`/events?kind=${kind}`);
        await waitFor(() => attempts.length > 0 && attempts.at(-1).kind === kind, `${kind} attempt`);
        const attempt = attempts.at(-1);
        expect({ kind, threw: attempt.threw, count: attempt.count }).toEqual({ kind, threw: true, count: 1 });
        expect(hub.getStats()).toMatchObject({ clients: 1, socketConnections: transport === 'auto' ? 1 : 0 });
        await waitFor(() => hub.nativeReferenceCount === refs, `${kind}: references back to idle`, 2000);
        // No write/end hooks left: the response has Node's own methods.
        expect(Object.hasOwn(attempt.res, 'write') || Object.hasOwn(attempt.res, 'end')).toBe(false);
        await waitFor(() => fdsOn(attempt.link) === 1, `${kind}: only Node's own fd on the connection`, 2000);
      }
      // As the original: a response whose `once` throws is registered anyway.
      client('/events?kind=once');
      await waitFor(() => attempts.at(-1)?.kind === 'once', 'once attempt');
      expect({ threw: attempts.at(-1).threw, count: attempts.at(-1).count }).toEqual({ threw: false, count: 2 });
      expect(hub.removeClientById('once')).toBe(true);
    },
  );
});

describe('registration never outlives what it raced with', () => {
  const { FakeResponse } = require('./helpers.js');

  test('a response removed in this tick, its writer still flushing, is not registered again', async () => {
    await serve((_req, res) => hub.addClient('a', res));
    const { res } = await connect();
    await waitFor(() => hub.getStats().socketConnections === 1, 'on the socket writer');
    const connects = [];
    hub.on('connect', ({ id }) => connects.push(id));
    expect(hub.removeClient(res)).toBe(true);
    // The same tick: Node has not ended it yet, the writer ends it first.
    hub.addClient('b', res);
    expect({ clients: hub.getClientCount(), connects, sent: hub.send(res, 'late') }).toEqual({
      clients: 0,
      connects: [],
      sent: false,
    });
    await waitFor(() => res.writableEnded, 'ended after the flush');
  });

  test('a getter that closes the hub during registration: addClient throws ERR_SSE_CLOSED, nothing stays registered', async () => {
    const res = new FakeResponse();
    let closing;
    Object.defineProperty(res, 'destroyed', {
      get() {
        closing ??= hub.close();
        return false;
      },
    });
    expect(outcome(() => hub.addClient('a', res))).toMatchObject({ code: 'ERR_SSE_CLOSED' });
    await closing;
    expect({ clients: hub.getClientCount(), closeListeners: res.listenerCount('close') }).toEqual({
      clients: 0,
      closeListeners: 0,
    });
  });

  test('a Proxy trap that removes the client while it is being tagged leaves no listener behind', () => {
    const target = new FakeResponse();
    let removed;
    const res = new Proxy(target, {
      set(t, key, value) {
        const ok = Reflect.set(t, key, value);
        if (typeof key === 'symbol') removed = hub.removeClientById('a');
        return ok;
      },
    });
    expect(hub.addClient('a', res)).toBe('a');
    expect({ removed, clients: hub.getClientCount(), closeListeners: target.listenerCount('close') }).toEqual({
      removed: true,
      clients: 0,
      closeListeners: 0,
    });
    expect(hub.nativeReferenceCount).toBe(idleRefs);
  });
});

describe('D2: calls back into the same hub from inside it', () => {
  // Every hook calls `reenter(name)` once: it reads the count, registers a new
  // response, broadcasts, and registers and removes another. Afterwards the
  // registry must hold exactly the responses that were registered, each once.
  function reentrancyScript(makeResponse, required) {
    return runChild(`
      const hub = new SseHub().configure({ transport: 'stream' });
      const fired = new Set();
      const live = [];
      const gone = [];
      let busy = false;
      let frozen = false;
      function reenter(name) {
        if (busy || frozen || fired.has(name)) return;
        busy = true;
        fired.add(name);
        hub.getClientCount();
        const extra = new FakeResponse();
        hub.addClient(extra);
        live.push(extra);
        hub.broadcast('nested');
        const removed = new FakeResponse();
        hub.addClient(removed);
        hub.removeClient(removed);
        gone.push(removed);
        busy = false;
      }
      const res = (${makeResponse})(reenter);
      hub.addClient('main', res);
      live.push(res);
      hub.broadcast('warm-up');
      frozen = true;
      const count = hub.getClientCount();
      const before = live.map((r) => r.writes);
      const reached = hub.broadcast('after');
      const after = live.map((r) => r.writes);
      const removals = live.map((r) => [hub.removeClient(r), hub.removeClient(r)]);
      const goneRemovals = gone.map((r) => hub.removeClient(r));
      const check = (ok, details) => ok || JSON.stringify(details);
      console.log('re-entered from: ' + ${JSON.stringify(required)}.filter((n) => fired.has(n)).join(', '));
      console.log('count equals registered: ' + check(count === live.length, { count, registered: live.length }));
      console.log('broadcast reached each once: ' +
        check(reached === live.length && after.every((w, i) => w === before[i] + 1), { reached, before, after }));
      console.log('each removed once: ' +
        check(removals.every(([a, b]) => a && !b) && !goneRemovals.some(Boolean), { removals, goneRemovals }));
      console.log('count after: ' + hub.getClientCount());`);
  }

  const consistent = (required) =>
    [
      `re-entered from: ${required.join(', ')}`,
      'count equals registered: true',
      'broadcast reached each once: true',
      'each removed once: true',
      'count after: 0',
      '',
    ].join('\n');

  test('a getter on res.flush that calls back into the hub does not abort; every response is registered once', async () => {
    const makeResponse = `(reenter) => {
      const res = new FakeResponse();
      Object.defineProperty(res, 'flush', {
        get() {
          reenter('flush');
          return undefined;
        },
      });
      return res;
    }`;
    const { code, stdout } = await reentrancyScript(makeResponse, ['flush']);
    expect({ code, stdout }).toEqual({ code: 0, stdout: consistent(['flush']) });
  });

  test.each(['set', 'defineProperty'])(
    'a Proxy around res whose %s trap and get trap call back into the hub does not abort; every response is registered once',
    async (trap) => {
      const makeResponse = `(reenter) => {
        const hooked = ['flush', 'write', 'on', 'finished', 'writableLength'];
        return new Proxy(new FakeResponse(), {
          get(target, key) {
            if (hooked.includes(key)) reenter(key);
            return Reflect.get(target, key);
          },
          ${trap}(target, key, value) {
            reenter('${trap}');
            return Reflect.${trap}(target, key, value);
          },
        });
      }`;
      const { code, stdout } = await reentrancyScript(makeResponse, ['on', trap]);
      expect({ code, stdout }).toEqual({ code: 0, stdout: consistent(['on', trap]) });
    },
  );
});

describe('D1: durations too large for a timer', () => {
  test('cleanupStaleClients(1e23) and (Number.MAX_VALUE) return a count; live clients are never too old', async () => {
    const { code, stdout } = await runChild(`
      const hub = new SseHub().configure({ transport: 'stream' });
      const live = new FakeResponse();
      const ended = new FakeResponse();
      hub.addClient(live);
      hub.addClient(ended);
      ended.end();
      console.log('1e23: ' + hub.cleanupStaleClients(1e23));
      console.log('MAX_VALUE: ' + hub.cleanupStaleClients(Number.MAX_VALUE));
      console.log('count: ' + hub.getClientCount());`);
    expect({ code, stdout }).toEqual({ code: 0, stdout: '1e23: 1\nMAX_VALUE: 0\ncount: 1\n' });
  });

  test('heartbeatMs of 2**31 or 1e23 is ERR_INVALID_ARG_VALUE, 2**31 - 1 is accepted, a string is ERR_INVALID_ARG_TYPE', () => {
    expect(outcome(() => hub.configure({ heartbeatMs: 2 ** 31 }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.heartbeatMs'),
    );
    expect(outcome(() => hub.configure({ heartbeatMs: 1e23 }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.heartbeatMs'),
    );
    expect(outcome(() => hub.configure({ heartbeatMs: 'x' }))).toEqual(
      refused('ERR_INVALID_ARG_TYPE', 'options.heartbeatMs'),
    );
    expect(hub.configure({ heartbeatMs: 2 ** 31 - 1 })).toBe(hub);
    expect(hub.configure({ heartbeatMs: 0 })).toBe(hub);
  });

  test('endTimeoutMs is an integer from 1 to 2**31 - 1 (ERR_INVALID_ARG_VALUE outside, ERR_INVALID_ARG_TYPE for a string)', () => {
    for (const bad of [0, -1, 1.5, 2 ** 31, 1e23, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect({ bad, ...outcome(() => hub.configure({ endTimeoutMs: bad })) }).toEqual({
        bad,
        ...refused('ERR_INVALID_ARG_VALUE', 'options.endTimeoutMs'),
      });
    }
    expect(outcome(() => hub.configure({ endTimeoutMs: '300' }))).toEqual(
      refused('ERR_INVALID_ARG_TYPE', 'options.endTimeoutMs'),
    );
    for (const good of [1, 300, 30_000, 2 ** 31 - 1]) expect(hub.configure({ endTimeoutMs: good })).toBe(hub);
  });
});

describe('the writer thread dying', () => {
  test("socket connections are removed and closed, the hub emits 'error' ERR_SSE_WRITER_DIED, later connections use the stream", async () => {
    // One writer thread: its death leaves no socket writer.
    hub.configure({ writerThreads: 1 });
    await serve();
    const a = client('/events?id=a');
    const b = client('/events?id=b');
    await waitFor(() => hub.getStats().socketConnections === 2, 'both on the socket writer');
    for (const c of [a, b]) await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    const errors = [];
    const disconnects = [];
    hub.on('error', (err) => errors.push(err));
    hub.on('disconnect', (e) => disconnects.push(e));
    hub._crashWriterForTest();
    await waitFor(() => hub.getClientCount() === 0, 'socket connections removed', 5000);
    expect(disconnects.sort((x, y) => x.id.localeCompare(y.id))).toEqual([
      { id: 'a', reason: 'error' },
      { id: 'b', reason: 'error' },
    ]);
    await within(Promise.all([a.closed, b.closed]), 5000, 'the clients to see their connections close');
    await waitFor(() => errors.length > 0, "the hub's 'error'", 2000);
    expect(errors).toHaveLength(1);
    expect(isNativeError(errors[0])).toBe(true);
    expect(errors[0].code).toBe('ERR_SSE_WRITER_DIED');

    const c = client('/events?id=c');
    await waitFor(() => hub.getClientCount() === 1, 'c registered');
    expect(hub.getStats()).toMatchObject({ clients: 1, socketConnections: 0, streamConnections: 1 });
    expect(hub.broadcast('after')).toBe(1);
    await c.waitFor((x) => x.body() === 'data: "after"\n\n', 'c gets broadcasts');
  });

  test('with two writer threads, one dying takes only its own connections; the other keeps writing and taking new ones', async () => {
    hub.configure({ writerThreads: 2 });
    await serve();
    // a first, so it lands on the first thread, the one the crash kills.
    const a = client('/events?id=a');
    await waitFor(() => hub.getStats().socketConnections === 1, 'a on the socket writer');
    const b = client('/events?id=b');
    await waitFor(() => hub.getStats().socketConnections === 2, 'both on the socket writer');
    expect(hub.getStats().socketConnectionsByThread).toEqual([1, 1]);
    for (const c of [a, b]) await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    const errors = [];
    const disconnects = [];
    hub.on('error', (err) => errors.push(err.code));
    hub.on('disconnect', (e) => disconnects.push(e));
    hub._crashWriterForTest();
    await waitFor(() => hub.getClientCount() === 1, 'the dead thread’s connection removed', 5000);
    expect(disconnects).toEqual([{ id: 'a', reason: 'error' }]);
    await within(a.closed, 5000, 'a to see its connection close');
    await waitFor(() => errors.length > 0, "the hub's 'error'", 2000);
    expect(errors).toEqual(['ERR_SSE_WRITER_DIED']);
    const c = client('/events?id=c');
    await waitFor(() => hub.getClientCount() === 2, 'c registered');
    expect(hub.getStats()).toMatchObject({ socketConnections: 2, streamConnections: 0 });
    // Only the running thread is reported, in getStats() and in metrics().
    expect(hub.getStats()).toMatchObject({ writerThreads: 1, socketConnectionsByThread: [2] });
    const samples = hub
      .metrics()
      .split('\n')
      .filter((l) => l.startsWith('sse_writer_thread'));
    expect(samples).toEqual(['sse_writer_threads 1', 'sse_writer_thread_connections{thread="0"} 2']);
    expect(hub.broadcast('after')).toBe(2);
    for (const x of [b, c]) await x.waitFor((y) => y.body().endsWith('data: "after"\n\n'), 'the broadcast');
  });

  test("without an 'error' listener nothing crashes", async () => {
    const script = `
      const http = require('node:http');
      const net = require('node:net');
      const { SseHub } = require(${JSON.stringify(ROOT)});
      const hub = new SseHub();
      const server = http.createServer((_req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
      });
      server.listen(0, '127.0.0.1', () => {
        const socket = net.connect(server.address().port, '127.0.0.1');
        socket.on('error', () => {});
        socket.write('GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');
        socket.once('data', () => {
          if (hub.getStats().socketConnections !== 1) process.exit(3);
          socket.on('close', () => setTimeout(() => {
            console.log('alive, clients=' + hub.getClientCount());
            process.exit(0);
          }, 100));
          hub._crashWriterForTest();
        });
      });
      setTimeout(() => process.exit(4), 8000);`;
    // The death is reported as a process warning, not thrown.
    const { code, stdout, stderr } = await runNode([], script, 15_000, { captureStderr: true });
    expect({ code, stdout }).toEqual({ code: 0, stdout: 'alive, clients=0\n' });
    expect(stderr).toMatch(/\[ERR_SSE_WRITER_DIED\] Error: the native socket writer stopped unexpectedly/);
  });
});
