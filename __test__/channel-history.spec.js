// Channel history (channelHistorySize): publishes get ids from the hub's one
// sequence and are kept per channel, so a member that reconnects with
// Last-Event-ID, rejoining its channels through addClient's `channels`,
// gets every broadcast and every message of its channels that it missed,
// merged in the order they were sent, once each, before anything live; or
// `event: reset` when a channel's ring let go of what it missed. Exact bytes
// on real sockets, on both transports; the position handoff; filtered
// broadcasts and sendToClient stay unrecorded; a storm of reconnections.

const { waitFor, framesOf } = require('./helpers.js');
const { sseFixture } = require('./hub-fixture.js');

let hub;
const { startServer, sseRoute, connect } = sseFixture((t) => {
  ({ hub } = t);
});

/** The SSE route: `?id=` the client id, `?ch=a,b` its channels, `?from=` a lastEventId. */
async function serveChannels() {
  await startServer((app) =>
    sseRoute(app, (req, res) => {
      const options = {};
      if (req.query.ch) options.channels = String(req.query.ch).split(',');
      if (req.query.from) options.lastEventId = String(req.query.from);
      hub.addClient(req.query.id ?? null, res, null, options);
    }),
  );
}

/** Parsed frames of a raw client's body: [{ id, event, data }]. */
const events = (c) =>
  framesOf(c.body())
    .filter((f) => !f.startsWith(':'))
    .map((f) => {
      const out = {};
      for (const line of f.split('\n')) {
        const at = line.indexOf(': ');
        out[line.slice(0, at)] = line.slice(at + 2);
      }
      return out;
    });

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  beforeEach(() => {
    hub.configure({ transport, historySize: 20, channelHistorySize: 20, heartbeatMs: 0 });
  });

  test('a member that reconnects gets the broadcasts and its channel messages it missed, in order, exact bytes', async () => {
    await serveChannels();
    const from = hub.position();
    hub.broadcast({ n: 1 });
    hub.publish('room', { n: 2 });
    hub.publish('other', { n: 3 });
    hub.broadcast({ n: 4 });
    hub.publish('room', 'five', { event: 'chat' });
    const epoch = from.split(':')[0];
    const { c } = await connect(`/events?id=m&ch=room&from=${from}`);
    await c.waitFor((x) => x.body().includes('"five"'), 'the replay');
    hub.publish('room', { live: true });
    await c.waitFor((x) => x.body().includes('"live"'), 'the live publish');
    expect(c.body()).toBe(
      `id: ${epoch}:1\ndata: {"n":1}\n\n` +
        `id: ${epoch}:2\ndata: {"n":2}\n\n` +
        `id: ${epoch}:4\ndata: {"n":4}\n\n` +
        `event: chat\nid: ${epoch}:5\ndata: "five"\n\n` +
        `id: ${epoch}:6\ndata: {"live":true}\n\n`,
    );
    if (transport === 'auto') expect(hub.getStats().socketConnections).toBe(1);
    expect(hub.getStats().replays).toBe(1);
  });

  test('a member of two channels gets both, merged; a non-member of a channel gets none of it', async () => {
    await serveChannels();
    const from = hub.position();
    hub.publish('a', 'a1');
    hub.publish('b', 'b1');
    hub.broadcast('all');
    hub.publish('c', 'c1');
    hub.publish('a', 'a2');
    const both = (await connect(`/events?id=x&ch=a,b&from=${from}`)).c;
    const none = (await connect(`/events?id=y&from=${from}`)).c;
    await both.waitFor((x) => x.body().includes('"a2"'), 'both replayed');
    await none.waitFor((x) => x.body().includes('"all"'), 'none replayed');
    expect(events(both).map((e) => e.data)).toEqual(['"a1"', '"b1"', '"all"', '"a2"']);
    expect(events(none).map((e) => e.data)).toEqual(['"all"']);
    // Ids strictly increase along the merged replay.
    const counters = events(both).map((e) => Number(e.id.split(':')[1]));
    expect(counters).toEqual([...counters].sort((p, q) => p - q));
  });

  test("one channel's ring wrapped past what the member missed: event: reset, then live", async () => {
    hub.configure({ channelHistorySize: 2 });
    await serveChannels();
    const from = hub.position();
    for (let i = 1; i <= 3; i++) hub.publish('room', `m${i}`);
    const { c } = await connect(`/events?ch=room&from=${from}`);
    await c.waitFor((x) => x.body().includes('reset'), 'the reset');
    const newest = hub.position();
    expect(c.body()).toBe(`event: reset\nid: ${newest}\ndata: null\n\n`);
    // From the reset's id on, nothing is missed.
    const again = (await connect(`/events?ch=room&from=${newest}`)).c;
    hub.publish('room', 'after');
    await again.waitFor((x) => x.body().includes('"after"'), 'live after the reset');
    expect(events(again).map((e) => e.data)).toEqual(['"after"']);
    // Not a member of the wrapped channel: the broadcasts' history is whole.
    const outsider = (await connect(`/events?from=${from}`)).c;
    hub.broadcast('b');
    await outsider.waitFor((x) => x.body().includes('"b"'), 'the broadcast');
    expect(events(outsider).map((e) => e.data)).toEqual(['"b"']);
    expect(hub.getStats().resets).toBe(1);
  });

  test('the position handoff: what is published between render and subscribe arrives, once', async () => {
    await serveChannels();
    hub.publish('room', 'before render');
    const rendered = hub.position();
    hub.publish('room', 'between');
    hub.broadcast('between too');
    const { c } = await connect(`/events?ch=room&from=${rendered}`);
    await c.waitFor((x) => x.body().includes('"between too"'), 'the replay');
    hub.publish('room', 'live');
    await c.waitFor((x) => x.body().includes('"live"'), 'live');
    expect(events(c).map((e) => e.data)).toEqual(['"between"', '"between too"', '"live"']);
  });

  test('filtered broadcasts and sendToClient are not recorded; with channel history off, publishes have no id', async () => {
    await serveChannels();
    const from = hub.position();
    hub.broadcast('filtered', { filter: () => true });
    hub.sendToClient('nobody', 'direct');
    hub.publish('room', 'kept');
    const { c } = await connect(`/events?ch=room&from=${from}`);
    await c.waitFor((x) => x.body().includes('"kept"'), 'the replay');
    expect(events(c).map((e) => e.data)).toEqual(['"kept"']);
    hub.configure({ channelHistorySize: 0 });
    hub.publish('room', 'unkept');
    await c.waitFor((x) => x.body().includes('"unkept"'), 'the live publish');
    expect(c.body().endsWith('data: "unkept"\n\n')).toBe(true);
    expect(events(c).at(-1).id).toBeUndefined();
  });

  test('a storm: 200 members reconnect at once from the same id, each gets the same replay once, then live', async () => {
    await serveChannels();
    const from = hub.position();
    for (let i = 0; i < 20; i++) {
      if (i % 2) hub.publish('room', { i });
      else hub.broadcast({ i });
    }
    const clients = await Promise.all(
      Array.from({ length: 200 }, (_, k) => connect(`/events?id=s${k}&ch=room&from=${from}`).then((x) => x.c)),
    );
    hub.broadcast('live');
    for (const c of clients) await c.waitFor((x) => x.body().includes('"live"'), 'live after the replay', 20_000);
    const expected = [...Array.from({ length: 20 }, (_, i) => JSON.stringify({ i })), '"live"'];
    for (const c of clients) expect(events(c).map((e) => e.data)).toEqual(expected);
    expect(hub.getStats().replays).toBe(200);
    await waitFor(() => hub.getStats().queuedBytes === 0, 'queues empty');
  });
});

test('options: channelHistorySize and channels are checked', () => {
  expect(() => hub.configure({ channelHistorySize: -1 })).toThrow(
    expect.objectContaining({
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringMatching(/^options\.channelHistorySize /),
    }),
  );
  expect(() => hub.configure({ channelHistorySize: '5' })).toThrow(
    expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
  );
  const res = { write() {}, end() {}, on() {}, once() {}, writableEnded: false };
  expect(() => hub.addClient('id', res, null, { channels: 'room' })).toThrow(
    expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/^options\.channels /) }),
  );
  expect(() => hub.addClient('id', res, null, { channels: ['ok', 5] })).toThrow(
    expect.objectContaining({
      code: 'ERR_INVALID_ARG_TYPE',
      message: expect.stringMatching(/^options\.channels\[1\] /),
    }),
  );
});
