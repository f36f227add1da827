// Clients that read slower than the hub writes: the 'disconnect' and 'drop'
// policies at maxBufferedBytes on the stream and the socket transport, a
// 'slow' listener that broadcasts (issue 9, D12), and the app's own res.write
// on the socket transport: false at the high-water mark, 'drain' once
// flushed, pipelines, never dropped (issue 9, D7).

const { Readable, pipeline } = require('node:stream');
const { sseFixture } = require('./hub-fixture.js');
const { FakeResponse, rawGet, waitFor, nextTurn, dechunk, framesOf, rawBytes, parseChunked } = require('./helpers.js');

const KiB = 1024;
const MiB = 1024 * KiB;

let hub;
let srv;
const { serve, client, connect, startServer, sseRoute, byId } = sseFixture((t) => {
  ({ hub, srv } = t);
});

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

describe('slow clients on the stream transport', () => {
  const BOUND = 64 * 1024;
  const pad = 's'.repeat(16 * 1024);
  const frame = (seq) => `data: ${JSON.stringify({ seq, pad })}\n\n`;
  const chunkLength = (seq) => {
    const n = Buffer.byteLength(frame(seq));
    return n.toString(16).length + 2 + n + 2;
  };

  /** A stuck client (paused) and a healthy one, both on the stream transport. */
  async function stuckAndHealthy(policy) {
    hub.configure({ transport: 'stream', maxBufferedBytes: BOUND, slowClientPolicy: policy });
    const byId = {};
    await serve((req, res) => {
      byId[req.query.id] = res;
      hub.addClient(req.query.id, res);
    });
    const stuck = await connect('/events?id=stuck');
    const healthy = await connect('/events?id=healthy');
    await waitFor(() => hub.getClientCount() === 2, 'registered');
    expect(hub.getStats()).toMatchObject({ streamConnections: 2, socketConnections: 0 });
    await stuck.c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'stuck headers');
    await healthy.c.waitFor((x) => x.raw().includes('\r\n\r\n'), 'healthy headers');
    stuck.c.socket.pause();
    const healthyHead = healthy.c.raw().length;
    let healthyBytes = healthyHead;
    healthy.c.socket.on('data', (d) => {
      healthyBytes += d.length;
    });
    let seq = 0;
    let expectedHealthyBytes = healthyHead;
    const events = [];
    for (const kind of ['slow', 'disconnect']) hub.on(kind, (e) => events.push({ kind, ...e }));
    /** Broadcasts until `until()` or `max` frames, pacing to the healthy client's reading. */
    async function pump(until, max) {
      const start = seq;
      while (!until() && seq - start < max) {
        hub.broadcast({ seq, pad });
        expectedHealthyBytes += chunkLength(seq);
        seq++;
        await nextTurn();
        while (byId.healthy.writableLength > 0) await nextTurn();
      }
    }
    return {
      stuck,
      healthy,
      byId,
      events,
      pump,
      sent: () => seq,
      healthyComplete: () => healthyBytes === expectedHealthyBytes,
    };
  }

  const seqsOf = (body) => framesOf(body).map((f) => JSON.parse(f.slice('data: '.length)));

  test("'disconnect' policy: a client that stops reading is disconnected; a healthy one gets every frame", async () => {
    const t = await stuckAndHealthy('disconnect');
    await t.pump(() => hub.getStats().slowDisconnects > 0, 5000);
    expect(hub.getStats().slowDisconnects).toBe(1);
    expect(hub.getClientCount()).toBe(1);
    expect(t.events).toEqual([
      { kind: 'slow', id: 'stuck' },
      { kind: 'disconnect', id: 'stuck', reason: 'slow' },
    ]);
    expect(t.byId.stuck.destroyed).toBe(true);
    await t.pump(() => false, 5);
    await waitFor(t.healthyComplete, 'healthy got every byte', 20_000);
    const seen = seqsOf(t.healthy.c.body());
    expect(seen.map((e) => e.seq)).toEqual([...Array(t.sent()).keys()]);
    expect(seen.every((e) => e.pad === pad)).toBe(true);
    // The server dropped it: once it reads again, the client sees the end.
    t.stuck.c.socket.resume();
    await t.stuck.c.closed;
    expect(hub.getStats().slowDisconnects).toBe(1);
  });

  test("'drop' policy: whole frames are skipped while behind, the connection stays, later frames arrive whole and in order", async () => {
    const t = await stuckAndHealthy('drop');
    await t.pump(() => hub.getStats().framesDropped > 0, 5000);
    expect(hub.getStats().framesDropped).toBe(1);
    await t.pump(() => false, 20);
    expect(hub.getClientCount()).toBe(2);
    expect(t.events).toEqual([]);
    t.stuck.c.socket.resume();
    await waitFor(() => t.byId.stuck.writableLength === 0, 'stuck drained', 20_000);
    const firstFinal = t.sent();
    await t.pump(() => false, 3);
    await t.stuck.c.waitFor((x) => x.body().endsWith(frame(firstFinal + 2)), 'final frames', 20_000);
    const seen = seqsOf(t.stuck.c.body()).map((e) => {
      expect(e.pad).toBe(pad);
      return e.seq;
    });
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
    expect(seen.slice(-3)).toEqual([firstFinal, firstFinal + 1, firstFinal + 2]);
    expect(seen.length).toBeLessThan(t.sent());
    expect(hub.getStats().framesDropped).toBe(t.sent() - seen.length);
    await waitFor(t.healthyComplete, 'healthy got every byte', 20_000);
    expect(seqsOf(t.healthy.c.body()).map((e) => e.seq)).toEqual([...Array(t.sent()).keys()]);
    expect(hub.getStats().slowDisconnects).toBe(0);
  });
});

describe.each([1, 2])('slow clients on the socket transport, %i writer thread(s)', (writerThreads) => {
  beforeEach(() => hub.configure({ writerThreads }));

  test('a client that stops reading is disconnected at maxBufferedBytes; memory stays bounded', async () => {
    hub.configure({ maxBufferedBytes: 256 * 1024, slowClientPolicy: 'disconnect' });
    srv = await startServer((app) => sseRoute(app));
    const stuck = rawGet(srv.port);
    const healthy = rawGet(srv.port);
    await waitFor(() => hub.getStats().socketConnections === 2, 'clients');
    await stuck.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    stuck.socket.pause();
    const big = { blob: 'z'.repeat(64 * 1024) };
    let sent = 0;
    while (hub.getStats().slowDisconnects === 0 && sent < 2000) {
      hub.broadcast(big);
      sent++;
      expect(hub.getStats().queuedBytes).toBeLessThanOrEqual(2 * (256 * 1024 + 70 * 1024));
      await new Promise((r) => setImmediate(r));
    }
    expect(hub.getStats().slowDisconnects).toBe(1);
    await waitFor(() => hub.getClientCount() === 1, 'slow one removed');
    // The server closed it: once it reads again, the client sees the end.
    stuck.socket.resume();
    await stuck.closed;
    // The healthy client got every frame, whole.
    await healthy.waitFor((x) => x.body().split('\n\n').length - 1 === sent, 'healthy frames', 20_000);
  });

  test('the drop policy skips whole frames while a client is behind and it catches up in order', async () => {
    hub.configure({ maxBufferedBytes: 128 * 1024, slowClientPolicy: 'drop' });
    srv = await startServer((app) => sseRoute(app));
    const slow = rawGet(srv.port);
    await waitFor(() => hub.getStats().socketConnections === 1, 'client');
    await slow.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    slow.socket.pause();
    const pad = 'p'.repeat(32 * 1024);
    let seq = 0;
    while (hub.getStats().framesDropped === 0 && seq < 5000) {
      hub.broadcast({ seq: seq++, pad });
      await new Promise((r) => setImmediate(r));
    }
    expect(hub.getStats().framesDropped).toBeGreaterThan(0);
    expect(hub.getClientCount()).toBe(1);
    slow.socket.resume();
    await waitFor(() => hub.getStats().queuedBytes === 0, 'drained', 20_000);
    hub.broadcast({ seq: seq++, pad: 'final' });
    await slow.waitFor((x) => x.body().includes('"pad":"final"'), 'final frame', 20_000);
    const seen = slow
      .body()
      .split('\n\n')
      .filter(Boolean)
      .map((e) => JSON.parse(e.slice('data: '.length)).seq);
    expect(seen.length).toBeLessThan(seq);
    expect(seen.at(-1)).toBe(seq - 1);
    expect(seen.every((s, i) => i === 0 || s > seen[i - 1])).toBe(true);
  });
});

describe('D12: a slow listener that broadcasts', () => {
  // Written for the stream transport.
  beforeEach(() => hub.configure({ transport: 'stream' }));

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

describe.each([1, 2])("the app's own writes on the socket transport (D7), %i writer thread(s)", (writerThreads) => {
  beforeEach(() => hub.configure({ writerThreads }));

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
    // Node's default: 16 KiB up to Node 20, 64 KiB from Node 22.
    expect([16 * KiB, 64 * KiB]).toContain(res.writableHighWaterMark);
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
