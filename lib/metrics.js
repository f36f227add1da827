// The hub's getStats() as Prometheus metrics: the text exposition format
// (version 0.0.4) a scraper reads from `/metrics`, or the same figures as
// metric families shaped like prom-client's own (`{ name, help, type,
// values, aggregator }`), so an app that already runs prom-client can serve
// them from its registry without this package depending on prom-client.

const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');

/** The options `metrics()` takes. */
const METRICS_OPTIONS = Object.freeze(['format', 'labels']);

/** `Content-Type` of the text format, for the `/metrics` route. */
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Every getStats() field, once: the family it belongs to, its help text and
 * type. The two connection gauges share one family with a `transport`
 * label, so a dashboard can sum or split them.
 */
const FAMILIES = Object.freeze([
  {
    name: 'sse_clients',
    help: 'Registered SSE connections.',
    type: 'gauge',
    values: [['clients']],
  },
  {
    name: 'sse_connections',
    help: 'Registered SSE connections by transport: stream (res.write) or socket (the native writer).',
    type: 'gauge',
    values: [
      ['streamConnections', 'stream'],
      ['socketConnections', 'socket'],
    ],
  },
  {
    name: 'sse_socket_capacity',
    help: 'Most connections the native writer may hold at once (about half the open-files limit).',
    type: 'gauge',
    values: [['socketCapacity']],
  },
  {
    name: 'sse_channels',
    help: 'Channels with at least one member.',
    type: 'gauge',
    values: [['channels']],
  },
  {
    name: 'sse_writer_threads',
    help: 'Native socket writer threads (running, or the number the first hand-off starts).',
    type: 'gauge',
    values: [['writerThreads']],
  },
  {
    // One sample per running writer thread, labelled by its index.
    name: 'sse_writer_thread_connections',
    help: 'Socket connections on each running native writer thread.',
    type: 'gauge',
    values: [['socketConnectionsByThread']],
  },
  {
    // One sample per reason, zeros included, so a dashboard can alert on
    // any reason appearing (labelled by getStats().streamFallbacks' names).
    name: 'sse_stream_fallbacks_total',
    help: 'Connections registered on the stream transport (res.write) instead of the native writer, by reason.',
    type: 'counter',
    values: [['streamFallbacks']],
    label: 'reason',
  },
  {
    name: 'sse_queued_bytes',
    help: "Bytes waiting in the native writer's queues.",
    type: 'gauge',
    values: [['queuedBytes']],
  },
  {
    name: 'sse_frames_sent_total',
    help: 'Frames written to connections completely (each recipient counts once).',
    type: 'counter',
    values: [['framesSent']],
  },
  {
    name: 'sse_sent_bytes_total',
    help: 'Event-stream bytes of the frames sent, without HTTP chunk framing.',
    type: 'counter',
    values: [['bytesSent']],
  },
  {
    name: 'sse_frames_dropped_total',
    help: 'Frames skipped for slow clients under the drop policy.',
    type: 'counter',
    values: [['framesDropped']],
  },
  {
    name: 'sse_slow_disconnects_total',
    help: 'Connections closed for falling behind by more than maxBufferedBytes.',
    type: 'counter',
    values: [['slowDisconnects']],
  },
  {
    name: 'sse_replays_total',
    help: 'Reconnections that got missed events replayed from history.',
    type: 'counter',
    values: [['replays']],
  },
  {
    name: 'sse_replays_shared_total',
    help: 'Replays and resets that shared a read of history another reconnection made (same id, same channels, history unchanged).',
    type: 'counter',
    values: [['replaysShared']],
  },
  {
    name: 'sse_resets_total',
    help: 'Reconnections whose last event id was no longer in history (sent event: reset).',
    type: 'counter',
    values: [['resets']],
  },
  // Admission control: one family per reason, so each refusal's status
  // (503 or 429) is its own counter.
  {
    name: 'sse_refused_max_clients_total',
    help: 'Connections refused because maxClients were open or reserved (answered 503).',
    type: 'counter',
    values: [['refusedMaxClients']],
  },
  {
    name: 'sse_refused_max_clients_per_key_total',
    help: 'Connections refused because maxClientsPerKey were open or reserved under their key (answered 429).',
    type: 'counter',
    values: [['refusedMaxClientsPerKey']],
  },
  {
    name: 'sse_pending_admissions',
    help: 'Places reserved by initResponse that addClient has not taken yet.',
    type: 'gauge',
    values: [['pendingAdmissions']],
  },
  {
    name: 'sse_admission_keys',
    help: 'Client keys counted by maxClientsPerKey.',
    type: 'gauge',
    values: [['admissionKeys']],
  },
]);

/** The Redis bus's figures (`getStats().bus`), only for a hub that has one. */
const BUS_FAMILIES = Object.freeze([
  {
    name: 'sse_bus_connected',
    help: 'Whether the Redis bus is connected (1) or not (0: connecting, retrying or closed).',
    type: 'gauge',
    values: [['connected']],
  },
  ...[
    ['entries_written', 'entriesWritten', 'Entries this instance appended to the Redis stream.'],
    ['entries_read', 'entriesRead', "Entries read back from the Redis stream (every instance's)."],
    ['reconnects', 'reconnects', 'Reconnections to Redis after an outage.'],
    ['replays', 'replays', 'Reconnecting clients replayed missed entries from the Redis stream.'],
    ['resets', 'resets', 'Clients sent event: reset by the bus (id trimmed or unknown, or too much missed).'],
    ['malformed', 'malformed', 'Stream entries skipped because they broke the encoding.'],
    [
      'local_fallbacks',
      'localFallbacks',
      'Events delivered to local clients only, without an id, because Redis was away.',
    ],
  ].map(([name, field, help]) => ({ name: `sse_bus_${name}_total`, help, type: 'counter', values: [[field]] })),
]);

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The constant labels a caller added (`{ hub: 'chat' }` for an app with
 * several hubs), checked once: names as Prometheus allows them, none
 * reserved (`__` prefix) or used by the families themselves, string values.
 */
function checkLabels(labels) {
  if (labels === undefined) return {};
  if (labels === null || typeof labels !== 'object') {
    throw invalidType(`options.labels must be an object, got ${kindOf(labels)}`);
  }
  const out = {};
  for (const [name, value] of Object.entries(labels)) {
    if (!LABEL_NAME.test(name) || name.startsWith('__')) {
      throw invalidValue(`options.labels.${name} is not a valid Prometheus label name`);
    }
    if (name === 'transport' || name === 'thread' || name === 'reason') {
      throw invalidValue(`options.labels.${name} is taken: the package's own families carry it`);
    }
    if (typeof value !== 'string') {
      throw invalidType(`options.labels.${name} must be a string, got ${kindOf(value)}`);
    }
    out[name] = value;
  }
  return out;
}

/**
 * The figures of `stats` as metric families: `{ name, help, type, values:
 * [{ labels, value }], aggregator }`, prom-client's shape (`aggregator:
 * 'sum'` adds the workers' figures up in its cluster mode).
 */
function metricFamilies(stats, labels = {}) {
  const families = familiesOf(FAMILIES, stats, labels);
  if (!stats.bus) return families;
  const bus = { ...stats.bus, connected: stats.bus.state === 'connected' ? 1 : 0 };
  return families.concat(familiesOf(BUS_FAMILIES, bus, labels));
}

function familiesOf(list, stats, labels) {
  return list.map(({ name, help, type, values, label }) => ({
    name,
    help,
    type,
    values: values.flatMap(([field, transport]) => {
      const figure = stats[field];
      // A per-thread figure (an array) is one sample per thread.
      if (Array.isArray(figure)) {
        return figure.map((value, thread) => ({ labels: { ...labels, thread: String(thread) }, value }));
      }
      // A figure by name (an object) is one sample per name, under `label`.
      if (label !== undefined) {
        return Object.entries(figure).map(([key, value]) => ({ labels: { ...labels, [label]: key }, value }));
      }
      return [{ labels: transport === undefined ? { ...labels } : { ...labels, transport }, value: figure }];
    }),
    aggregator: 'sum',
  }));
}

// Label values escape backslash, double quote and line feed; help text
// escapes backslash and line feed (the format's own rules).
const escapeLabel = (text) => text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (text) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

/** A sample value as the text format spells it (Go's ParseFloat reads it back). */
function formatValue(value) {
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  if (Number.isNaN(value)) return 'NaN';
  return String(value);
}

/** Metric families in the text exposition format, each line ending in LF. */
function formatText(families) {
  let text = '';
  for (const { name, help, type, values } of families) {
    text += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
    for (const { labels, value } of values) {
      const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
      text += `${name}${pairs.length > 0 ? `{${pairs.join(',')}}` : ''} ${formatValue(value)}\n`;
    }
  }
  return text;
}

/**
 * `hub.metrics(options)`: `stats` (one getStats() snapshot, so every
 * figure is from the same instant) as text, or as families with
 * `format: 'json'`.
 */
function metrics(stats, options) {
  checkKeys(options, METRICS_OPTIONS);
  const format = options?.format ?? 'text';
  if (typeof format !== 'string') throw invalidType(`options.format must be a string, got ${kindOf(format)}`);
  if (format !== 'text' && format !== 'json') {
    throw invalidValue(`options.format must be 'text' or 'json', got ${JSON.stringify(format)}`);
  }
  const families = metricFamilies(stats, checkLabels(options?.labels));
  return format === 'json' ? families : formatText(families);
}

module.exports = {
  CONTENT_TYPE,
  FAMILIES,
  BUS_FAMILIES,
  METRICS_OPTIONS,
  checkLabels,
  metrics,
  metricFamilies,
  formatText,
};
