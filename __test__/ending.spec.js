// How connections and hubs end: a deferred end to a client that does not
// read (released on destroy, timed out by endTimeoutMs), hub.close() and
// Symbol.dispose flushing everything first, a hub garbage-collected with an
// end pending, a destroy followed by a broadcast in the same tick, and the
// app's res.write after the helper ended a response, on both transports
// (issue 9, D8, D9, D10, D15).

const path = require('node:path');
const { isNativeError } = require('node:util').types;
const { SseHub } = require('..');
const { sseFixture } = require('./hub-fixture.js');
const {
  FakeResponse,
  waitFor,
  within,
  delay,
  nextTurn,
  runNode,
  rawBytes,
  parseChunked,
  fdLink,
  fdsOn,
} = require('./helpers.js');

const ROOT = path.join(__dirname, '..');
const KiB = 1024;
const MiB = 1024 * KiB;

let hub;
let srv;
let idleRefs;
const { serve, client, byId } = sseFixture((t) => {
  ({ hub, srv, idleRefs } = t);
});

/**
 * Broadcasts 64 KiB events until the socket writer has bytes queued (the
 * kernel buffers of a client that stopped reading are full). Returns the
 * frames sent.
 */
async function fillQueue() {
  const blob = 'f'.repeat(64 * KiB);
  const frames = [];
  for (let i = 0; i < 300 && hub.getStats().queuedBytes === 0; i++) {
    hub.broadcast({ i, blob });
    frames.push(`data: ${JSON.stringify({ i, blob })}\n\n`);
    await nextTurn();
  }
  expect(hub.getStats().queuedBytes).toBeGreaterThan(0);
  return frames;
}

/** The app's own res.write after the helper ended `res`: what it returned, how its callback was called. */
async function lateWrite(res) {
  const calls = [];
  const returned = res.write('data: late\n\n', (err) => calls.push(err));
  await waitFor(() => calls.length > 0, 'the write callback', 2000);
  // Room for a second call or an 'error' emitted on the next tick.
  await delay(20);
  return {
    returned,
    calls: calls.length,
    isError: isNativeError(calls[0]),
    code: calls[0]?.code,
  };
}

function thrown(fn) {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('deferred end to a client that does not read (D8)', () => {
  /** One socket-transport client that stopped reading, with bytes queued for it, removed by the app. */
  async function deferredEnd() {
    hub.configure({ maxBufferedBytes: 16 * MiB });
    await serve();
    const c = client('/events?id=stalled');
    c.socket.pause();
    await waitFor(() => byId.has('stalled') && hub.getStats().socketConnections === 1, 'handed to the socket writer');
    const res = byId.get('stalled');
    await fillQueue();
    const link = fdLink(res.socket._handle.fd);
    expect(hub.removeClient(res)).toBe(true);
    expect(hub.getClientCount()).toBe(0);
    // Node's end waits for the writer, which cannot flush.
    expect(res.writableEnded).toBe(false);
    expect(hub.getStats().queuedBytes).toBeGreaterThan(0);
    return { c, res, link };
  }

  test.each([
    ['res.destroy()', (res) => res.destroy()],
    ['server.closeAllConnections()', () => srv.server.closeAllConnections()],
  ])('%s closes the connection at once: queue released, references idle, no fd left', async (_name, close) => {
    const { c, res, link } = await deferredEnd();
    close(res);
    await waitFor(() => hub.getStats().queuedBytes === 0, 'queuedBytes back to 0', 2000);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references idle', 2000);
    await waitFor(() => fdsOn(link) === 0, 'no fd left on the connection', 2000);
    // A paused socket notices nothing: once it reads, it sees the close.
    c.socket.resume();
    await within(c.closed, 2000, "the client's close");
  });

  test('configure({ endTimeoutMs: 300 }): a deferred end whose client never reads is destroyed after about 300 ms', async () => {
    hub.configure({ endTimeoutMs: 300 });
    const { c, res, link } = await deferredEnd();
    const removedAt = Date.now();
    await delay(150);
    expect(hub.getStats().queuedBytes).toBeGreaterThan(0);
    expect(res.destroyed).toBe(false);
    await waitFor(() => hub.getStats().queuedBytes === 0, 'queuedBytes back to 0', 3000);
    expect(Date.now() - removedAt).toBeGreaterThanOrEqual(250);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references idle', 2000);
    expect(res.destroyed).toBe(true);
    await waitFor(() => fdsOn(link) === 0, 'no fd left on the connection', 2000);
    c.socket.resume();
    await within(c.closed, 2000, "the client's close");
  });
});

describe('hub.close() (D9)', () => {
  test('flushes every connection, then ends it with the terminating chunk; the hub then refuses new work', async () => {
    hub.configure({ maxBufferedBytes: 16 * MiB });
    await serve();
    const slow = client('/events?id=slow');
    slow.socket.pause();
    await waitFor(() => hub.getStats().socketConnections === 1, 'slow one on the socket writer');
    const frames = await fillQueue();
    hub.configure({ transport: 'stream' });
    const onStream = client('/events?id=stream');
    await waitFor(() => hub.getClientCount() === 2, 'both registered');
    expect(hub.getStats()).toMatchObject({ socketConnections: 1, streamConnections: 1 });
    await onStream.waitFor((x) => x.raw().includes('\r\n\r\n'), 'stream headers');
    expect(hub.broadcast('last')).toBe(2);
    frames.push('data: "last"\n\n');

    const closing = hub.close();
    expect(typeof closing?.then).toBe('function');
    // Slow but reading from now on: it must get every queued byte first.
    slow.socket.resume();
    await within(closing, 8000, 'hub.close() to settle');
    await slow.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'slow: end of body', 5000);
    await onStream.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'stream: end of body', 5000);
    const slowGot = parseChunked(rawBytes(slow));
    expect({ error: slowGot.error, ended: slowGot.ended }).toEqual({ error: null, ended: true });
    expect(slowGot.body.toString('utf8') === frames.join('')).toBe(true);
    const streamGot = parseChunked(rawBytes(onStream));
    expect({ error: streamGot.error, ended: streamGot.ended, body: streamGot.body.toString('utf8') }).toEqual({
      error: null,
      ended: true,
      body: 'data: "last"\n\n',
    });

    expect(hub.getClientCount()).toBe(0);
    const refused = thrown(() => hub.addClient(new FakeResponse()));
    expect(isNativeError(refused)).toBe(true);
    expect(refused.code).toBe('ERR_SSE_CLOSED');
    expect(hub.getClientCount()).toBe(0);
    expect(hub.broadcast('after')).toBe(0);
  });

  test('Symbol.dispose and Symbol.asyncDispose close the hub', async () => {
    const sync = new SseHub();
    const later = new SseHub();
    for (const h of [sync, later]) h.addClient(new FakeResponse());
    expect(typeof sync[Symbol.dispose]).toBe('function');
    expect(typeof later[Symbol.asyncDispose]).toBe('function');
    sync[Symbol.dispose]();
    await later[Symbol.asyncDispose]();
    for (const h of [sync, later]) {
      expect(h.getClientCount()).toBe(0);
      expect(thrown(() => h.addClient(new FakeResponse()))?.code).toBe('ERR_SSE_CLOSED');
      expect(h.broadcast('after')).toBe(0);
    }
  });

  test.each([
    ['an end is deferred', 'hub.removeClient(response);', ''],
    // The app's own end after the hub is gone must wait for the writer too.
    ['the app then ends the response itself', '', 'response.end();'],
  ])(
    'a hub garbage-collected while %s still delivers every queued byte and a proper end',
    async (_name, before, after) => {
      // In a child with --expose-gc: drop every reference to the hub, collect,
      // then let the client read.
      const script = `
      const http = require('node:http');
      const net = require('node:net');
      const { SseHub } = require(${JSON.stringify(ROOT)});
      ${parseChunked.toString()}
      const until = async (predicate, ms) => {
        const end = Date.now() + ms;
        while (!predicate()) {
          if (Date.now() > end) throw new Error('timed out');
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      setTimeout(() => { console.log(JSON.stringify({ error: 'child timed out' })); process.exit(5); }, 10000);
      let hub = new SseHub();
      hub.configure({ maxBufferedBytes: 16 * 1024 * 1024 });
      globalThis.collected = false;
      globalThis.registry = new FinalizationRegistry(() => { globalThis.collected = true; });
      globalThis.registry.register(hub, 'hub');
      let response;
      const server = http.createServer((_req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
        response = res;
      });
      server.listen(0, '127.0.0.1', async () => {
        const chunks = [];
        const client = net.connect(server.address().port, '127.0.0.1');
        client.on('data', (d) => chunks.push(d));
        client.write('GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');
        await until(() => response && chunks.length > 0, 5000);
        const onSocket = hub.getStats().socketConnections === 1;
        client.pause();
        const blob = 'g'.repeat(64 * 1024);
        const sent = [];
        for (let i = 0; i < 300 && hub.getStats().queuedBytes === 0; i++) {
          hub.broadcast({ i, blob });
          sent.push('data: ' + JSON.stringify({ i, blob }) + '\\n\\n');
          await new Promise((r) => setImmediate(r));
        }
        const queued = hub.getStats().queuedBytes;
        ${before}
        hub = null;
        for (let i = 0; i < 10 && !globalThis.collected; i++) {
          global.gc();
          await new Promise((r) => setTimeout(r, 10));
        }
        ${after}
        client.resume();
        const ended = () => Buffer.concat(chunks).toString('latin1').endsWith('0\\r\\n\\r\\n');
        await until(ended, 5000).catch(() => {});
        const got = parseChunked(Buffer.concat(chunks));
        const body = got.body ? got.body.toString('utf8') : '';
        console.log(JSON.stringify({
          onSocket,
          queued: queued > 0,
          collected: globalThis.collected,
          error: got.error,
          ended: got.ended === true,
          complete: body === sent.join(''),
          received: body.length,
          sent: sent.join('').length,
        }));
        process.exit(0);
      });`;
      const { code, stdout } = await runNode(['--expose-gc'], script);
      expect(code).toBe(0);
      const out = JSON.parse(stdout);
      expect(out).toMatchObject({ onSocket: true, queued: true, error: null, ended: true, complete: true });
    },
  );
});

describe('a destroy followed by a broadcast in the same tick (D10)', () => {
  test.each([
    ['res.destroy()', (res) => res.destroy()],
    ['res.socket.destroy()', (res) => res.socket.destroy()],
  ])('socket transport, %s: the broadcast never reaches that client; the others get it', async (_name, kill) => {
    await serve();
    const victim = client('/events?id=victim');
    const other = client('/events?id=other');
    await waitFor(() => hub.getStats().socketConnections === 2, 'both on the socket writer');
    for (const c of [victim, other]) await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    kill(byId.get('victim'));
    hub.broadcast('x');
    await other.waitFor((x) => x.body() === 'data: "x"\n\n', 'the other client');
    await within(victim.closed, 3000, "the victim's close");
    expect(victim.body()).toBe('');
    expect(victim.raw().endsWith('\r\n\r\n')).toBe(true);
    await waitFor(() => hub.getClientCount() === 1, 'victim removed');
  });
});

describe("D15: the app's res.write after the helper ended the response (stream transport)", () => {
  // Written for the stream transport.
  beforeEach(() => hub.configure({ transport: 'stream' }));

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

describe("the app's res.write after the helper ended the response, socket transport (D15)", () => {
  test.each([
    ['removeClient', (res) => hub.removeClient(res)],
    ['removeClientById', () => hub.removeClientById('app')],
    ['cleanupStaleClients', () => hub.cleanupStaleClients(1)],
    ['broadcastAndClose', () => hub.broadcastAndClose('bye')],
    ['close()', () => hub.close()],
  ])(
    'after %s: returns false, writes nothing, no error event, callback gets ERR_STREAM_WRITE_AFTER_END',
    async (_name, remove) => {
      // The default transport: a plain Express HTTP/1.1 connection goes to the native writer.
      await serve();
      const c = client('/events?id=app');
      await waitFor(() => byId.has('app') && hub.getClientCount() === 1, 'registered');
      expect(hub.getStats()).toMatchObject({ socketConnections: 1, streamConnections: 0 });
      await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
      const res = byId.get('app');
      const errors = [];
      res.on('error', (err) => errors.push(err));
      await delay(5);
      remove(res);
      expect(hub.getClientCount()).toBe(0);
      const afterEnd = { returned: false, calls: 1, isError: true, code: 'ERR_STREAM_WRITE_AFTER_END' };
      // At once, while the writer may still be flushing...
      expect(await lateWrite(res)).toEqual(afterEnd);
      // ...and once the response has ended on the wire.
      await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'end of body');
      const rawAtEnd = c.raw();
      expect(await lateWrite(res)).toEqual(afterEnd);
      await delay(50);
      expect(errors).toEqual([]);
      expect(c.raw()).toBe(rawAtEnd);
      expect(c.raw()).not.toContain('late');
    },
  );
});
