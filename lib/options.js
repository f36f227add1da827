// The option objects the hub's methods take: which keys each knows, their
// types, and a TypeError naming the key (with the likely intended one) for
// anything else, so a misspelt option never silently does nothing.

const { invalidType, invalidValue, kindOf, checkKey } = require('./errors.js');
const { serialize } = require('./serialize.js');
const { MAX_TIMER_MS } = require('./heartbeat.js');

/** Options of one event: `send`, `sendToClient`, `publish`, `broadcastAndClose`. */
const EVENT_OPTIONS = Object.freeze(['event', 'id', 'retry', 'raw']);
/** `publish` also takes a filter (its channel is its first argument). */
const PUBLISH_OPTIONS = Object.freeze([...EVENT_OPTIONS, 'filter']);
/** `broadcast` also takes a channel and a filter. */
const BROADCAST_OPTIONS = Object.freeze([...EVENT_OPTIONS, 'channel', 'filter']);
/** `drain`. */
const DRAIN_OPTIONS = Object.freeze(['retryMs', 'retryJitterMs']);
/** `addClient`'s last argument. */
const ADD_CLIENT_OPTIONS = Object.freeze(['lastEventId', 'channels']);
/** `configure`. */
const HUB_OPTIONS = Object.freeze([
  'transport',
  'maxBufferedBytes',
  'slowClientPolicy',
  'historySize',
  'channelHistorySize',
  'heartbeatMs',
  'maxClients',
  'endTimeoutMs',
  'writerThreads',
  'redis',
]);

/** Edit distance between two short strings (option names), case-insensitive. */
function distance(a, b) {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let previous = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const current = [i];
    for (let j = 1; j <= y.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[y.length];
}

/** The known key `key` most likely meant, if one is close enough. */
function closest(key, known) {
  const lower = key.toLowerCase();
  let best;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of known) {
    const c = candidate.toLowerCase();
    // A prefix (maxBuffer for maxBufferedBytes) counts as close.
    const d = c.startsWith(lower) || lower.startsWith(c) ? 1 : distance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/**
 * Throws unless `options` is nullish or an object whose own keys are all in
 * `known`; returns whether there were options.
 */
function checkKeys(options, known, name = 'options') {
  if (options === undefined || options === null) return false;
  if (typeof options !== 'object') throw invalidType(`${name} must be an object, got ${kindOf(options)}`);
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const hint = closest(key, known);
    throw invalidValue(
      `${name}.${key} is not a known option${hint ? `; did you mean ${name}.${hint}?` : ''} ` +
        `(known: ${known.join(', ')})`,
    );
  }
  return true;
}

function checkOption(name, value, type) {
  if (value !== undefined && typeof value !== type) {
    throw invalidType(`options.${name} must be a ${type}, got ${kindOf(value)}`);
  }
}

/**
 * The `event:`/`id:`/`retry:` fields, checked for keys and types here and
 * for content natively; undefined when there are none.
 */
function fieldsOf(options, known = EVENT_OPTIONS) {
  if (!checkKeys(options, known)) return undefined;
  const { event, id, retry } = options;
  if (event === undefined && id === undefined && retry === undefined) return undefined;
  checkOption('event', event, 'string');
  checkOption('retry', retry, 'number');
  // Ids key the replay history.
  if (id !== undefined) checkKey('options.id', id);
  return { event, id, retry };
}

/** `addClient`'s `channels` option: undefined, or an array of channel names. */
function channelsOf(options) {
  const channels = options?.channels;
  if (channels === undefined) return undefined;
  if (!Array.isArray(channels)) {
    throw invalidType(`options.channels must be an array of strings, got ${kindOf(channels)}`);
  }
  channels.forEach((channel, i) => checkKey(`options.channels[${i}]`, channel));
  return channels;
}

/** `addClient`'s `lastEventId` option, else the request's `Last-Event-ID` header. */
function lastEventIdOf(res, options) {
  const explicit = options?.lastEventId;
  if (explicit !== undefined) return checkKey('options.lastEventId', explicit);
  const header = res.req?.headers?.['last-event-id'];
  return typeof header === 'string' ? header : undefined;
}

/** The text of the `data:` lines: JSON, or the string itself in raw mode. */
function dataOf(payload, options) {
  if (options?.raw === true) {
    if (typeof payload !== 'string') {
      throw invalidType(`payload must be a string when options.raw is true, got ${kindOf(payload)}`);
    }
    return payload;
  }
  return serialize(payload);
}

/** `drain()`'s (and drainOnSignals()'s) options: `retryMs` and `retryJitterMs`, each undefined or a timer's milliseconds. */
function checkDrainOptions(options) {
  checkKeys(options, DRAIN_OPTIONS);
  for (const name of DRAIN_OPTIONS) {
    const value = options?.[name];
    if (value === undefined) continue;
    if (typeof value !== 'number') throw invalidType(`options.${name} must be a number, got ${kindOf(value)}`);
    if (!(Number.isInteger(value) && value >= 0 && value <= MAX_TIMER_MS)) {
      throw invalidValue(`options.${name} must be an integer from 0 to ${MAX_TIMER_MS}, got ${value}`);
    }
  }
  if (options?.retryJitterMs !== undefined && options.retryMs === undefined) {
    throw invalidValue('options.retryJitterMs needs options.retryMs (the shortest delay it spreads from)');
  }
}

/** `configure()`'s options: an object of known keys. */
function checkHubShape(options) {
  if (options === null || typeof options !== 'object') {
    throw invalidType(`options must be an object, got ${kindOf(options)}`);
  }
  checkKeys(options, HUB_OPTIONS);
}

/**
 * `configure()`'s options other than `redis`, checked for types here (and
 * the native settings' values natively); throws before anything is applied.
 */
function checkHubValues(options) {
  const { heartbeatMs, maxClients } = options;
  checkOption('transport', options.transport, 'string');
  checkOption('maxBufferedBytes', options.maxBufferedBytes, 'number');
  checkOption('slowClientPolicy', options.slowClientPolicy, 'string');
  checkOption('historySize', options.historySize, 'number');
  checkOption('channelHistorySize', options.channelHistorySize, 'number');
  checkOption('heartbeatMs', heartbeatMs, 'number');
  checkOption('maxClients', maxClients, 'number');
  checkOption('endTimeoutMs', options.endTimeoutMs, 'number');
  checkOption('writerThreads', options.writerThreads, 'number');
  if (
    heartbeatMs !== undefined &&
    !(Number.isInteger(heartbeatMs) && heartbeatMs >= 0 && heartbeatMs <= MAX_TIMER_MS)
  ) {
    throw invalidValue(
      `options.heartbeatMs must be an integer from 0 to ${MAX_TIMER_MS} (0 turns heartbeats off), got ${heartbeatMs}`,
    );
  }
  if (maxClients !== undefined && !(Number.isInteger(maxClients) && maxClients >= 0)) {
    throw invalidValue('options.maxClients must be a non-negative integer (0 means no limit)');
  }
}

module.exports = {
  checkHubShape,
  checkHubValues,
  checkDrainOptions,
  dataOf,
  EVENT_OPTIONS,
  PUBLISH_OPTIONS,
  BROADCAST_OPTIONS,
  ADD_CLIENT_OPTIONS,
  HUB_OPTIONS,
  checkKeys,
  checkOption,
  closest,
  fieldsOf,
  lastEventIdOf,
  channelsOf,
};
