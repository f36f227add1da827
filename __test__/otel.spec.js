// hub.observeOpenTelemetry(): the hub's figures as OpenTelemetry metrics,
// read back through the real OTel SDK (a MeterProvider with a MetricReader
// collected on demand) while real clients are connected to a real Express
// server: the same names and values as metrics(), counters as sums and
// gauges as gauges, one snapshot per collection, attributes, removal, and
// the options refused.

const { metrics: otelApi } = require('@opentelemetry/api');
const { MeterProvider, MetricReader, DataPointType } = require('@opentelemetry/sdk-metrics');
const { FAMILIES } = require('../lib/metrics.js');
const { waitFor, outcome, refused, runNode } = require('./helpers.js');
const { sseFixture } = require('./hub-fixture.js');

let hub;
const { startServer, sseRoute, connect } = sseFixture((t) => {
  ({ hub } = t);
});

/** A reader the test collects from whenever it wants. */
class OnDemandReader extends MetricReader {
  async onForceFlush() {}
  async onShutdown() {}
}

let provider;
let reader;
beforeEach(() => {
  reader = new OnDemandReader();
  provider = new MeterProvider({ readers: [reader] });
});
afterEach(() => provider.shutdown());

/** Every collected point as `name{k=v,...}` -> { value, type, description }. */
async function collect() {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const points = {};
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      for (const point of metric.dataPoints) {
        const labels = Object.entries(point.attributes)
          .map(([k, v]) => `${k}=${v}`)
          .join(',');
        points[`${metric.descriptor.name}{${labels}}`] = {
          value: point.value,
          type: metric.dataPointType,
          description: metric.descriptor.description,
          scope: scope.scope.name,
        };
      }
    }
  }
  return points;
}

/** metrics()'s samples as the same keys, for comparison. */
function prometheusSamples(options) {
  const out = {};
  for (const family of hub.metrics({ ...options, format: 'json' })) {
    for (const { labels, value } of family.values) {
      const key = Object.entries(labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
      out[`${family.name}{${key}}`] = value;
    }
  }
  return out;
}

async function twoClients() {
  hub.configure({ heartbeatMs: 0 });
  await startServer((app) => sseRoute(app));
  const a = await connect('/events?id=a');
  const b = await connect('/events?id=b');
  for (let i = 0; i < 3; i++) hub.broadcast({ i });
  await a.c.waitFor((x) => x.body().includes('"i":2'), 'the third event at a');
  await b.c.waitFor((x) => x.body().includes('"i":2'), 'the third event at b');
  await waitFor(() => hub.getStats().queuedBytes === 0, 'queues empty');
}

test('every figure of metrics() is an instrument under the same name, with its value and kind', async () => {
  await twoClients();
  hub.observeOpenTelemetry({ meter: provider.getMeter('app') });
  const points = await collect();
  const values = Object.fromEntries(Object.entries(points).map(([k, p]) => [k, p.value]));
  expect(values).toEqual(prometheusSamples());
  expect(values['sse_clients{}']).toBe(2);
  expect(values['sse_frames_sent_total{}']).toBeGreaterThanOrEqual(6);
  const byName = new Map(FAMILIES.map((f) => [f.name, f]));
  for (const [key, point] of Object.entries(points)) {
    const family = byName.get(key.slice(0, key.indexOf('{')));
    expect(point.description).toBe(family.help);
    expect(point.type).toBe(family.type === 'counter' ? DataPointType.SUM : DataPointType.GAUGE);
  }
  // A later collection reads the hub again: one more broadcast is counted.
  hub.broadcast('one more');
  await waitFor(() => hub.getStats().queuedBytes === 0 && hub.getStats().framesSent >= 8, 'the broadcast written');
  const later = await collect();
  expect(later['sse_frames_sent_total{}'].value).toBe(hub.getStats().framesSent);
});

test('labels become attributes; the remover and close() stop the observations', async () => {
  await twoClients();
  const stop = hub.observeOpenTelemetry({ meter: provider.getMeter('app'), labels: { hub: 'chat' } });
  const points = await collect();
  expect(points['sse_clients{hub=chat}'].value).toBe(2);
  expect(points['sse_connections{hub=chat,transport=socket}'].value).toBe(2);
  const sentBefore = points['sse_frames_sent_total{hub=chat}'].value;
  stop();
  stop(); // Removing twice is harmless.
  // The SDK keeps reporting the last observed point; nothing new is observed.
  hub.broadcast('after stop');
  await waitFor(() => hub.getStats().framesSent === sentBefore + 2, 'the broadcast written');
  expect((await collect())['sse_frames_sent_total{hub=chat}'].value).toBe(sentBefore);

  hub.observeOpenTelemetry({ meter: provider.getMeter('second') });
  const open = await collect();
  expect(open['sse_frames_sent_total{}'].value).toBe(sentBefore + 2);
  expect(open['sse_clients{}'].value).toBe(2);
  await hub.close();
  // Closed: the callback was removed, so the clients' end is not observed.
  expect(hub.getStats().clients).toBe(0);
  expect((await collect())['sse_clients{}'].value).toBe(2);
});

test('two hubs on one meter need their own labels: the same ones are refused, not overwritten', async () => {
  await twoClients();
  const meter = provider.getMeter('app');
  const other = new (require('..').SseHub)();
  try {
    hub.observeOpenTelemetry({ meter });
    // Same (no) labels: their points would have the same attributes.
    expect(outcome(() => other.observeOpenTelemetry({ meter }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.labels'),
    );
    // The same hub twice is refused too; other labels or another meter are not.
    expect(outcome(() => hub.observeOpenTelemetry({ meter }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.labels'),
    );
    const stopOther = other.observeOpenTelemetry({ meter, labels: { hub: 'other' } });
    const onAnotherMeter = other.observeOpenTelemetry({ meter: provider.getMeter('elsewhere') });
    // (Stopped before collecting: collect() keys points by name and labels only.)
    onAnotherMeter();
    const points = await collect();
    expect(points['sse_clients{}'].value).toBe(2);
    expect(points['sse_clients{hub=other}'].value).toBe(0);
    // Labels in another order are the same labels.
    hub.observeOpenTelemetry({ meter, labels: { a: '1', b: '2' } });
    expect(outcome(() => other.observeOpenTelemetry({ meter, labels: { b: '2', a: '1' } }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.labels'),
    );
    // Freed once the observer stops, or its hub closes.
    stopOther();
    other.observeOpenTelemetry({ meter, labels: { hub: 'other' } });
    await hub.close();
    other.observeOpenTelemetry({ meter });
    expect((await collect())['sse_clients{}'].value).toBe(0);
  } finally {
    await other.close();
  }
});

test('without a meter, the global provider gives the meter sse-helper-native', async () => {
  otelApi.setGlobalMeterProvider(provider);
  try {
    hub.observeOpenTelemetry();
    const points = await collect();
    expect(points['sse_clients{}']).toMatchObject({ value: 0, scope: 'sse-helper-native' });
  } finally {
    otelApi.disable();
  }
});

test('bad options are refused with a TypeError naming them', () => {
  expect(outcome(() => hub.observeOpenTelemetry({ metre: {} }))).toEqual(
    refused('ERR_INVALID_ARG_VALUE', 'options.metre'),
  );
  expect(outcome(() => hub.observeOpenTelemetry({ meter: {} }))).toEqual(
    refused('ERR_INVALID_ARG_TYPE', 'options.meter'),
  );
  expect(
    outcome(() => hub.observeOpenTelemetry({ meter: provider.getMeter('x'), labels: { transport: 'x' } })),
  ).toEqual(refused('ERR_INVALID_ARG_VALUE', 'options.labels.transport'));
  expect(outcome(() => hub.observeOpenTelemetry(5))).toEqual(refused('ERR_INVALID_ARG_TYPE', 'options'));
  expect(() => hub.observeOpenTelemetry({ meter: null })).toThrow(/options\.meter must be an OpenTelemetry Meter/);
});

test('without @opentelemetry/api and without a meter, a clear error; nothing else needs it', async () => {
  // A child where resolving @opentelemetry/api fails, as in an app that did not install it.
  const script = `
    const Module = require('node:module');
    const resolve = Module._resolveFilename;
    Module._resolveFilename = function (request, ...rest) {
      if (request.startsWith('@opentelemetry/')) throw Object.assign(new Error('not found'), { code: 'MODULE_NOT_FOUND' });
      return resolve.call(this, request, ...rest);
    };
    const { SseHub } = require(${JSON.stringify(require.resolve('..'))});
    const hub = new SseHub();
    hub.metrics();
    try { hub.observeOpenTelemetry(); } catch (err) { console.log(err.code, err.message); }
    const seen = [];
    hub.observeOpenTelemetry({ meter: {
      createObservableCounter: (name) => ({ name }),
      createObservableGauge: (name) => ({ name }),
      addBatchObservableCallback: (cb) => cb({ observe: (i, v) => seen.push(i.name + '=' + v) }),
    } });
    console.log(seen.includes('sse_clients=0'));
    hub.close();
  `;
  const { stdout, code } = await runNode([], script);
  expect(code).toBe(0);
  expect(stdout).toBe(
    'ERR_SSE_NO_OPENTELEMETRY observeOpenTelemetry() needs @opentelemetry/api (npm install @opentelemetry/api) or options.meter\ntrue\n',
  );
});
