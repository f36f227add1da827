// The Redis bus: several instances of an app (fixtures/bus-instance.js, each
// in its own process) on one throwaway redis-server. Broadcasts, channels and
// client ids across instances, over both transports; the stream entry id as
// the event id; replay of what a client missed on another instance, and
// `event: reset` when it cannot be; entries written by other programs (good
// and malformed); the global client count; the bus's figures in getStats()
// and metrics(); close(); configure's validation; a hub whose Redis is away.
//
// Every test uses a stream of its own (STREAM), so neither entries nor
// presence keys of one test reach another. Nothing here asserts timings:
// waits have generous deadlines, and "nothing else arrived" is checked by
// the exact body once a later marker event has arrived (entries are
// delivered in stream order).

const http = require('node:http');
const vm = require('node:vm');
const { EventSource } = require('eventsource');
const parsePrometheus = require('parse-prometheus-text-format');
const { SseHub } = require('..');
const { cuttableProxy: sharedCuttableProxy } = require('./bus-clients.js');
const { startRedis, spawnInstance, tcpProxy, freePort } = require('./redis-helpers.js');
const { startServer, rawGet, waitFor, delay, framesOf, outcome, refused } = require('./helpers.js');

const STREAM_ID = /^\d+-\d+$/;
const LONG = 30_000;

let redis;
/** Instances, clients, EventSources, servers and hubs of the current test, closed after it. */
const instances = [];
const clients = [];
const sources = [];
const servers = [];
const hubs = [];
let streamCount = 0;

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

afterEach(async () => {
  for (const es of sources.splice(0)) es.close();
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(instances.splice(0).map((i) => i.stop()));
  for (const h of hubs.splice(0)) await h.close();
  for (const s of servers.splice(0)) await s.close();
});

/** A stream key of its own for each test. */
const newStream = () => `bus-test-${process.pid}-${++streamCount}`;

/** An instance of the bus fixture on this file's Redis. */
async function instance(stream, env = {}) {
  const inst = await spawnInstance({ REDIS_URL: redis.url, STREAM: stream, ...env });
  instances.push(inst);
  return inst;
}

/** One HTTP request with a JSON body (no keep-alive): { status, body }. */
function request(port, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers =
      data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

const post = (inst, path, body) => request(inst.port, 'POST', path, body);
const get = async (inst, path) => (await request(inst.port, 'GET', path)).body;
const stats = (inst) => get(inst, '/stats');

/** POST /broadcast, expecting 200: the route's `result`. */
async function send(inst, body) {
  const r = await post(inst, '/broadcast', body);
  expect(r).toEqual({ status: 200, body: { result: expect.anything() } });
  return r.body.result;
}

/** A raw client of `inst` (exact bytes), closed after the test. */
function raw(inst, path = '/events', headers = {}) {
  const c = rawGet(inst.port, path, headers);
  clients.push(c);
  return c;
}

/** Waits until `inst` has `n` connections registered. */
async function registered(inst, n) {
  let last;
  const deadline = Date.now() + LONG;
  for (;;) {
    last = await stats(inst);
    if (last.clients === n) return last;
    if (Date.now() > deadline) throw new Error(`port ${inst.port}: ${last.clients} clients, expected ${n}`);
    await delay(20);
  }
}

/** One SSE frame (without its blank line) as { event, id, retry, data }. */
function parseFrame(text) {
  const frame = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (name === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
    else frame[name] = value;
  }
  return frame;
}

/** The complete events a raw client received (comments left out). */
const eventsOf = (c) =>
  framesOf(c.body())
    .filter((f) => !f.startsWith(':'))
    .map(parseFrame);

/** (id, data) of each event. */
const pairs = (events) => events.map(({ id, data }) => ({ id, data }));

/** Compares stream ids numerically: negative, 0 or positive. */
function compareIds(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

/** The ids that are not stream ids or do not strictly increase (none expected). */
function badIds(ids) {
  const bad = [];
  ids.forEach((id, i) => {
    if (!STREAM_ID.test(id)) bad.push({ at: i, id, why: 'not a stream id' });
    else if (i > 0 && STREAM_ID.test(ids[i - 1]) && compareIds(ids[i - 1], id) >= 0) {
      bad.push({ at: i, id, why: `not after ${ids[i - 1]}` });
    }
  });
  return bad;
}

/** The stream's entries as { id, fields } (fields as an object). */
async function entries(stream) {
  const list = await redis.command('XRANGE', stream, '-', '+');
  return list.map(([id, flat]) => {
    const fields = {};
    for (let i = 0; i < flat.length; i += 2) fields[flat[i]] = flat[i + 1];
    return { id, fields };
  });
}

/**
 * The newest entry id of the stream once `added` entries have been appended
 * to it in all (broadcast() returns before its XADD is done).
 */
async function newestId(stream, added) {
  const deadline = Date.now() + LONG;
  for (;;) {
    let info = null;
    try {
      const flat = await redis.command('XINFO', 'STREAM', stream);
      info = {};
      for (let i = 0; i < flat.length; i += 2) info[flat[i]] = flat[i + 1];
    } catch {
      // No such key yet.
    }
    if (info && info['entries-added'] >= added) return info['last-generated-id'];
    if (Date.now() > deadline)
      throw new Error(`${stream}: ${info?.['entries-added']} entries added, expected ${added}`);
    await delay(10);
  }
}

/** An EventSource recording every event of `types` (message and reset by default) as { type, id, data }. */
function eventSource(url, types = ['message', 'reset']) {
  const es = new EventSource(url);
  sources.push(es);
  const got = [];
  let opens = 0;
  const record = (e) => got.push({ type: e.type, id: e.lastEventId, data: e.data });
  for (const type of types) es.addEventListener(type, record);
  es.addEventListener('open', () => {
    opens++;
  });
  return { es, got, opens: () => opens };
}

/** Broadcasts from `inst` one after another until stop() (resolves with how many were sent). */
function broadcastLoop(inst, tag) {
  let stopped = false;
  let sent = 0;
  const done = (async () => {
    while (!stopped) {
      await send(inst, { payload: { tag, n: sent } });
      sent++;
    }
    return sent;
  })();
  return {
    sent: () => sent,
    stop() {
      stopped = true;
      return done;
    },
  };
}

/** bus-clients.js's cuttable proxy to Redis, closed after the test. */
async function cuttableProxy(targetPort) {
  const proxy = await sharedCuttableProxy(targetPort);
  servers.push(proxy);
  return proxy;
}

/** Waits until `inst`'s bus is in `state`. */
async function busState(inst, state) {
  const deadline = Date.now() + LONG;
  for (;;) {
    const { bus } = await stats(inst);
    if (bus.state === state) return bus;
    if (Date.now() > deadline) throw new Error(`bus on port ${inst.port}: ${bus.state}, expected ${state}`);
    await delay(20);
  }
}

describe('two instances on one Redis', () => {
  test(
    '1,000 broadcasts from each, interleaved: every client of both (socket and stream transports, raw and ' +
      'EventSource) gets the same 2,000 (id, data), stream ids strictly increasing, each once',
    async () => {
      const stream = newStream();
      const a = await instance(stream);
      const b = await instance(stream, { TRANSPORT: 'stream' });
      const rawA = raw(a, '/events?id=ra');
      const rawB = raw(b, '/events?id=rb');
      const esA = eventSource(`${a.url}/events?id=ea`);
      const esB = eventSource(`${b.url}/events?id=eb`);
      expect(await registered(a, 2)).toMatchObject({ socketConnections: 2, streamConnections: 0 });
      expect(await registered(b, 2)).toMatchObject({ socketConnections: 0, streamConnections: 2 });

      const [ra, rb] = await Promise.all([
        post(a, '/broadcast-many', { count: 1000, prefix: 'A' }),
        post(b, '/broadcast-many', { count: 1000, prefix: 'B' }),
      ]);
      expect([ra, rb]).toEqual([
        { status: 200, body: { ok: true } },
        { status: 200, body: { ok: true } },
      ]);
      await waitFor(() => eventsOf(rawA).length >= 2000 && eventsOf(rawB).length >= 2000, 'raw clients', LONG);
      await waitFor(() => esA.got.length >= 2000 && esB.got.length >= 2000, 'EventSources', LONG);

      const reference = pairs(eventsOf(rawA));
      expect(reference).toHaveLength(2000);
      expect(pairs(eventsOf(rawB))).toEqual(reference);
      expect(esA.got).toEqual(reference.map((p) => ({ type: 'message', ...p })));
      expect(esB.got).toEqual(reference.map((p) => ({ type: 'message', ...p })));
      // Nothing but id and data on the wire.
      expect(eventsOf(rawA).filter((e) => Object.keys(e).join() !== 'id,data')).toEqual([]);

      const ids = reference.map((p) => p.id);
      expect(badIds(ids)).toEqual([]);
      expect(new Set(ids).size).toBe(2000);
      // All 2,000 once, each instance's in the order it broadcast them.
      const payloads = reference.map((p) => JSON.parse(p.data));
      for (const from of ['A', 'B']) {
        expect(payloads.filter((p) => p.from === from)).toEqual(Array.from({ length: 1000 }, (_, n) => ({ n, from })));
      }
      // Interleaved: they are exactly the stream's entries, in its order.
      const written = await entries(stream);
      expect(reference).toEqual(written.map(({ id, fields }) => ({ id, data: fields.data })));
      expect(written.map((e) => e.fields.kind)).toEqual(Array(2000).fill('broadcast'));

      for (const inst of [a, b]) {
        expect((await stats(inst)).bus).toMatchObject({
          state: 'connected',
          entriesWritten: 1000,
          entriesRead: 2000,
          replays: 0,
          resets: 0,
          malformed: 0,
          localFallbacks: 0,
        });
      }
    },
  );

  test('publish reaches the channel members on every instance only; sendToClient every connection under the id only', async () => {
    const stream = newStream();
    const a = await instance(stream);
    const b = await instance(stream, { TRANSPORT: 'stream' });
    const aliceA = raw(a, '/events?id=alice&channel=room');
    const bobA = raw(a, '/events?id=bob');
    const aliceB = raw(b, '/events?id=alice');
    const carolB = raw(b, '/events?id=carol&channel=room');
    const daveB = raw(b, '/events?id=dave&channel=hall');
    await registered(a, 2);
    await registered(b, 3);

    // Return values: the local connections targeted (publish: A's members).
    expect(await send(a, { channel: 'room', payload: 'to room' })).toBe(1);
    expect(await send(b, { to: 'alice', payload: 'to alice' })).toBe(true);
    expect(await send(b, { to: 'nobody', payload: 'to nobody' })).toBe(true);
    expect(await send(b, { channel: 'empty', payload: 'to an empty channel' })).toBe(0);
    expect(await send(a, { payload: 'end' })).toBe(2);
    expect(await send(b, { payload: 'end' })).toBe(3);

    await newestId(stream, 6);
    // By their data, not their place: each instance appends on its own
    // thread, so A's 'end' may land before B's last two entries.
    const all = await entries(stream);
    const idsOf = (data) => all.filter((e) => e.fields.data === JSON.stringify(data)).map((e) => e.id);
    const [[room], [alice], [end1, end2]] = [idsOf('to room'), idsOf('to alice'), idsOf('end')];
    const frame = (id, data) => `id: ${id}\ndata: ${JSON.stringify(data)}\n\n`;
    const ends = frame(end1, 'end') + frame(end2, 'end');
    const expected = new Map([
      [aliceA, frame(room, 'to room') + frame(alice, 'to alice') + ends],
      [bobA, ends],
      [aliceB, frame(alice, 'to alice') + ends],
      [carolB, frame(room, 'to room') + ends],
      [daveB, ends],
    ]);
    try {
      for (const c of expected.keys()) await c.waitFor((x) => x.body().endsWith(ends), 'the end markers', LONG);
    } catch (err) {
      // What each client had, and each instance's bus, to see why.
      const buses = await Promise.all([a, b].map(async (i) => (await stats(i)).bus));
      err.message += `\nbodies: ${JSON.stringify([...expected.keys()].map((c) => c.body()))}`;
      err.message += `\nexpected: ${JSON.stringify([...expected.values()])}\nbus: ${JSON.stringify(buses)}`;
      throw err;
    }
    expect([...expected.keys()].map((c) => c.body())).toEqual([...expected.values()]);

    const written = await entries(stream);
    expect(written.slice(0, 4).map((e) => e.fields)).toEqual([
      expect.objectContaining({ kind: 'channel', channel: 'room', data: '"to room"' }),
      expect.objectContaining({ kind: 'client', client: 'alice', data: '"to alice"' }),
      expect.objectContaining({ kind: 'client', client: 'nobody', data: '"to nobody"' }),
      expect.objectContaining({ kind: 'channel', channel: 'empty', data: '"to an empty channel"' }),
    ]);
  });

  test('a filtered broadcast stays local and has no id line; options.id is refused with a bus', async () => {
    const stream = newStream();
    const a = await instance(stream);
    const b = await instance(stream);
    const xA = raw(a, '/events?id=x');
    const yA = raw(a, '/events?id=y');
    const xB = raw(b, '/events?id=x');
    await registered(a, 2);
    await registered(b, 1);
    const before = (await stats(a)).bus.entriesWritten;

    expect(await send(a, { payload: 'only x', filter: 'x' })).toBe(1);
    expect(await send(a, { payload: 'x or y', filter: ['x', 'y'] })).toBe(2);
    expect((await stats(a)).bus.entriesWritten).toBe(before);
    expect(await redis.command('XLEN', stream)).toBe(0);

    const refusedId = await post(a, '/broadcast', { payload: 'with id', id: '7' });
    expect(refusedId).toEqual({
      status: 400,
      body: {
        error: { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/^options\.id /) },
      },
    });
    const refusedPublish = await post(b, '/broadcast', { payload: 'with id', id: '7', channel: 'room' });
    expect(refusedPublish.status).toBe(400);
    expect(refusedPublish.body.error).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    const refusedTo = await post(b, '/broadcast', { payload: 'with id', id: '7', to: 'x' });
    expect(refusedTo.status).toBe(400);
    expect(refusedTo.body.error).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    expect(await redis.command('XLEN', stream)).toBe(0);

    await send(b, { payload: 'end' });
    const end = `id: ${await newestId(stream, 1)}\ndata: "end"\n\n`;
    for (const c of [xA, yA, xB]) await c.waitFor((x) => x.body().endsWith(end), 'the end marker', LONG);
    expect(xA.body()).toBe(`data: "only x"\n\ndata: "x or y"\n\n${end}`);
    expect(yA.body()).toBe(`data: "x or y"\n\n${end}`);
    expect(xB.body()).toBe(end);
    // The exact chunks on the wire: one per event, no id line in the local ones.
    expect(xA.chunks()).toEqual(['data: "only x"\n\n', 'data: "x or y"\n\n', end]);
    expect((await stats(a)).bus.entriesWritten).toBe(before);
  });
});

test('three instances: a broadcast from one reaches the clients of all three, with the same stream id', async () => {
  const stream = newStream();
  const insts = [await instance(stream), await instance(stream, { TRANSPORT: 'stream' }), await instance(stream)];
  const cs = insts.map((inst) => raw(inst));
  const es = eventSource(`${insts[2].url}/events`, ['message', 'greet']);
  for (const [i, inst] of insts.entries()) await registered(inst, i === 2 ? 2 : 1);

  expect(await send(insts[1], { payload: { hello: 'all' }, event: 'greet' })).toBe(1);
  await newestId(stream, 1);
  const [entry] = await entries(stream);
  expect(entry.id).toMatch(STREAM_ID);
  const frame = `event: greet\nid: ${entry.id}\ndata: {"hello":"all"}\n\n`;
  for (const c of cs) await c.waitFor((x) => x.body() === frame, 'the broadcast', LONG);
  await waitFor(() => es.got.length === 1, 'EventSource', LONG);
  expect(cs.map((c) => c.body())).toEqual([frame, frame, frame]);
  expect(es.got).toEqual([{ type: 'greet', id: entry.id, data: '{"hello":"all"}' }]);
  for (const inst of insts) {
    expect((await stats(inst)).bus).toMatchObject({ entriesRead: 1, entriesWritten: inst === insts[1] ? 1 : 0 });
  }
});

describe('replay across instances', () => {
  test(
    'a client that left A and reconnects to B with Last-Event-ID gets exactly what it missed, in order, ' +
      'before anything live, while both keep broadcasting',
    async () => {
      const stream = newStream();
      const a = await instance(stream);
      const b = await instance(stream, { TRANSPORT: 'stream' });
      const witnessA = raw(a, '/events?id=witness');
      const witnessB = raw(b, '/events?id=witness');
      await registered(a, 1);
      await registered(b, 1);
      const loops = [broadcastLoop(a, 'A'), broadcastLoop(b, 'B')];
      try {
        await waitFor(() => eventsOf(witnessA).length >= 20, 'some broadcasts first', LONG);
        const mover = raw(a, '/events?id=mover');
        await waitFor(() => eventsOf(mover).length >= 30, 'the mover receiving', LONG);
        mover.destroy();
        await mover.closed;
        const before = pairs(eventsOf(mover));
        const lastId = before.at(-1).id;

        // It misses some...
        const seenAt = () => pairs(eventsOf(witnessA)).findIndex((p) => p.id === lastId);
        await waitFor(() => seenAt() >= 0 && eventsOf(witnessA).length >= seenAt() + 40, 'missed broadcasts', LONG);
        // ...and comes back to B, broadcasts still going.
        const back = raw(b, '/events?id=mover', { 'Last-Event-ID': lastId });
        await waitFor(() => eventsOf(back).length >= 80, 'replay and live events', LONG);
        const sent = await Promise.all(loops.map((l) => l.stop()));
        expect(sent.every((n) => n > 0)).toBe(true);

        expect(await send(a, { payload: 'end' })).toBe(1);
        const end = { id: await newestId(stream, sent[0] + sent[1] + 1), data: '"end"' };
        for (const c of [witnessA, witnessB, back]) {
          await waitFor(() => pairs(eventsOf(c)).at(-1)?.id === end.id, 'the end marker', LONG);
        }

        const full = pairs(eventsOf(witnessA));
        expect(pairs(eventsOf(witnessB))).toEqual(full);
        expect(badIds(full.map((p) => p.id))).toEqual([]);
        const after = pairs(eventsOf(back));
        const from = full.findIndex((p) => p.id === before[0].id);
        expect(from).toBeGreaterThanOrEqual(0);
        // The union is the contiguous sequence: no gap, no duplicate, replay before live.
        expect([...before, ...after]).toEqual(full.slice(from));
        expect(after[0]).toEqual(full[full.findIndex((p) => p.id === lastId) + 1]);
        // B replayed the reconnection. A connection registered while its
        // instance was delivering entries is replayed them too (the position
        // rule), which on a loaded machine happens on either instance: the
        // counts are at least, never exactly.
        expect((await stats(b)).bus.replays).toBeGreaterThanOrEqual(1);
        for (const instance of [a, b]) expect((await stats(instance)).bus.resets).toBe(0);
      } finally {
        await Promise.all(loops.map((l) => l.stop()));
      }
    },
  );

  test(
    'an EventSource moved from A to B by A.drain() reconnects with its Last-Event-ID and misses nothing, ' +
      'while B keeps broadcasting',
    async () => {
      const stream = newStream();
      const a = await instance(stream);
      const b = await instance(stream, { TRANSPORT: 'stream' });
      const targets = [a.port, b.port];
      const proxy = await tcpProxy(targets);
      servers.push(proxy);
      const witness = raw(b, '/events?id=witness');
      await registered(b, 1);
      const mover = eventSource(`http://127.0.0.1:${proxy.port}/events?id=mover`);
      await registered(a, 1);
      // A registers the mover before its headers reach the client: wait
      // for the client's own open, then check it opened once.
      await waitFor(() => mover.opens() >= 1, 'the mover open on A', LONG);
      expect(mover.opens()).toBe(1);

      await post(a, '/broadcast-many', { count: 20, prefix: 'A' });
      const loop = broadcastLoop(b, 'B');
      let sent;
      try {
        await waitFor(() => mover.got.length >= 40, 'the mover receiving on A', LONG);
        // New connections go to B from now on; A hands its clients over.
        targets.splice(0, targets.length, b.port);
        expect(await post(a, '/drain', { retryMs: 50 })).toEqual({ status: 200, body: { ok: true } });
        expect(await a.exited).toEqual({ code: 0, signal: null });
        await waitFor(() => mover.opens() === 2, 'the reconnection to B', LONG);
        const atReconnect = mover.got.length;
        await waitFor(() => mover.got.length >= atReconnect + 30, 'live events on B', LONG);
        sent = await loop.stop();
      } finally {
        await loop.stop();
      }
      expect(await send(b, { payload: 'end' })).toBe(2);
      const endId = await newestId(stream, 20 + sent + 1);
      await waitFor(() => mover.got.at(-1)?.id === endId, 'the end marker (EventSource)', LONG);
      await waitFor(() => pairs(eventsOf(witness)).at(-1)?.id === endId, 'the end marker (witness)', LONG);

      const full = pairs(eventsOf(witness));
      const from = full.findIndex((p) => p.id === mover.got[0].id);
      expect(from).toBeGreaterThanOrEqual(0);
      expect(mover.got).toEqual(full.slice(from).map((p) => ({ type: 'message', ...p })));
      expect(mover.opens()).toBe(2);
      // At least the mover's replay (the position rule may replay another
      // connection registered while B delivered); never a reset.
      expect((await stats(b)).bus.replays).toBeGreaterThanOrEqual(1);
      expect((await stats(b)).bus.resets).toBe(0);
    },
  );
});

describe('event: reset', () => {
  test('an id trimmed from the stream (MAX_LEN 10) gets the exact reset frame first, then live events', async () => {
    const stream = newStream();
    const a = await instance(stream, { MAX_LEN: 10 });
    const witness = raw(a, '/events?id=witness');
    await registered(a, 1);
    // One at a time, so the reader keeps up with the trimming (a burst: the next test).
    for (let n = 0; n < 300; n++) await send(a, { payload: { n } });
    await waitFor(() => eventsOf(witness).length === 300, 'all 300', LONG);
    const seen = pairs(eventsOf(witness));
    expect(seen.map((p) => JSON.parse(p.data).n)).toEqual(Array.from({ length: 300 }, (_, n) => n));
    const firstId = seen[0].id;
    const newest = seen.at(-1).id;
    expect(newest).toBe(await newestId(stream, 300));
    // Precondition: trimmed (MAXLEN ~ may keep more than 10, but far fewer than 300).
    const held = await entries(stream);
    expect(held.length).toBeLessThan(150);
    expect(held.find((e) => e.id === firstId)).toBeUndefined();

    const reset = `event: reset\nid: ${newest}\ndata: null\n\n`;
    const stale = raw(a, '/events?id=stale', { 'Last-Event-ID': firstId });
    await stale.waitFor((x) => x.body().length >= reset.length, 'the reset', LONG);
    expect(stale.body()).toBe(reset);
    await registered(a, 2);
    expect(await send(a, { payload: 'live' })).toBe(2);
    const live = `id: ${await newestId(stream, 301)}\ndata: "live"\n\n`;
    await stale.waitFor((x) => x.body().endsWith(live), 'the live event', LONG);
    expect(stale.body()).toBe(reset + live);

    // The oldest id still held is replayed from.
    const oldest = held[0].id;
    const fromOldest = raw(a, '/events', { 'Last-Event-ID': oldest });
    const expected = [
      ...seen.slice(seen.findIndex((p) => p.id === oldest) + 1),
      { id: live.slice(4, live.indexOf('\n')), data: '"live"' },
    ];
    await waitFor(() => eventsOf(fromOldest).length >= expected.length, 'replay from the oldest held id', LONG);
    expect(pairs(eventsOf(fromOldest))).toEqual(expected);
    expect((await stats(a)).bus).toMatchObject({ resets: 1, replays: 1 });
  });

  test(
    'a reader that falls behind the trimming (a burst of 1,000 with MAX_LEN 10) does not skip entries ' +
      'silently: its client gets each of them, or event: reset where it lost some',
    async () => {
      const stream = newStream();
      const a = await instance(stream, { MAX_LEN: 10 });
      const witness = raw(a, '/events?id=witness');
      await registered(a, 1);
      await post(a, '/broadcast-many', { count: 1000, prefix: 'A' });
      const last = await newestId(stream, 1000);
      await waitFor(() => eventsOf(witness).some((e) => e.id === last), 'the last entry', LONG);
      // Where the numbers jump, the event before must be a reset.
      const gaps = [];
      let previous = null;
      for (const e of eventsOf(witness)) {
        if (e.event === 'reset') {
          previous = null;
          continue;
        }
        const { n } = JSON.parse(e.data);
        if (previous !== null && n !== previous + 1) gaps.push({ after: previous, next: n });
        previous = n;
      }
      expect(gaps).toEqual([]);
    },
  );

  test('ids never in the stream (1-1, garbage, one in the future) get the reset frame', async () => {
    const stream = newStream();
    const a = await instance(stream);
    await send(a, { payload: 1 });
    await send(a, { payload: 2 });
    const newest = await newestId(stream, 2);
    const witness = raw(a);
    await registered(a, 1);
    // Once the instance has delivered the newest entry, the reset carries its id.
    await send(a, { payload: 3 });
    const third = await newestId(stream, 3);
    await witness.waitFor((x) => x.body() === `id: ${third}\ndata: 3\n\n`, 'the third', LONG);
    expect(compareIds(newest, third)).toBeLessThan(0);

    const reset = `event: reset\nid: ${third}\ndata: null\n\n`;
    const future = `${BigInt(third.split('-')[0]) + 1000000n}-0`;
    const bad = ['1-1', 'garbage', future, '0-0'].map((id) => raw(a, '/events', { 'Last-Event-ID': id }));
    for (const c of bad) await c.waitFor((x) => x.body().length >= reset.length, 'a reset', LONG);
    expect(bad.map((c) => c.body())).toEqual([reset, reset, reset, reset]);
    expect((await stats(a)).bus).toMatchObject({ resets: 4, replays: 0 });
  });

  test('REPLAY_LIMIT 5: 20 or 6 missed get the reset frame, 5 missed are replayed', async () => {
    const stream = newStream();
    const a = await instance(stream, { REPLAY_LIMIT: 5 });
    const witness = raw(a, '/events?id=witness');
    await registered(a, 1);
    const seenCount = () => eventsOf(witness).length;
    const broadcastN = async (n, tag) => {
      const before = seenCount();
      for (let i = 0; i < n; i++) await send(a, { payload: { tag, i } });
      await waitFor(() => seenCount() === before + n, `${n} delivered`, LONG);
    };

    // Each delivered before the next step: the witness's last id is the stream's newest.
    const lastSeen = () => eventsOf(witness).at(-1).id;
    await broadcastN(1, 'start');
    const x = lastSeen();
    await broadcastN(20, 'twenty');
    const reset1 = `event: reset\nid: ${lastSeen()}\ndata: null\n\n`;
    const twenty = raw(a, '/events', { 'Last-Event-ID': x });
    await twenty.waitFor((c) => c.body().length >= reset1.length, 'reset for 20', LONG);
    expect(twenty.body()).toBe(reset1);

    const y = lastSeen();
    await broadcastN(5, 'five');
    const five = raw(a, '/events', { 'Last-Event-ID': y });
    const missed = pairs(eventsOf(witness).slice(-5));
    await waitFor(() => eventsOf(five).length >= 5, 'replay of 5', LONG);
    expect(pairs(eventsOf(five))).toEqual(missed);
    expect(five.body()).toBe(missed.map((p) => `id: ${p.id}\ndata: ${p.data}\n\n`).join(''));

    const z = lastSeen();
    await broadcastN(6, 'six');
    const reset2 = `event: reset\nid: ${lastSeen()}\ndata: null\n\n`;
    const six = raw(a, '/events', { 'Last-Event-ID': z });
    await six.waitFor((c) => c.body().length >= reset2.length, 'reset for 6', LONG);
    expect(six.body()).toBe(reset2);
    expect(await newestId(stream, 32)).toBe(lastSeen());
    expect((await stats(a)).bus).toMatchObject({ resets: 2, replays: 1 });
  });
});

test(
  'entries written by another program: malformed ones are skipped and counted, ' +
    'a well-formed one is delivered with its event name, retry and stream id',
  async () => {
    const stream = newStream();
    const a = await instance(stream);
    const b = await instance(stream, { TRANSPORT: 'stream' });
    const ca = raw(a);
    const cb = raw(b);
    await registered(a, 1);
    await registered(b, 1);

    const malformed = [
      ['kind', 'broadcast'], // no data
      ['data', '"no kind"'],
      ['kind', 'shout', 'data', '"unknown kind"'],
      ['kind', 'broadcast', 'event', 'a\nb', 'data', '"newline in event"'],
    ];
    for (const fields of malformed) await redis.command('XADD', stream, '*', ...fields);
    const good = await redis.command('XADD', stream, '*', 'kind', 'broadcast', 'event', 'news', 'data', '{"a":1}');
    const withRetry = await redis.command('XADD', stream, '*', 'kind', 'broadcast', 'data', '{"x":1}', 'retry', '1000');
    const expected = `event: news\nid: ${good}\ndata: {"a":1}\n\nid: ${withRetry}\nretry: 1000\ndata: {"x":1}\n\n`;
    for (const c of [ca, cb]) await c.waitFor((x) => x.body().length >= expected.length, 'the good entries', LONG);
    expect([ca.body(), cb.body()]).toEqual([expected, expected]);
    for (const inst of [a, b]) {
      expect((await stats(inst)).bus).toMatchObject({ malformed: 4, entriesWritten: 0 });
    }
    // Still delivering after them.
    expect(await send(a, { payload: 'after' })).toBe(1);
    const after = `id: ${await newestId(stream, 7)}\ndata: "after"\n\n`;
    await cb.waitFor((x) => x.body() === expected + after, 'a broadcast after them', LONG);
    expect(cb.body()).toBe(expected + after);
  },
);

test('globalClientCount sums every instance; a SIGKILLed instance drops out of it', async () => {
  const stream = newStream();
  const a = await instance(stream);
  const b = await instance(stream, { TRANSPORT: 'stream' });
  raw(a);
  raw(a);
  const leaving = raw(b);
  raw(b);
  raw(b);
  await registered(a, 2);
  await registered(b, 3);
  const countsAre = async (inst, expected, what) => {
    const deadline = Date.now() + LONG;
    let last;
    for (;;) {
      last = await get(inst, '/count');
      if (last.global === expected.global) break;
      if (Date.now() > deadline) break;
      await delay(100);
    }
    expect({ what, ...last }).toEqual({ what, ...expected });
  };
  await countsAre(a, { local: 2, global: 5 }, 'A, all connected');
  await countsAre(b, { local: 3, global: 5 }, 'B, all connected');

  leaving.destroy();
  await registered(b, 2);
  await countsAre(a, { local: 2, global: 4 }, 'A, one left B');

  expect(await b.kill()).toEqual({ code: null, signal: 'SIGKILL' });
  // Its presence key expires (TTL ~10 s): the deadline is generous, nothing is timed.
  await countsAre(a, { local: 2, global: 2 }, 'A, B killed');
  const keys = await redis.command('KEYS', `${stream}:presence:*`);
  expect(keys).toHaveLength(1);
});

describe('in-process hub with a bus', () => {
  /** A hub on this file's Redis behind a real server whose /events registers (id, channel) from the query. */
  async function hubWithServer(stream) {
    const hub = new SseHub();
    hubs.push(hub);
    hub.configure({ redis: { url: redis.url, stream } });
    await hub.ready();
    const srv = await startServer((app) => {
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        hub.addClient(req.query.id ?? null, res);
        if (req.query.channel) hub.join(res, req.query.channel);
      });
    });
    servers.push(srv);
    return { hub, srv };
  }

  test('metrics() has the sse_bus_* families with the values of getStats().bus', async () => {
    const stream = newStream();
    const { hub, srv } = await hubWithServer(stream);
    const c = rawGet(srv.port, '/events?id=one');
    clients.push(c);
    await waitFor(() => hub.getClientCount() === 1, 'registered', LONG);
    expect(hub.broadcast(1)).toBe(1);
    expect(hub.broadcast(2)).toBe(1);
    await redis.command('XADD', stream, '*', 'kind', 'broadcast'); // malformed
    await redis.command('XADD', stream, '*', 'kind', 'broadcast', 'data', '3');
    await c.waitFor((x) => eventsOf(x).length === 3, 'three events', LONG);
    const [first] = pairs(eventsOf(c));
    const replayed = rawGet(srv.port, '/events', { 'Last-Event-ID': first.id });
    const reset = rawGet(srv.port, '/events', { 'Last-Event-ID': 'garbage' });
    clients.push(replayed, reset);
    await replayed.waitFor((x) => eventsOf(x).length === 2, 'replay', LONG);
    await reset.waitFor((x) => eventsOf(x).length === 1, 'reset', LONG);

    const bus = hub.getStats().bus;
    expect(bus).toEqual({
      state: 'connected',
      entriesWritten: 2,
      entriesRead: expect.any(Number),
      reconnects: 0,
      replays: 1,
      resets: 1,
      malformed: 1,
      localFallbacks: 0,
    });
    expect(bus.entriesRead).toBeGreaterThanOrEqual(3);

    const expected = {
      sse_bus_connected: 1,
      sse_bus_entries_written_total: bus.entriesWritten,
      sse_bus_entries_read_total: bus.entriesRead,
      sse_bus_reconnects_total: bus.reconnects,
      sse_bus_replays_total: bus.replays,
      sse_bus_resets_total: bus.resets,
      sse_bus_malformed_total: bus.malformed,
      sse_bus_local_fallbacks_total: bus.localFallbacks,
    };
    const text = parsePrometheus(hub.metrics());
    const busText = Object.fromEntries(
      text
        .filter((f) => f.name.startsWith('sse_bus_'))
        .map((f) => [f.name, [f.type, f.metrics.map((m) => Number(m.value))]]),
    );
    expect(busText).toEqual(
      Object.fromEntries(
        Object.entries(expected).map(([name, v]) => [name, [name === 'sse_bus_connected' ? 'GAUGE' : 'COUNTER', [v]]]),
      ),
    );
    const json = hub.metrics({ format: 'json' }).filter((f) => f.name.startsWith('sse_bus_'));
    expect(Object.fromEntries(json.map((f) => [f.name, f.values.map((v) => v.value)]))).toEqual(
      Object.fromEntries(Object.entries(expected).map(([name, v]) => [name, [v]])),
    );
    // A hub without a bus has none of them.
    const plain = new SseHub();
    expect(plain.getStats().bus).toBeNull();
    expect(plain.metrics()).not.toMatch(/sse_bus_/);
    await plain.close();
  });

  test("close() closes the hub's Redis connections and the bus state is 'closed'", async () => {
    const list = async () => {
      const text = await redis.command('CLIENT', 'LIST');
      return new Set(
        text
          .split('\n')
          .filter((line) => line && !/ cmd=client\|list /.test(` ${line} `))
          .map((line) => /(?:^| )id=(\d+)/.exec(line)[1]),
      );
    };
    const baseline = await list();
    const hub = new SseHub();
    hubs.push(hub);
    hub.configure({ redis: { url: redis.url, stream: newStream() } });
    await hub.ready();
    hub.broadcast('something');
    await waitFor(() => hub.getStats().bus.entriesRead === 1, 'read back', LONG);
    const during = await list();
    const mine = [...during].filter((id) => !baseline.has(id));
    expect(mine.length).toBeGreaterThan(0);

    await hub.close();
    const after = await list();
    expect(mine.filter((id) => after.has(id))).toEqual([]);
    expect([...after].filter((id) => !baseline.has(id))).toEqual([]);
    expect(hub.getStats().bus.state).toBe('closed');
    expect(hub.metrics()).toMatch(/^sse_bus_connected 0$/m);
    await expect(hub.globalClientCount()).rejects.toThrow();
  });
});

describe('configure({ redis })', () => {
  test('validation: the URL scheme, maxLen, a second bus', async () => {
    const hub = new SseHub();
    hubs.push(hub);
    expect(outcome(() => hub.configure({ redis: 'http://x' }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.redis.url'),
    );
    expect(outcome(() => hub.configure({ redis: { url: redis.url, maxLen: 0 } }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.redis.maxLen'),
    );
    expect(hub.getStats().bus).toBeNull();

    hub.configure({ redis: { url: redis.url, stream: newStream() } });
    await hub.ready();
    expect(outcome(() => hub.configure({ redis: redis.url }))).toEqual({
      threw: 'Error',
      code: 'ERR_SSE_BUS_RUNNING',
      message: expect.any(String),
    });
    expect(hub.getStats().bus.state).toBe('connected');
  });

  test(
    "a hub whose Redis is not there emits 'bus' disconnected (no 'error', no unhandled rejection) " +
      'and delivers locally, without an id, counting localFallbacks',
    async () => {
      const realProcess = vm.runInThisContext('process');
      const rejections = [];
      const onRejection = (reason) => rejections.push(reason);
      realProcess.on('unhandledRejection', onRejection);
      try {
        const port = await freePort();
        const hub = new SseHub();
        hubs.push(hub);
        const busEvents = [];
        const errors = [];
        hub.on('bus', (e) => busEvents.push(e));
        hub.on('error', (e) => errors.push(e));
        hub.configure({ redis: { url: `redis://127.0.0.1:${port}`, stream: newStream() } });
        let ready = false;
        let readyError;
        hub.ready().then(
          () => {
            ready = true;
          },
          (err) => {
            readyError = err;
          },
        );
        await waitFor(() => busEvents.length > 0, "the 'bus' event", LONG);
        expect(busEvents[0]).toEqual({ state: 'disconnected', error: expect.any(Error) });
        expect(busEvents[0].error.message).not.toBe('');
        expect(hub.getStats().bus.state).toBe('disconnected');

        const srv = await startServer((app) => {
          app.get('/events', (req, res) => {
            hub.initResponse(res);
            hub.addClient(req.query.id ?? null, res);
            if (req.query.channel) hub.join(res, req.query.channel);
          });
        });
        servers.push(srv);
        const c = rawGet(srv.port, '/events?id=me&channel=room');
        clients.push(c);
        await waitFor(() => hub.getClientCount() === 1, 'registered', LONG);
        expect(hub.broadcast('everyone')).toBe(1);
        expect(hub.publish('room', 'room')).toBe(1);
        expect(hub.sendToClient('me', 'me')).toBe(true);
        const expected = 'data: "everyone"\n\ndata: "room"\n\ndata: "me"\n\n';
        await c.waitFor((x) => x.body().length >= expected.length, 'local deliveries', LONG);
        expect(c.body()).toBe(expected);
        expect(hub.getStats().bus).toMatchObject({ state: 'disconnected', localFallbacks: 3, entriesWritten: 0 });

        // Retries (backoff) meanwhile: still one 'disconnected' for this outage, and nothing else.
        await delay(1000);
        await Promise.resolve();
        expect(busEvents.map((e) => e.state)).toEqual(['disconnected']);
        expect(errors).toEqual([]);
        expect(ready).toBe(false);
        await hub.close();
        expect(hub.getStats().bus.state).toBe('closed');
        // Closed before Redis was ever reached: ready() rejects, handled here.
        await waitFor(() => readyError !== undefined, 'ready() settled', LONG);
        expect({ ready, code: readyError.code }).toEqual({ ready: false, code: 'ERR_SSE_CLOSED' });
        expect(rejections).toEqual([]);
      } finally {
        realProcess.off('unhandledRejection', onRejection);
      }
    },
  );
});

describe('an instance cut off from Redis', () => {
  test(
    'delivers locally meanwhile (no id, localFallbacks), then resumes from its last id: the entries others ' +
      'wrote meanwhile arrive in order; if they were trimmed meanwhile its clients get event: reset',
    async () => {
      const stream = newStream();
      const link = await cuttableProxy(redis.port);
      const a = await instance(stream, { REDIS_URL: link.url });
      const b = await instance(stream);
      const trimmer = await instance(stream, { MAX_LEN: 10 });
      const witness = raw(a, '/events?id=witness');
      await registered(a, 1);
      const frameOf = (id, data) => `id: ${id}\ndata: ${JSON.stringify(data)}\n\n`;

      await send(b, { payload: 'before' });
      let expected = frameOf(await newestId(stream, 1), 'before');
      await witness.waitFor((x) => x.body() === expected, 'before', LONG);

      // First outage: nothing trimmed.
      link.cut();
      await busState(a, 'disconnected');
      expect(await send(a, { payload: 'local' })).toBe(1);
      expected += 'data: "local"\n\n';
      await witness.waitFor((x) => x.body() === expected, 'the local fallback', LONG);
      for (let i = 0; i < 5; i++) await send(b, { payload: `missed ${i}` });
      await newestId(stream, 6);
      const missed = (await entries(stream)).slice(-5);
      link.heal();
      await busState(a, 'connected');
      await send(b, { payload: 'after' });
      const afterId = await newestId(stream, 7);
      expected += missed.map((e) => frameOf(e.id, JSON.parse(e.fields.data))).join('') + frameOf(afterId, 'after');
      await witness.waitFor((x) => x.body().endsWith(frameOf(afterId, 'after')), 'after the first outage', LONG);
      expect(witness.body()).toBe(expected);

      // Second outage: what it had not read is trimmed meanwhile.
      link.cut();
      await busState(a, 'disconnected');
      for (let n = 0; n < 300; n++) await send(trimmer, { payload: { n } });
      await newestId(stream, 307);
      const held = await entries(stream);
      expect(held.length).toBeLessThan(150);
      expect(held.find((e) => e.id === afterId)).toBeUndefined();
      link.heal();
      await busState(a, 'connected');
      await send(b, { payload: 'live' });
      const liveId = await newestId(stream, 308);
      await witness.waitFor((x) => x.body().includes(frameOf(liveId, 'live')), 'after the second outage', LONG);
      const rest = witness.body().slice(expected.length);
      expect(framesOf(rest)[0]).toBe('event: reset\ndata: null');
      const restIds = framesOf(rest)
        .map(parseFrame)
        .filter((e) => e.event !== 'reset')
        .map((e) => e.id);
      expect(badIds(restIds)).toEqual([]);
      expect(restIds.at(-1)).toBe(liveId);
      expect((await stats(a)).bus).toMatchObject({ reconnects: 2, localFallbacks: 1, resets: 1 });
    },
  );
});
