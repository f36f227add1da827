// Replays coalesce (issue 27): in a reconnect storm, clients that come back
// from the same Last-Event-ID with the same channels while the history does
// not change share one read of it, and on the stream transport one JS value
// of its bytes; any change (a broadcast landing mid-storm) starts another.
// Real sockets, both transports: every client gets exactly its own replay,
// the mid-storm broadcast once (in its replay or live), then live events;
// the shared values are let go of once the history moves on.

const { sseFixture } = require('./hub-fixture.js');

let hub;
const { startServer, sseRoute, client } = sseFixture((t) => {
  ({ hub } = t);
});

const N = 300;
const HISTORY = 30;

/** The route: `?ch=a,b` its channels; Last-Event-ID from the header. */
async function serveChannels() {
  await startServer((app) =>
    sseRoute(app, (req, res) => {
      const channels = req.query.ch ? String(req.query.ch).split(',') : [];
      hub.addClient(res, null, { channels });
    }),
  );
}

/** Event n of the history: a broadcast, or a publish to room or other. */
const channelOf = (n) => [null, 'room', 'other'][n % 3];

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  test(`${N} clients reconnect from the same ids with a broadcast mid-storm: exact bytes each, shared reads, values let go of`, async () => {
    hub.configure({ transport, historySize: 1000, channelHistorySize: 100, heartbeatMs: 0 });
    await serveChannels();
    const [epoch] = hub.position().split(':');
    const id = (n) => `${epoch}:${n}`;
    const frame = (n, data) => `id: ${id(n)}\ndata: ${data}\n\n`;
    for (let n = 1; n <= HISTORY; n++) {
      const channel = channelOf(n);
      if (channel) hub.publish(channel, { n });
      else hub.broadcast({ n });
    }
    // Client k: its channels and where it resumes from (most from one id).
    const sets = [[], ['room'], ['other'], ['other', 'room'], ['room', 'other']];
    const plan = Array.from({ length: N }, (_, k) => ({
      channels: sets[k % sets.length],
      from: k % 7 === 0 ? 15 : 0,
    }));
    const mid = HISTORY + 1;
    const live = HISTORY + 2;
    let connects = 0;
    hub.on('connect', () => {
      if (++connects === N / 2) expect(hub.broadcast('mid')).toBeGreaterThan(0);
    });
    const clients = plan.map(({ channels, from }) => {
      const query = channels.length ? `?ch=${channels.join(',')}` : '';
      return client(`/events${query}`, { 'Last-Event-ID': id(from) });
    });
    const waitAll = async (what, predicate) => {
      for (const c of clients) await c.waitFor(predicate, what, 30_000);
    };
    await waitAll('the mid-storm broadcast', (c) => c.body().includes('"mid"'));
    expect(hub.getClientCount()).toBe(N);
    // The values of the replays shared since the mid-storm broadcast are
    // held until the history moves on (none on the socket writer).
    const during = hub.nativeReferenceCount;
    expect(hub.broadcast('live')).toBe(N);
    const held = during - hub.nativeReferenceCount;
    await waitAll('the live broadcast', (c) => c.body().includes('"live"'));
    for (const [k, c] of clients.entries()) {
      const { channels, from } = plan[k];
      let expected = '';
      for (let n = from + 1; n <= HISTORY; n++) {
        const channel = channelOf(n);
        if (channel === null || channels.includes(channel)) expected += frame(n, JSON.stringify({ n }));
      }
      expected += frame(mid, '"mid"') + frame(live, '"live"');
      expect(c.body()).toBe(expected);
    }
    // One read per place, channel set (in any order) and history version:
    // 2 places x 4 sets, before and after the mid-storm broadcast.
    const reads = 2 * 4 * 2;
    const stats = hub.getStats();
    expect(stats.replays).toBe(N);
    expect(stats.resets).toBe(0);
    expect(stats.replaysShared).toBeGreaterThanOrEqual(N - reads);
    expect(stats.replaysShared).toBeLessThan(N);
    // A string or Buffer per distinct replay at most, not one per client.
    expect(held).toBeLessThanOrEqual(2 * reads);
    if (transport === 'stream') expect(held).toBeGreaterThan(0);
    else expect(held).toBeGreaterThanOrEqual(0);
  });
});

test('a shared replay is let go of on close, and by configure()', async () => {
  hub.configure({ transport: 'stream', historySize: 10, heartbeatMs: 0 });
  await serveChannels();
  const idle = hub.nativeReferenceCount;
  const from = hub.position();
  hub.broadcast('one');
  const a = client('/events', { 'Last-Event-ID': from });
  await a.waitFor((c) => c.body().includes('"one"'), 'the replay');
  // Two for the connection (its response's reference and its slot in the
  // response table), one for the replay's value.
  const perConnection = 2;
  expect(hub.nativeReferenceCount).toBe(idle + perConnection + 1);
  hub.configure({ historySize: 20 });
  expect(hub.nativeReferenceCount).toBe(idle + perConnection);
  const b = client('/events', { 'Last-Event-ID': from });
  await b.waitFor((c) => c.body().includes('"one"'), 'the second replay');
  expect(hub.nativeReferenceCount).toBe(idle + 2 * perConnection + 1);
  await hub.close();
  expect(hub.nativeReferenceCount).toBe(idle);
});
