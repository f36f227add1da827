// hub.metrics(): getStats() in the Prometheus text exposition format,
// scraped from a real Express `/metrics` route and read back by a real
// Prometheus text parser (parse-prometheus-text-format); the families as
// objects for a prom-client collector on an existing registry; its options.

const parsePrometheus = require('parse-prometheus-text-format');
const promClient = require('prom-client');
const { FAMILIES } = require('../lib/metrics.js');
const { waitFor, outcome, refused } = require('./helpers.js');
const { sseFixture } = require('./hub-fixture.js');

let hub;
let srv;
const { startServer, sseRoute, connect } = sseFixture((t) => {
  ({ hub, srv } = t);
});

/** The getStats() field behind each sample, keyed `name{labels}`. */
function expectedSamples(stats, extraLabels = {}) {
  const out = {};
  for (const { name, values, label } of FAMILIES) {
    for (const [field, transport] of values) {
      if (label !== undefined) {
        // By name (the stream reasons), labelled by it.
        for (const [value, count] of Object.entries(stats[field])) {
          out[key(name, { ...extraLabels, [label]: value })] = count;
        }
        continue;
      }
      if (Array.isArray(stats[field])) {
        // Per writer thread, labelled by its index.
        stats[field].forEach((value, thread) => {
          out[key(name, { ...extraLabels, thread: String(thread) })] = value;
        });
        continue;
      }
      const labels = transport === undefined ? { ...extraLabels } : { ...extraLabels, transport };
      out[key(name, labels)] = stats[field];
    }
  }
  return out;
}

const key = (name, labels) =>
  `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')}}`;

/** Parsed families (parse-prometheus-text-format) as { samples, types, helps }. */
function read(text) {
  const samples = {};
  const types = {};
  const helps = {};
  for (const family of parsePrometheus(text)) {
    types[family.name] = family.type;
    helps[family.name] = family.help;
    for (const m of family.metrics) samples[key(family.name, m.labels ?? {})] = Number(m.value);
  }
  return { samples, types, helps };
}

/**
 * Two clients on the native writer and one on the stream, a channel, a few
 * broadcasts and a replay; resolves once the writer's queues are empty, so
 * the figures hold still.
 */
async function busyHub() {
  hub.configure({ historySize: 10, heartbeatMs: 0 });
  const [epoch] = hub.position().split(':');
  await startServer((app) => {
    sseRoute(app);
    app.get('/metrics', (_req, res) => {
      res.type('text/plain; version=0.0.4; charset=utf-8').send(hub.metrics());
    });
  });
  const a = await connect('/events?id=a');
  await connect('/events?id=b');
  hub.join('a', 'news');
  for (let i = 0; i < 5; i++) hub.broadcast({ i });
  hub.publish('news', 'members only');
  hub.configure({ transport: 'stream' });
  // Reconnects from id 2: events 3 to 5 are replayed.
  await connect('/events?id=c', { 'Last-Event-ID': `${epoch}:2` });
  await waitFor(() => hub.getClientCount() === 3, 'three clients');
  await a.c.waitFor((x) => x.body().includes('members only'), 'the publish');
  await waitFor(() => hub.getStats().queuedBytes === 0, 'queues empty');
}

test('a scraped /metrics route parses as Prometheus text, and every value is getStats()', async () => {
  await busyHub();
  const response = await fetch(`${srv.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  const text = await response.text();
  const stats = hub.getStats();

  expect(stats).toMatchObject({ clients: 3, socketConnections: 2, streamConnections: 1, channels: 1, replays: 1 });
  const { samples, types, helps } = read(text);
  expect(samples).toEqual(expectedSamples(stats));
  // Every getStats() field is exported, each once (the bus's, which this
  // hub has none of, in families of their own: see bus-metrics below).
  expect(stats.bus).toBeNull();
  expect(FAMILIES.flatMap((f) => f.values.map(([field]) => field)).sort()).toEqual(
    Object.keys(stats)
      .filter((k) => k !== 'bus')
      .sort(),
  );
  // Counters end in _total, gauges do not; every family has its help and type.
  for (const [name, type] of Object.entries(types)) {
    expect(name).toMatch(/^sse_[a-z_]+$/);
    expect(type).toBe(name.endsWith('_total') ? 'COUNTER' : 'GAUGE');
    expect(helps[name].length).toBeGreaterThan(10);
  }
  expect(samples['sse_connections{transport=socket}']).toBe(2);
  expect(samples['sse_connections{transport=stream}']).toBe(1);
  expect(samples['sse_frames_sent_total{}']).toBeGreaterThan(0);
  // The exposition format's own layout: HELP, then TYPE, then the samples; LF line ends.
  expect(text).toMatch(/^# HELP sse_clients .+\n# TYPE sse_clients gauge\nsse_clients 3\n/);
  expect(text.endsWith('\n')).toBe(true);
  expect(text).not.toMatch(/\r/);
});

test("options: constant labels, format 'json' in prom-client's shape, and bad options refused", async () => {
  const text = hub.metrics({ labels: { hub: 'chat "main"\\\n' } });
  const { samples } = read(text);
  expect(samples).toEqual(expectedSamples(hub.getStats(), { hub: 'chat "main"\\\n' }));
  expect(text).toContain('sse_clients{hub="chat \\"main\\"\\\\\\n"} 0\n');

  const families = hub.metrics({ format: 'json', labels: { hub: 'chat' } });
  expect(families.map((f) => f.name)).toEqual(FAMILIES.map((f) => f.name));
  expect(families[1]).toEqual({
    name: 'sse_connections',
    help: expect.any(String),
    type: 'gauge',
    values: [
      { labels: { hub: 'chat', transport: 'stream' }, value: 0 },
      { labels: { hub: 'chat', transport: 'socket' }, value: 0 },
    ],
    aggregator: 'sum',
  });

  expect(outcome(() => hub.metrics({ formats: 'json' }))).toEqual(refused('ERR_INVALID_ARG_VALUE', 'options.formats'));
  expect(outcome(() => hub.metrics({ format: 'xml' }))).toEqual(refused('ERR_INVALID_ARG_VALUE', 'options.format'));
  expect(outcome(() => hub.metrics({ format: 1 }))).toEqual(refused('ERR_INVALID_ARG_TYPE', 'options.format'));
  expect(outcome(() => hub.metrics({ labels: 'hub' }))).toEqual(refused('ERR_INVALID_ARG_TYPE', 'options.labels'));
  for (const name of ['1hub', 'a-b', '__name', 'transport']) {
    expect(outcome(() => hub.metrics({ labels: { [name]: 'x' } }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', `options.labels.${name}`),
    );
  }
  expect(outcome(() => hub.metrics({ labels: { hub: 1 } }))).toEqual(
    refused('ERR_INVALID_ARG_TYPE', 'options.labels.hub'),
  );
  // The default hub exports it bound, like every other method.
  const { metrics } = require('..');
  expect(typeof metrics()).toBe('string');
});

test('prom-client: the families registered as collectors on an existing registry (the README snippet)', async () => {
  await busyHub();
  const register = new promClient.Registry();
  const own = new promClient.Counter({
    name: 'app_requests_total',
    help: "The app's own metric.",
    registers: [register],
  });
  own.inc(7);
  // As in the README, with `hub` for `sseHelper`.
  for (const { name, help, type } of hub.metrics({ format: 'json' })) {
    register.registerMetric({
      name,
      help,
      type,
      get: () => hub.metrics({ format: 'json' }).find((family) => family.name === name),
      reset() {},
    });
  }

  const { samples } = read(await register.metrics());
  const stats = hub.getStats();
  expect(samples).toEqual({ ...expectedSamples(stats), 'app_requests_total{}': 7 });
  // Scraped again later, the collectors read the hub anew.
  hub.broadcast('one more');
  // One frame per client (three): wait for all of them, or a scrape between
  // two of the writes reads a figure the next getStats() has passed.
  await waitFor(() => hub.getStats().framesSent === stats.framesSent + 3, 'the three frames counted');
  expect(read(await register.metrics()).samples['sse_frames_sent_total{}']).toBe(hub.getStats().framesSent);
  // The registry's other calls work with them too.
  expect((await register.getMetricsAsJSON()).map((m) => m.name)).toContain('sse_clients');
  expect(() => register.resetMetrics()).not.toThrow();
});
