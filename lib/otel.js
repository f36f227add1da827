// getStats() as OpenTelemetry metrics: one observable instrument per
// Prometheus family (same names, same help text as descriptions, counters
// as ObservableCounter and gauges as ObservableGauge), read in one batch
// callback so every figure of a collection comes from one snapshot. No span
// is ever created: a stream is one long request, and a span per event would
// cost more than the event. `@opentelemetry/api` is an optional peer: it is
// loaded only when the app asks for this and passes no meter of its own.

const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');
const { FAMILIES, BUS_FAMILIES, metricFamilies, checkLabels } = require('./metrics.js');

const OTEL_OPTIONS = Object.freeze(['meter', 'labels']);
const { version } = require('../package.json');

/** The app's global meter provider's meter for this package, or a clear error without the API. */
function defaultMeter() {
  let api;
  try {
    api = require('@opentelemetry/api');
  } catch (cause) {
    const err = new Error(
      'observeOpenTelemetry() needs @opentelemetry/api (npm install @opentelemetry/api) or options.meter',
      { cause },
    );
    err.code = 'ERR_SSE_NO_OPENTELEMETRY';
    throw err;
  }
  return api.metrics.getMeter('sse-helper-native', version);
}

/** Throws unless `meter` has the Meter methods this uses. */
function checkMeter(meter) {
  const methods = ['createObservableCounter', 'createObservableGauge', 'addBatchObservableCallback'];
  if (meter === null || typeof meter !== 'object' || methods.some((m) => typeof meter[m] !== 'function')) {
    throw invalidType(`options.meter must be an OpenTelemetry Meter, got ${kindOf(meter)}`);
  }
  return meter;
}

/**
 * What each meter observes, by its labels: the `readStats` of the hub
 * observing under them. Two hubs (or one, twice) with the same labels on
 * one meter would report points with the same attributes, and a collection
 * would keep one of them: the second is refused instead, while the first
 * still reads a hub (one closed or collected reads nothing, and frees them).
 */
const observedByMeter = new WeakMap();

/** The labels as one key, whatever their order. */
const labelsKey = (labels) => JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));

function claim(meter, labels, readStats) {
  let observed = observedByMeter.get(meter);
  if (!observed) {
    observed = new Map();
    observedByMeter.set(meter, observed);
  }
  const key = labelsKey(labels);
  const holder = observed.get(key);
  if (holder !== undefined && holder() !== undefined) {
    throw invalidValue(
      `options.labels are already those of another observer of this meter (${JSON.stringify(labels)}), ` +
        "so their points would overwrite each other; give each hub its own, such as { hub: 'chat' }",
    );
  }
  observed.set(key, readStats);
  return () => {
    if (observed.get(key) === readStats) observed.delete(key);
  };
}

/**
 * Registers the hub's figures on `options.meter` (default: the global
 * provider's meter named `sse-helper-native`). `readStats()` returns one
 * getStats() snapshot, or undefined once the hub is gone or closed (then
 * nothing is observed). Returns a function that removes the callback.
 */
function observe(readStats, options) {
  checkKeys(options, OTEL_OPTIONS);
  const labels = checkLabels(options?.labels);
  const meter = options?.meter === undefined ? defaultMeter() : checkMeter(options.meter);
  const instruments = new Map();
  for (const { name, help, type } of [...FAMILIES, ...BUS_FAMILIES]) {
    const create = type === 'counter' ? meter.createObservableCounter : meter.createObservableGauge;
    instruments.set(name, create.call(meter, name, { description: help }));
  }
  const callback = (result) => {
    const stats = readStats();
    if (!stats) return;
    for (const { name, values } of metricFamilies(stats, labels)) {
      const instrument = instruments.get(name);
      for (const sample of values) result.observe(instrument, sample.value, sample.labels);
    }
  };
  const list = [...instruments.values()];
  const release = claim(meter, labels, readStats);
  try {
    meter.addBatchObservableCallback(callback, list);
  } catch (err) {
    release();
    throw err;
  }
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    release();
    meter.removeBatchObservableCallback?.(callback, list);
  };
}

module.exports = { observe, OTEL_OPTIONS };
