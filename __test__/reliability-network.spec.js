// Reliability on real sockets (issue 9): replay bounds, backpressure for the
// app's own writes, deferred ends, hub.close(), writes racing a destroy,
// writes after the helper ended a response, all-or-nothing registration,
// the writer thread dying and the fd handed to it. Regression tests: each
// asserts the behaviour decided for the fixes.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Readable, pipeline } = require('node:stream');
const { isNativeError } = require('node:util').types;
const { SseHub } = require('..');
const { FakeResponse, startServer, rawGet, waitFor, delay, runToExit, dechunk } = require('./helpers.js');

const ROOT = path.join(__dirname, '..');
const KiB = 1024;
const MiB = 1024 * KiB;

let hub;
let srv;
let idleRefs;
/** Raw clients opened by the current test. */
let clients;
/** Responses the SSE route saw, by the `id` query parameter. */
let byId;

beforeEach(() => {
  hub = new SseHub();
  idleRefs = hub.nativeReferenceCount;
  clients = [];
  byId = new Map();
});

afterEach(async () => {
  // Clients first: a deferred end to a client that never reads only lets go
  // once its connection is gone.
  for (const c of clients) c.destroy();
  try {
    hub.broadcastAndClose('bye');
  } catch {
    // A test may have closed the hub already.
  }
  await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references released');
  await srv?.close();
  srv = undefined;
});

/** An SSE route at /events registering under `?id=` (generated when absent). */
async function serve() {
  srv = await startServer((app) =>
    app.get('/events', (req, res) => {
      hub.initResponse(res);
      byId.set(req.query.id ?? `#${byId.size}`, res);
      hub.addClient(req.query.id ?? null, res);
    }),
  );
}

function client(urlPath = '/events', headers = {}) {
  const c = rawGet(srv.port, urlPath, headers);
  clients.push(c);
  return c;
}

/** Rejects with a readable message when `promise` takes longer than `ms`. */
async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const nextTurn = () => new Promise((r) => setImmediate(r));

/** What /proc/self/fd/<fd> links to, e.g. 'socket:[123]': names the connection, not the fd. */
const fdLink = (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`);

/** How many fds of this process refer to the connection `link` names (Node's own and any duplicate). */
function fdsOn(link) {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === link) n++;
    } catch {
      // Closed while we looked (readdir's own fd among them).
    }
  }
  return n;
}

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

/**
 * Strict HTTP/1.1 chunked decoding of a raw response: the body, whether it
 * ended with the terminating chunk and nothing after it, or where it broke.
 * Also used by the child processes below (its source is inlined there).
 */
function parseChunked(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return { error: 'no head' };
  const parts = [];
  let i = headEnd + 4;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', i);
    if (lineEnd < 0) return { error: `unterminated chunk size at ${i}`, body: Buffer.concat(parts), ended: false };
    const sizeText = buf.subarray(i, lineEnd).toString('latin1');
    if (!/^[0-9a-f]+$/.test(sizeText)) {
      return { error: `bad chunk size ${JSON.stringify(sizeText.slice(0, 16))} at ${i}`, body: Buffer.concat(parts) };
    }
    const size = Number.parseInt(sizeText, 16);
    if (size === 0) {
      const ended = buf.subarray(lineEnd).toString('latin1') === '\r\n\r\n';
      return { error: ended ? null : 'bytes after the last chunk', body: Buffer.concat(parts), ended };
    }
    const end = lineEnd + 2 + size;
    if (end + 2 > buf.length) return { error: `truncated chunk at ${i}`, body: Buffer.concat(parts), ended: false };
    if (buf.subarray(end, end + 2).toString('latin1') !== '\r\n') {
      return { error: `chunk at ${i} not followed by CRLF`, body: Buffer.concat(parts), ended: false };
    }
    parts.push(buf.subarray(lineEnd + 2, end));
    i = end + 2;
  }
}

const rawBytes = (c) => Buffer.from(c.raw(), 'latin1');

/** `n` bytes of lower-case letters whose pattern depends on `offset`: any loss or reordering shows. */
function letters(offset, n) {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) {
    const at = offset + i;
    out[i] = 97 + ((at + (at >>> 16)) % 26);
  }
  return out;
}

/**
 * A readable of `total` bytes of `letters`, 64 KiB a piece, kept in `keep`
 * when given. `sync` pushes each piece as soon as it is asked for, so a
 * destination that never says "stop" gets everything in one turn; else one
 * piece per turn of the event loop.
 */
function letterSource(total, { keep, sync = false } = {}) {
  let offset = 0;
  return new Readable({
    read() {
      const step = () => {
        if (offset >= total) {
          this.push(null);
          return;
        }
        const piece = letters(offset, Math.min(64 * KiB, total - offset));
        offset += piece.length;
        keep?.push(piece);
        this.push(piece);
      };
      if (sync) step();
      else setImmediate(step);
    },
  });
}

/** Counts the bytes a raw client received and keeps the last few, without concatenating everything. */
function track(c) {
  const t = { bytes: 0, last: '' };
  c.socket.on('data', (d) => {
    t.bytes += d.length;
    t.last = (t.last + d.subarray(-16).toString('latin1')).slice(-16);
  });
  return t;
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

/** Like helpers.runToExit, with options for node itself (e.g. --expose-gc). */
function runNode(nodeArgs, script, timeoutMs = 15_000) {
  const child = spawn(process.execPath, [...nodeArgs, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill();
      resolve({ code: `still running after ${timeoutMs} ms`, stdout });
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}

function thrown(fn) {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('replay bound (D6)', () => {
  test.each(['auto', 'stream'])(
    'transport %s: missed events past maxBufferedBytes get one "event: reset"; a replay that fits arrives whole before anything live',
    async (transport) => {
      const BOUND = 64 * KiB;
      hub.configure({ transport, historySize: 100, maxBufferedBytes: BOUND });
      await serve();
      const blob = 'r'.repeat(8 * KiB);
      const frames = [''];
      for (let n = 1; n <= 100; n++) {
        expect(hub.broadcast({ n, blob })).toBe(0);
        frames.push(`id: ${n}\ndata: ${JSON.stringify({ n, blob })}\n\n`);
      }
      const reset = 'event: reset\nid: 100\ndata: null\n\n';
      // Missed 2..100: about 800 KiB, far past the bound. This client does not read yet.
      const far = client('/events', { 'Last-Event-ID': '1' });
      far.socket.pause();
      await waitFor(() => hub.getClientCount() === 1, 'far registered');
      expect(hub.getStats()).toMatchObject({
        socketConnections: transport === 'auto' ? 1 : 0,
        replays: 0,
        resets: 1,
      });
      for (let i = 0; i < 20; i++) {
        expect(hub.getStats().queuedBytes).toBeLessThanOrEqual(BOUND);
        await delay(10);
      }
      far.socket.resume();
      await far.waitFor((x) => x.body() === reset, 'the reset frame', 3000);

      // Missed 97..100: about 33 KiB, within the bound: replayed in full,
      // before the broadcast made as soon as it registered.
      hub.once('connect', () => hub.broadcast({ live: true }));
      const near = client('/events', { 'Last-Event-ID': '96' });
      await waitFor(() => hub.getClientCount() === 2, 'near registered');
      const live = 'id: 101\ndata: {"live":true}\n\n';
      await near.waitFor((x) => x.body() === frames.slice(97).join('') + live, 'replay then live', 3000);
      await far.waitFor((x) => x.body() === reset + live, 'live after the reset', 3000);
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 1, slowDisconnects: 0 });
    },
  );
});

describe("the app's own writes on the socket transport (D7)", () => {
  async function appResponse(id = 'app') {
    await serve();
    const c = client(`/events?id=${id}`);
    await waitFor(() => byId.has(id) && hub.getStats().socketConnections === 1, 'handed to the socket writer');
    await c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    return { c, res: byId.get(id) };
  }

  test("res.write returns false once the backlog reaches the high-water mark, and 'drain' follows once flushed", async () => {
    hub.configure({ maxBufferedBytes: 64 * MiB });
    const { c, res } = await appResponse();
    expect(res.writableHighWaterMark).toBe(16 * KiB);
    let drains = 0;
    res.on('drain', () => drains++);
    c.socket.pause();
    const written = [];
    let drainsAtFalse;
    // At most 16 MiB: more than the kernel buffers of a client that does not read.
    for (let offset = 0; offset < 16 * MiB; ) {
      const piece = letters(offset, 64 * KiB);
      offset += piece.length;
      written.push(piece);
      if (!res.write(piece)) {
        drainsAtFalse = drains;
        break;
      }
      await nextTurn();
    }
    // res.write returned false at some point: the drain count was recorded then.
    expect(drainsAtFalse).toEqual(expect.any(Number));
    c.socket.resume();
    await waitFor(() => drains > drainsAtFalse, "'drain'", 5000);
    const want = Buffer.concat(written);
    await waitFor(() => dechunk(rawBytes(c)).length >= want.length, 'every byte', 5000);
    expect(dechunk(rawBytes(c)).equals(want)).toBe(true);
    expect(hub.getStats()).toMatchObject({ clients: 1, slowDisconnects: 0, framesDropped: 0 });
  });

  test('stream.pipeline of 8 MiB into a registered response completes: every byte, in order, no slow event', async () => {
    hub.configure({ maxBufferedBytes: 256 * KiB });
    const slow = [];
    hub.on('slow', (e) => slow.push(e));
    const { c, res } = await appResponse();
    const seen = track(c);
    const sent = [];
    let result;
    pipeline(letterSource(8 * MiB, { keep: sent, sync: true }), res, (err) => {
      result = { error: err ?? null };
    });
    await waitFor(() => result !== undefined, 'the pipeline callback', 10_000);
    expect(result).toEqual({ error: null });
    await waitFor(() => seen.last.endsWith('0\r\n\r\n'), 'the end of the body', 5000);
    const got = parseChunked(rawBytes(c));
    expect({ error: got.error, ended: got.ended, length: got.body.length }).toEqual({
      error: null,
      ended: true,
      length: 8 * MiB,
    });
    expect(got.body.equals(Buffer.concat(sent))).toBe(true);
    expect(slow).toEqual([]);
    expect(hub.getStats()).toMatchObject({ clients: 0, slowDisconnects: 0, framesDropped: 0 });
  });

  test("'drop' policy: app writes are never dropped; past maxBufferedBytes the connection is disconnected and a pipeline into it fails", async () => {
    hub.configure({ maxBufferedBytes: 256 * KiB, slowClientPolicy: 'drop' });
    const events = [];
    for (const kind of ['slow', 'disconnect']) hub.on(kind, (e) => events.push({ kind, ...e }));
    const { c, res } = await appResponse();
    c.socket.pause();
    let result;
    // Far more than the kernel takes for a client that does not read: it
    // cannot finish, it waits on backpressure.
    pipeline(letterSource(32 * MiB), res, (err) => {
      result = { code: err?.code ?? null };
    });
    // The app's own writes, ignoring backpressure, push it past the bound.
    for (let i = 0; i < 400 && !res.destroyed; i++) {
      res.write(letters(i, 64 * KiB));
      await nextTurn();
    }
    await waitFor(() => res.destroyed, 'the response destroyed', 3000);
    await waitFor(() => result !== undefined, 'the pipeline callback', 3000);
    expect(result).toEqual({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
    expect(events).toEqual([
      { kind: 'slow', id: 'app' },
      { kind: 'disconnect', id: 'app', reason: 'slow' },
    ]);
    expect(hub.getStats()).toMatchObject({ clients: 0, framesDropped: 0, slowDisconnects: 1 });
  });
});

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

  test('a hub garbage-collected while an end is deferred still delivers every queued byte and a proper end', async () => {
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
        hub.removeClient(response);
        hub = null;
        for (let i = 0; i < 10 && !globalThis.collected; i++) {
          global.gc();
          await new Promise((r) => setTimeout(r, 10));
        }
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
  });
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

describe("the app's res.write after the helper ended the response, socket transport (D15)", () => {
  test.each([
    ['removeClient', (res) => hub.removeClient(res)],
    ['removeClientById', () => hub.removeClientById('app')],
    ['cleanupStaleClients', () => hub.cleanupStaleClients(0)],
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

describe('registration is all or nothing', () => {
  /** `res` behind a Proxy whose `on` throws: as a method, or as a property read once registration began. */
  function throwingOn(res, kind) {
    let reads = 0;
    return new Proxy(res, {
      get(target, key) {
        if (key === 'on') {
          if (kind === 'method') {
            return () => {
              throw new Error('on failed');
            };
          }
          // Passes the "is it a response" checks (two reads of `on` today),
          // then throws, whichever step of the registration reads it next.
          const tagged = Object.getOwnPropertySymbols(target).some(
            (s) => s.description === 'sse-helper-native connection',
          );
          if (++reads > 2 || tagged) throw new Error('on failed');
        }
        return Reflect.get(target, key, target);
      },
    });
  }

  test.each(['auto', 'stream'])(
    'transport %s: when res.on throws, addClient throws and leaves no client, reference, hook or fd behind',
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
            hub.addClient('bad', throwingOn(res, req.query.kind));
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
      for (const kind of ['method', 'getter']) {
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
    },
  );
});

describe('the writer thread dying', () => {
  test("socket connections are removed and closed, the hub emits 'error' ERR_SSE_WRITER_DIED, later connections use the stream", async () => {
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
    expect(await runToExit(script)).toEqual({ code: 0, stdout: 'alive, clients=0\n' });
  });
});

describe('the fd handed to the socket writer', () => {
  test("a handle whose fd lies (it reports another connection's fd) keeps that response on the stream transport", async () => {
    let fdOfA;
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        if (req.query.id === 'a') fdOfA = res.socket._handle.fd;
        else Object.defineProperty(res.socket._handle, 'fd', { configurable: true, get: () => fdOfA });
        hub.addClient(req.query.id, res);
      }),
    );
    const a = client('/events?id=a');
    await waitFor(() => hub.getStats().socketConnections === 1, 'a on the socket writer');
    const b = client('/events?id=b');
    await waitFor(() => hub.getClientCount() === 2, 'b registered');
    expect(hub.getStats()).toMatchObject({ clients: 2, socketConnections: 1, streamConnections: 1 });
    hub.sendToClient('b', 'for b');
    hub.sendToClient('a', 'for a');
    hub.sendToClient('b', 'b again');
    await b.waitFor((x) => x.body() === 'data: "for b"\n\ndata: "b again"\n\n', 'b gets its own frames');
    await a.waitFor((x) => x.body() === 'data: "for a"\n\n', 'a gets its frame');
    await delay(50);
    // Exactly its own chunk on A's wire, nothing of B's.
    expect(a.raw().slice(a.head().length)).toBe('\r\n\r\nf\r\ndata: "for a"\n\n\r\n');
  });
});
