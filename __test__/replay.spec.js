// Replay history: what a reconnecting client missed, by its Last-Event-ID
// header or the explicit lastEventId option; "event: reset" when the id is no
// longer held; which events are numbered and kept; history memory bounded by
// historySize; and a replay bounded by maxBufferedBytes (issue 9, D6).

const { SseHub } = require('..');
const { sseFixture } = require('./hub-fixture.js');
const { FakeResponse, waitFor, delay, collectGarbage, framesOf } = require('./helpers.js');

const KiB = 1024;

/** `id(n)`: the id of the hub's n-th generated event (`<epoch>:<n>`), from its position before any. */
function idsOf(hub) {
  const [epoch] = hub.position().split(':');
  return (n) => `${epoch}:${n}`;
}

let hub;
const { serve, client, connect, openEventSource, responses } = sseFixture((t) => {
  ({ hub } = t);
});

describe('replay history (Last-Event-ID)', () => {
  test.each([
    ['removeClient', (res) => hub.removeClient(res)],
    ['a destroyed socket', (res) => res.socket.destroy()],
  ])(
    'an EventSource that reconnects after %s gets what it missed, then live events: no gap, no duplicate',
    async (_name, drop) => {
      hub.configure({ historySize: 100 });
      const id = idsOf(hub);
      const lastEventIds = [];
      await serve((req, res) => {
        lastEventIds.push(req.headers['last-event-id']);
        hub.addClient(res);
      });
      let connects = 0;
      hub.on('connect', () => {
        // Right after the reconnection registered: must come after the replay.
        if (++connects === 2) hub.broadcast({ n: 6 });
      });
      const { es, opened } = openEventSource();
      const got = [];
      es.onmessage = (e) => got.push({ n: JSON.parse(e.data).n, lastEventId: e.lastEventId });
      await opened;
      await waitFor(() => hub.getClientCount() === 1, 'registered');
      hub.broadcast({ n: 1 }, { retry: 50 });
      hub.broadcast({ n: 2 });
      hub.broadcast({ n: 3 });
      await waitFor(() => got.length === 3, 'first three');
      drop(responses[0]);
      await waitFor(() => hub.getClientCount() === 0, 'dropped');
      expect(hub.broadcast({ n: 4 })).toBe(0);
      expect(hub.broadcast({ n: 5 })).toBe(0);
      await waitFor(() => got.length === 6, 'replay and the event after it', 10_000);
      hub.broadcast({ n: 7 });
      await waitFor(() => got.length === 7, 'live event');
      expect(got).toEqual([1, 2, 3, 4, 5, 6, 7].map((n) => ({ n, lastEventId: id(n) })));
      expect(lastEventIds).toEqual([undefined, id(3)]);
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 0, clients: 1 });
    },
  );

  test.each(['auto', 'stream'])(
    'transport %s: the exact replay bytes, and an id no longer in history gets "event: reset" with the newest id',
    async (transport) => {
      hub.configure({ historySize: 3, transport });
      const id = idsOf(hub);
      await serve();
      for (let n = 1; n <= 10; n++) expect(hub.broadcast(n)).toBe(0);
      // 8, 9, 10 are held; a client that saw 7 missed exactly those.
      const seven = await connect('/events', { 'Last-Event-ID': id(7) });
      const replay = [8, 9, 10].map((n) => `id: ${id(n)}\ndata: ${n}\n\n`).join('');
      await seven.c.waitFor((x) => x.body() === replay, 'replay');
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 0 });
      const reset = `event: reset\nid: ${id(10)}\ndata: null\n\n`;
      // '7': the bare counter, as another life's id would end.
      for (const lastId of [id(6), id(2), 'bogus', id(11), '7']) {
        const { c } = await connect('/events', { 'Last-Event-ID': lastId });
        await c.waitFor((x) => x.body() === reset, `reset for ${lastId}`);
      }
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 5 });
      // A client that is up to date gets nothing replayed, then live events.
      const current = await connect('/events', { 'Last-Event-ID': id(10) });
      await waitFor(() => hub.getClientCount() === 7, 'registered');
      hub.broadcast('live');
      await current.c.waitFor((x) => x.body() === `id: ${id(11)}\ndata: "live"\n\n`, 'live only');
      await seven.c.waitFor(
        (x) => x.body().endsWith(`id: ${id(10)}\ndata: 10\n\nid: ${id(11)}\ndata: "live"\n\n`),
        'live after replay',
      );
    },
  );

  test('the explicit { lastEventId } option, in both addClient forms, wins over the header', async () => {
    hub.configure({ historySize: 10 });
    const id = idsOf(hub);
    await serve((req, res) => {
      const options = req.query.from === undefined ? undefined : { lastEventId: req.query.from };
      if (req.query.id) hub.addClient(req.query.id, res, { m: 1 }, options);
      else hub.addClient(res, { m: 1 }, options);
    });
    for (let n = 1; n <= 5; n++) hub.broadcast({ n });
    const byRes = await connect(`/events?from=${id(3)}`, { 'Last-Event-ID': id(1) });
    const byId = await connect(`/events?id=me&from=${id(4)}`, { 'Last-Event-ID': id(1) });
    const byHeader = await connect('/events?id=other', { 'Last-Event-ID': id(2) });
    const frame = (n) => `id: ${id(n)}\ndata: {"n":${n}}\n\n`;
    await byRes.c.waitFor((x) => x.body() === frame(4) + frame(5), 'from 3');
    await byId.c.waitFor((x) => x.body() === frame(5), 'from 4');
    await byHeader.c.waitFor((x) => framesOf(x.body()).length === 3, 'from 2');
    expect(hub.getStats().replays).toBe(3);
    const fake = new FakeResponse();
    expect(() => hub.addClient(fake, null, { lastEventId: 5 })).toThrow(/^options.lastEventId must be a string/);
    expect(() => hub.addClient('id', fake, null, { lastEventId: {} })).toThrow(TypeError);
    expect(hub.getClientCount()).toBe(3);
  });

  test("an id from another life of the hub (a restart, another process) gets a reset, never that life's later events", async () => {
    hub.configure({ historySize: 100 });
    const id = idsOf(hub);
    await serve();
    // The previous life numbered its events the same way, 1 to 10.
    const previous = new SseHub().configure({ historySize: 100, heartbeatMs: 0 });
    const old = idsOf(previous);
    for (let n = 1; n <= 10; n++) {
      previous.broadcast(n);
      hub.broadcast(n);
    }
    await previous.close();
    expect(old(7)).not.toBe(id(7));
    const { c } = await connect('/events', { 'Last-Event-ID': old(7) });
    await c.waitFor((x) => x.body() === `event: reset\nid: ${id(10)}\ndata: null\n\n`, 'the reset');
    expect(hub.getStats()).toMatchObject({ replays: 0, resets: 1 });
  });

  test('position(): a page rendered at a position and subscribed from it gets exactly what came after', async () => {
    hub.configure({ historySize: 10 });
    await serve((req, res) => {
      hub.addClient(res, null, { lastEventId: req.query.from });
    });
    // Before any event: this life's start, from which everything is replayed.
    const start = hub.position();
    expect(start).toMatch(/^[a-z][a-z0-9]{7}:0$/);
    hub.broadcast('before render');
    const rendered = hub.position();
    expect(rendered).toBe(`${start.split(':')[0]}:1`);
    // A broadcast lands between the render and the subscription.
    hub.broadcast('between');
    const fromStart = await connect(`/events?from=${encodeURIComponent(start)}`);
    const page = await connect(`/events?from=${encodeURIComponent(rendered)}`);
    await waitFor(() => hub.getClientCount() === 2, 'both registered');
    hub.broadcast('live');
    const id = idsOf(hub);
    const frame = (n, text) => `id: ${id(n)}\ndata: "${text}"\n\n`;
    await page.c.waitFor((x) => x.body() === frame(2, 'between') + frame(3, 'live'), 'between, then live');
    await fromStart.c.waitFor(
      (x) => x.body() === frame(1, 'before render') + frame(2, 'between') + frame(3, 'live'),
      'everything',
    );
    // History off: nothing can be replayed, so no position.
    hub.configure({ historySize: 0 });
    expect(hub.position()).toBeNull();
  });

  test('without history a Last-Event-ID header is ignored and broadcasts carry no id', async () => {
    await serve();
    hub.broadcast(1);
    const { c } = await connect('/events', { 'Last-Event-ID': '1' });
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    hub.broadcast(2);
    await c.waitFor((x) => x.body() === 'data: 2\n\n', 'live only');
    expect(hub.getStats()).toMatchObject({ replays: 0, resets: 0 });
  });

  test('generated ids strictly increase; only broadcasts to everyone are numbered and kept', async () => {
    hub.configure({ historySize: 100 });
    const id = idsOf(hub);
    await serve((req, res) => {
      hub.addClient(req.query.id ?? null, res, { role: req.query.role });
      hub.join(res, 'room');
    });
    const { c, res } = await connect('/events?id=watcher&role=admin');
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    hub.broadcast('a');
    hub.broadcast('b', { event: 'e' });
    hub.publish('room', 'in room');
    hub.broadcast('filtered', { filter: () => true });
    hub.send(res, 'direct');
    hub.sendToClient('watcher', 'to id');
    hub.broadcast('custom', { id: 'custom-1' });
    hub.broadcast('c');
    const expected = [
      `id: ${id(1)}\ndata: "a"\n\n`,
      `event: e\nid: ${id(2)}\ndata: "b"\n\n`,
      'data: "in room"\n\n',
      'data: "filtered"\n\n',
      'data: "direct"\n\n',
      'data: "to id"\n\n',
      'id: custom-1\ndata: "custom"\n\n',
      `id: ${id(3)}\ndata: "c"\n\n`,
    ];
    await c.waitFor((x) => x.body() === expected.join(''), 'frames');
    // A reconnection from 1 replays the kept events only, with their fields.
    const again = await connect('/events', { 'Last-Event-ID': id(1) });
    await again.c.waitFor((x) => x.body() === [expected[1], expected[6], expected[7]].join(''), 'replay');
    // A reconnection from the app's own id works too.
    const fromCustom = await connect('/events', { 'Last-Event-ID': 'custom-1' });
    await fromCustom.c.waitFor((x) => x.body() === expected[7], 'replay from custom id');

    for (let i = 0; i < 300; i++) hub.broadcast(i);
    await c.waitFor((x) => framesOf(x.body()).length === expected.length + 300, 'many');
    const ids = framesOf(c.body())
      .map((f) => /^id: [a-z][a-z0-9]{7}:(\d+)$/m.exec(f)?.[1])
      .filter(Boolean)
      .map(Number);
    expect(ids).toHaveLength(303);
    for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeGreaterThan(ids[i - 1]);
  });

  test('history memory is bounded by historySize', async () => {
    hub.configure({ historySize: 3 });
    const id = idsOf(hub);
    await serve();
    const blob = 'h'.repeat(64 * 1024);
    for (let n = 1; n <= 200; n++) hub.broadcast({ n, blob });
    await collectGarbage();
    const before = process.memoryUsage().rss;
    // 256 MiB of frames if history kept them all.
    for (let n = 201; n <= 4200; n++) hub.broadcast({ n, blob });
    await collectGarbage();
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 1024 * 1024);
    const { c } = await connect('/events', { 'Last-Event-ID': id(4197) });
    await c.waitFor((x) => framesOf(x.body()).length === 3, 'replay');
    expect(framesOf(c.body()).map((f) => JSON.parse(f.split('\ndata: ')[1]).n)).toEqual([4198, 4199, 4200]);
    const old = await connect('/events', { 'Last-Event-ID': id(4196) });
    const reset = `event: reset\nid: ${id(4200)}\ndata: null\n\n`;
    await old.c.waitFor((x) => x.body() === reset, 'reset');
    // Shrinking the history drops the oldest at once.
    hub.configure({ historySize: 1 });
    const shrunk = await connect('/events', { 'Last-Event-ID': id(4198) });
    await shrunk.c.waitFor((x) => x.body() === reset, 'reset after shrink');
    for (const bad of [-1, 1.5, 1_000_001, '3']) expect(() => hub.configure({ historySize: bad })).toThrow(TypeError);
  });
});

describe('replay bound (D6)', () => {
  test.each(['auto', 'stream'])(
    'transport %s: missed events past maxBufferedBytes get one "event: reset"; a replay that fits arrives whole before anything live',
    async (transport) => {
      const BOUND = 64 * KiB;
      hub.configure({ transport, historySize: 100, maxBufferedBytes: BOUND });
      const id = idsOf(hub);
      await serve();
      const blob = 'r'.repeat(8 * KiB);
      const frames = [''];
      for (let n = 1; n <= 100; n++) {
        expect(hub.broadcast({ n, blob })).toBe(0);
        frames.push(`id: ${id(n)}\ndata: ${JSON.stringify({ n, blob })}\n\n`);
      }
      const reset = `event: reset\nid: ${id(100)}\ndata: null\n\n`;
      // Missed 2..100: about 800 KiB, far past the bound. This client does not read yet.
      const far = client('/events', { 'Last-Event-ID': id(1) });
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
      const near = client('/events', { 'Last-Event-ID': id(96) });
      await waitFor(() => hub.getClientCount() === 2, 'near registered');
      const live = `id: ${id(101)}\ndata: {"live":true}\n\n`;
      await near.waitFor((x) => x.body() === frames.slice(97).join('') + live, 'replay then live', 3000);
      await far.waitFor((x) => x.body() === reset + live, 'live after the reset', 3000);
      expect(hub.getStats()).toMatchObject({ replays: 1, resets: 1, slowDisconnects: 0 });
    },
  );
});
