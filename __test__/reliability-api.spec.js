// Regression tests for the API decisions of issue 9 (D1, D2, D4, D11-D15):
// durations past what a timer or a Duration can hold, calls back into the hub
// from inside it, keys that are not well-formed UTF-16, error codes, a 'slow'
// listener that broadcasts, a throwing 'connect' listener, non-extensible
// responses and the app's own writes after the helper ended a response.
// Stream transport throughout. Scenarios that aborted the process run in a
// child, so an abort fails one test instead of killing the Jest worker.

const path = require('node:path');
const { SseHub } = require('..');
const { FakeResponse, startServer, rawGet, waitFor, delay, runToExit } = require('./helpers.js');

const PACKAGE = JSON.stringify(path.resolve(__dirname, '..'));
const HELPERS = JSON.stringify(path.join(__dirname, 'helpers.js'));

let hub;
let idleRefs;
let srv;
/** Raw clients opened by the current test. */
let clients;

beforeEach(() => {
  hub = new SseHub().configure({ transport: 'stream' });
  idleRefs = hub.nativeReferenceCount;
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.destroy();
  await srv?.close();
  srv = undefined;
});

/** Runs `body` with `node -e`, with `SseHub` and `FakeResponse` in scope. */
function runChild(body) {
  return runToExit(`
    const { SseHub } = require(${PACKAGE});
    const { FakeResponse } = require(${HELPERS});
    ${body}`);
}

/** What a call threw (or returned), in a form that diffs well. */
function outcome(call) {
  try {
    const value = call();
    return { returned: value === hub ? '(the hub)' : value };
  } catch (err) {
    return {
      threw: err instanceof TypeError ? 'TypeError' : String(err?.name),
      code: err?.code,
      message: String(err?.message),
    };
  }
}

/** The outcome of a call refused with a TypeError `code` whose message starts with `name` and a space. */
const refused = (code, name) => ({
  threw: 'TypeError',
  code,
  message: expect.stringMatching(new RegExp(`^${name.replace('.', '\\.')} `)),
});

/** An SSE route at /events registering each response under `id`; resolves with the responses it saw. */
async function serve(id = 'c1') {
  const responses = [];
  srv = await startServer((app) => {
    app.get('/events', (_req, res) => {
      hub.initResponse(res);
      hub.addClient(id, res);
      responses.push(res);
    });
  });
  return responses;
}

function client() {
  const c = rawGet(srv.port);
  clients.push(c);
  return c;
}

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

describe('D4: ids, channels and event ids must be well-formed UTF-16', () => {
  test.each(['\uD800', '\uDBFF', '\uDC00'])(
    'a lone surrogate (%j) is refused with ERR_INVALID_ARG_VALUE wherever a string becomes a key, and nothing is written',
    (s) => {
      hub.configure({ historySize: 10 });
      const member = new FakeResponse();
      hub.addClient('ok', member);
      hub.join(member, 'room');
      const fresh = new FakeResponse();
      const calls = {
        'addClient(id, res)': [() => hub.addClient(`user${s}`, fresh), 'id'],
        'removeClientById(id)': [() => hub.removeClientById(`user${s}`), 'id'],
        'sendToClient(id)': [() => hub.sendToClient(`user${s}`, 1), 'id'],
        'comment(id)': [() => hub.comment(`user${s}`, 'c'), 'target'],
        'join(id, channel)': [() => hub.join(`user${s}`, 'room'), 'target'],
        'leave(id, channel)': [() => hub.leave(`user${s}`, 'room'), 'target'],
        'join(res, channel)': [() => hub.join(member, `room${s}`), 'channel'],
        'leave(res, channel)': [() => hub.leave(member, `room${s}`), 'channel'],
        'publish(channel)': [() => hub.publish(`room${s}`, 1), 'channel'],
        'broadcast({ channel })': [() => hub.broadcast(1, { channel: `room${s}` }), 'options.channel'],
        'send({ id })': [() => hub.send(member, 1, { id: `e${s}` }), 'options.id'],
        'broadcast({ id })': [() => hub.broadcast(1, { id: `e${s}` }), 'options.id'],
        'addClient(res, meta, { lastEventId })': [
          () => hub.addClient(fresh, undefined, { lastEventId: `1${s}` }),
          'options.lastEventId',
        ],
      };
      const got = {};
      const expected = {};
      for (const [name, [call, arg]] of Object.entries(calls)) {
        got[name] = outcome(call);
        expected[name] = refused('ERR_INVALID_ARG_VALUE', arg);
      }
      expect(got).toEqual(expected);
      expect({ clients: hub.getClientCount(), member: member.writes, fresh: fresh.writes }).toEqual({
        clients: 1,
        member: 0,
        fresh: 0,
      });
      expect(hub.getStats()).toMatchObject({ framesSent: 0, channels: 1 });
    },
  );

  test("'user\\uD800' and 'user\\uDBFF' can no longer reach each other; surrogate pairs still work", () => {
    const a = new FakeResponse();
    const b = new FakeResponse();
    expect(outcome(() => hub.addClient('user\uD800', a))).toEqual(refused('ERR_INVALID_ARG_VALUE', 'id'));
    // U+FFFD, what a lone surrogate used to turn into, is a legitimate id of its own.
    expect(hub.addClient('user\uFFFD', b)).toBe('user\uFFFD');
    expect(outcome(() => hub.sendToClient('user\uDBFF', 'x'))).toEqual(refused('ERR_INVALID_ARG_VALUE', 'id'));
    expect(outcome(() => hub.removeClientById('user\uDC00'))).toEqual(refused('ERR_INVALID_ARG_VALUE', 'id'));
    expect({ a: a.writes, b: b.writes, clients: hub.getClientCount() }).toEqual({ a: 0, b: 0, clients: 1 });
    const c = new FakeResponse();
    expect(hub.addClient('user\uD83D\uDE00', c)).toBe('user\uD83D\uDE00');
    expect(hub.sendToClient('user\uD83D\uDE00', 'smile')).toBe(true);
    expect({ b: b.writes, c: c.writes }).toEqual({ b: 0, c: 1 });
  });
});

describe('D11: every bad-input TypeError carries a code', () => {
  const res = new FakeResponse();
  test.each([
    ['removeClientById(5)', () => hub.removeClientById(5), 'id'],
    ['configure(null)', () => hub.configure(null), 'options'],
    ['send(res, 1, { event: 5 })', () => hub.send(res, 1, { event: 5 }), 'options.event'],
    ['join(res, 5)', () => hub.join(res, 5), 'channel'],
    ['initResponse(5)', () => hub.initResponse(5), 'res'],
    ["cleanupStaleClients('1')", () => hub.cleanupStaleClients('1'), 'maxAgeMs'],
    ['addClient(5, res)', () => hub.addClient(5, res), 'id'],
    ['broadcast(1, { channel: 5 })', () => hub.broadcast(1, { channel: 5 }), 'options.channel'],
    ['broadcast(1, { filter: 5 })', () => hub.broadcast(1, { filter: 5 }), 'options.filter'],
    ['comment(null, 5)', () => hub.comment(null, 5), 'text'],
    ['send(res, 5, { raw: true })', () => hub.send(res, 5, { raw: true }), 'payload'],
  ])('%s throws a TypeError with code ERR_INVALID_ARG_TYPE', (_name, call, arg) => {
    expect(outcome(call)).toEqual(refused('ERR_INVALID_ARG_TYPE', arg));
    expect(res.writes).toBe(0);
  });
});

describe('D12: a slow listener that broadcasts', () => {
  test('one slow event and one slowDisconnect, and the slow client is gone before the listener runs', async () => {
    hub.configure({ maxBufferedBytes: 64 * 1024 });
    await serve('slow');
    const c = client();
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    // The slow client stops reading; another client keeps up.
    c.socket.pause();
    const healthy = new FakeResponse();
    hub.addClient('healthy', healthy);
    const big = 'x'.repeat(32 * 1024);
    const slowEvents = [];
    const disconnects = [];
    hub.on('disconnect', (e) => disconnects.push(e));
    hub.on('slow', ({ id }) => {
      const event = { id, clientsInListener: hub.getClientCount() };
      slowEvents.push(event);
      // Bounded, so the unfixed binary's recursion cannot overflow the stack.
      if (slowEvents.length <= 3) event.reachedByListener = hub.broadcast(big);
    });
    for (let i = 0; slowEvents.length === 0 && i < 1000; i++) {
      hub.broadcast(big);
      if (i % 8 === 7) await new Promise((r) => setImmediate(r));
    }
    expect(slowEvents).toEqual([{ id: 'slow', clientsInListener: 1, reachedByListener: 1 }]);
    expect(hub.getStats().slowDisconnects).toBe(1);
    expect(disconnects).toEqual([{ id: 'slow', reason: 'slow' }]);
    expect(hub.getClientCount()).toBe(1);
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

describe('D14: responses that cannot be extended', () => {
  test.each(['preventExtensions', 'seal', 'freeze'])(
    "addClient on Object.%s(res) throws ERR_INVALID_ARG_VALUE 'res must be extensible' and registers nothing",
    (method) => {
      const res = Object[method](new FakeResponse());
      expect(outcome(() => hub.addClient('a', res))).toEqual({
        ...refused('ERR_INVALID_ARG_VALUE', 'res'),
        message: expect.stringMatching(/^res must be extensible/),
      });
      expect(outcome(() => hub.addClient(res))).toEqual({
        ...refused('ERR_INVALID_ARG_VALUE', 'res'),
        message: expect.stringMatching(/^res must be extensible/),
      });
      expect({
        clients: hub.getClientCount(),
        refs: hub.nativeReferenceCount,
        closeListeners: res.listenerCount('close'),
        removed: hub.removeClient(res),
      }).toEqual({ clients: 0, refs: idleRefs, closeListeners: 0, removed: false });
    },
  );
});

describe("D15: the app's res.write after the helper ended the response (stream transport)", () => {
  test.each([
    ['removeClient(res)', (res) => hub.removeClient(res)],
    ['removeClientById(id)', () => hub.removeClientById('c1')],
    [
      'cleanupStaleClients(1)',
      async () => {
        await delay(5);
        hub.cleanupStaleClients(1);
      },
    ],
    ['broadcastAndClose()', () => hub.broadcastAndClose('bye')],
    ['close()', () => hub.close()],
  ])(
    'after %s: returns false, writes nothing, calls back with ERR_STREAM_WRITE_AFTER_END, emits no error',
    async (_name, remove) => {
      const responses = await serve('c1');
      const c = client();
      await waitFor(() => hub.getClientCount() === 1, 'registered');
      const [res] = responses;
      const errors = [];
      res.on('error', (err) => errors.push(err.code));
      await remove(res);
      // Right away (in the same tick for the synchronous calls), before Node has finished the
      // response: Node's own write-after-end would then emit 'error' on it.
      let calledBack = false;
      let callbackError;
      const returned = res.write('data: late\n\n', (err) => {
        calledBack = true;
        callbackError = err;
      });
      await waitFor(() => calledBack, 'write callback');
      await c.waitFor((x) => x.raw().endsWith('\r\n0\r\n\r\n'), 'terminating chunk');
      await delay(50);
      expect({
        returned,
        callback: callbackError?.code,
        errors,
        late: c.raw().includes('late'),
        ended: c.raw().endsWith('\r\n0\r\n\r\n'),
      }).toEqual({ returned: false, callback: 'ERR_STREAM_WRITE_AFTER_END', errors: [], late: false, ended: true });
    },
  );
});
