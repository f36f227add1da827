'use strict';

const { EventEmitter } = require('node:events');
const { debugLog } = require('./lib/debug-log.js');
const { loadBinding } = require('./lib/load-binding.js');
const { serialize, formatSSEMessage } = require('./lib/serialize.js');
const { encodeId, decodeId } = require('./lib/client-id.js');
const { HandSetEntries, ClientsView, ResIndexView, isObject } = require('./lib/registry-view.js');
const { initResponse, isResponseLike } = require('./lib/response.js');
const { inspectSocket, responseHooks } = require('./lib/socket.js');
const { metrics } = require('./lib/metrics.js');
const { busOptionsOf, KeepAlive, Requests } = require('./lib/bus.js');
const { invalidType, invalidValue, kindOf, checkString, checkKey } = require('./lib/errors.js');
const { drainOnSignals } = require('./lib/signals.js');
const {
  BROADCAST_OPTIONS,
  PUBLISH_OPTIONS,
  ADD_CLIENT_OPTIONS,
  HUB_OPTIONS,
  checkKeys,
  checkOption,
  fieldsOf,
  lastEventIdOf,
} = require('./lib/options.js');

const { NativeHub } = loadBinding();

// NODE_DEBUG=sse-helper-native logs registrations, removals, transport
// choices and slow-client actions to stderr. Node reads NODE_DEBUG once at
// startup, so whether it is on is read once here too: with it off, every
// log site is one branch on a constant and builds no string.
const { debug, DEBUG } = debugLog('sse-helper-native');

/** Holds a primitive meta value: native references need an object. */
class MetaBox {
  constructor(value) {
    this.value = value;
  }
}

function toMeta(meta) {
  if (meta === undefined || meta === null) return undefined;
  return typeof meta === 'object' || typeof meta === 'function' ? meta : new MetaBox(meta);
}

const fromMeta = (meta) => (meta instanceof MetaBox ? meta.value : meta);

/**
 * Thrown by `addClient` when the hub already holds `maxClients` connections.
 * `statusCode` is 503, for routes that turn it into a response.
 */
class SseCapacityError extends Error {
  constructor(maxClients) {
    super(`the SSE hub is at its limit of ${maxClients} clients`);
    this.name = 'SseCapacityError';
    this.code = 'ERR_SSE_CAPACITY';
    this.statusCode = 503;
    this.maxClients = maxClients;
  }
}

const METHODS = [
  'formatSSEMessage',
  'initResponse',
  'addClient',
  'removeClient',
  'removeClientById',
  'sendToClient',
  'send',
  'broadcast',
  'broadcastAndClose',
  'getClientCount',
  'cleanupStaleClients',
  'configure',
  'getStats',
  'comment',
  'join',
  'leave',
  'publish',
  'close',
  'metrics',
  'ready',
  'drain',
  'globalClientCount',
  'position',
  'drainOnSignals',
];

const DEFAULT_HEARTBEAT_MS = 15_000;
/** `cleanupStaleClients()`'s default age limit, the original's: one hour. */
const DEFAULT_MAX_AGE_MS = 60 * 60 * 1000;
/**
 * How long close() waits, on a hub with a bus, for what this instance
 * appended to come back to its own clients before it ends them.
 */
const CLOSE_FLUSH_MS = 5_000;
/** Node's timers take at most 2^31 - 1 ms; past that they fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** `retryMs` of drain() and drainOnSignals(): undefined, or an integer of milliseconds a timer can take. */
function checkRetryMs(retryMs) {
  if (retryMs === undefined) return;
  if (typeof retryMs !== 'number') {
    throw invalidType(`options.retryMs must be a number, got ${kindOf(retryMs)}`);
  }
  if (!(Number.isInteger(retryMs) && retryMs >= 0 && retryMs <= MAX_TIMER_MS)) {
    throw invalidValue(`options.retryMs must be an integer from 0 to ${MAX_TIMER_MS}, got ${retryMs}`);
  }
}

/**
 * A registry of Server-Sent Events connections. The package's default export
 * is one instance; `new SseHub()` makes another, fully separate one.
 * Every method is bound, so `const { broadcast } = hub` works. Emits
 * `connect` ({ id, res }), `disconnect` ({ id, reason }) and `slow` ({ id }).
 */
class SseHub extends EventEmitter {
  #native;
  /** The functions installed on native-writer responses: `res.write === #hooks.write` tells the transport. */
  #hooks;
  /** `configure({ transport })`, for the debug log's reason when a connection stays on the stream. */
  #transport = 'auto';
  /** `framesDropped` when the debug log last looked, so it reports each drop once. */
  #droppedSeen = 0;
  #heartbeatMs = DEFAULT_HEARTBEAT_MS;
  #heartbeat = null;
  #historySize = 0;
  #maxClients = 0;
  /** The promise `close()` returns, once called. */
  #closing = null;
  #resolveClosed = null;
  /** The Redis bus: whether configured, its last state, who waits for it. */
  #bus = false;
  /** res -> busMark() at initResponse (a WeakMap: no response kept alive). */
  #marks = new WeakMap();
  #busState = 'off';
  #busWaiters = [];
  #busStopped = null;
  #resolveBusStopped = null;
  #requests = new Requests();
  /** `drain()` was called: new clients are refused. */
  #draining = false;
  /** Entries put in `_clients` by hand (no connection of the registry). */
  #handSet = new HandSetEntries();

  constructor() {
    super();
    // The native hub holds these callbacks strongly (they live on responses
    // and in its state), so they reach the hub only through weak references,
    // or a dropped hub could never be freed.
    let native;
    const self = new WeakRef(this);
    const hooks = responseHooks(() => native?.deref());
    const lifecycle = (kind, a, b) => {
      const hub = self.deref();
      if (!hub) return;
      if (DEBUG) hub.#logLifecycle(kind, a, b);
      if (kind === 'closed') {
        hub.#resolveClosed?.();
        return;
      }
      if (kind === 'error') {
        hub.#emitError(a, b);
        return;
      }
      if (kind === 'bus' || kind === 'reply' || kind === 'busStopped') {
        hub.#onBus(kind, a, b);
        return;
      }
      if (kind === 'disconnect' && hub.#native.count() === 0) hub.#stopHeartbeat();
      if (hub.listenerCount(kind) === 0) return;
      const id = decodeId(a);
      hub.#emitSafely(kind, kind === 'slow' ? { id } : { id, reason: b });
    };
    this.#native = new NativeHub(TypeError, hooks, lifecycle);
    this.#hooks = hooks;
    native = new WeakRef(this.#native);
    for (const name of METHODS) {
      Object.defineProperty(this, name, { value: this[name].bind(this), enumerable: true });
    }
    Object.defineProperties(this, {
      _clients: { value: new ClientsView(this.#native, this.#handSet, fromMeta), enumerable: true },
      _resIndex: { value: new ResIndexView(this.#native, this.#handSet), enumerable: true },
    });
  }

  /** The original's wire format for one payload: `data: <json>\n\n`. */
  formatSSEMessage(payload) {
    return formatSSEMessage(payload);
  }

  /**
   * Headers for an event stream. With `maxClients` set and reached, throws
   * `SseCapacityError` before anything is sent, so the route can answer 503.
   */
  initResponse(res) {
    if (this.#atCapacity(res)) throw new SseCapacityError(this.#maxClients);
    initResponse(res);
    // With a bus: where live delivery stood when the client got its
    // headers, so addClient can replay what was delivered in between.
    if (this.#bus) this.#marks.set(res, this.#native.busMark());
  }

  #atCapacity(res) {
    return this.#maxClients > 0 && this.#native.count() >= this.#maxClients && !this.#native.has(res);
  }

  /**
   * `addClient(res, meta?, options?)` or `addClient(id, res, meta?, options?)`.
   * `options.lastEventId` overrides the request's `Last-Event-ID` header.
   * An id is any value, as in the original (`42` and `'42'` are two
   * clients); without one (or with a nullish one) an id is generated.
   */
  addClient(idOrRes, resOrMeta, meta, options) {
    if (isResponseLike(idOrRes)) return this.#register(idOrRes, undefined, resOrMeta, meta);
    if (!resOrMeta) {
      // The original's back-compat form: the one argument is the response.
      if (!isObject(idOrRes)) {
        throw invalidType(`res must be an http.ServerResponse, got ${kindOf(idOrRes)}`);
      }
      return this.#register(idOrRes, undefined, undefined, undefined);
    }
    if (!isObject(resOrMeta)) {
      throw invalidType(`res must be an http.ServerResponse, got ${kindOf(resOrMeta)}`);
    }
    const id = idOrRes === undefined || idOrRes === null ? undefined : idOrRes;
    return this.#register(resOrMeta, id, meta, options);
  }

  #register(res, id, meta, options) {
    if (this.#closing || this.#draining) throw closedError();
    checkKeys(options, ADD_CLIENT_OPTIONS);
    this.#dropHandSet(res, id);
    const isNew = !this.#native.has(res);
    if (isNew && this.#atCapacity(res)) throw new SseCapacityError(this.#maxClients);
    const replays = this.#historySize > 0 || this.#bus;
    const lastEventId = replays && isNew ? lastEventIdOf(res, options) : undefined;
    // Read before registering: registration installs the writer's hooks.
    const socket = inspectSocket(res);
    const info = typeof socket === 'string' ? undefined : socket;
    const key = id === undefined ? undefined : encodeId(id);
    const mark = this.#bus && isNew ? this.#marks.get(res) : undefined;
    const start = lastEventId === undefined && mark === undefined ? undefined : { lastEventId, mark };
    const registered = this.#native.register(res, key, toMeta(meta), info, start);
    const clientId = id === undefined ? registered : id;
    if (DEBUG) this.#logRegistration(res, registered, isNew, socket);
    if (isNew && this.#native.has(res)) {
      // A connection the bus held (a Last-Event-ID, or entries delivered
      // since its headers) is replayed on the next tick, so channels the
      // route joins right after addClient count; it gets nothing live before.
      if (this.#bus) process.nextTick(() => this.#native.requestReplay(res));
      this.#startHeartbeat();
      // The client is registered whatever a listener does: its error
      // surfaces on the next tick, and addClient still returns the id.
      if (this.listenerCount('connect') > 0) this.#emitSafely('connect', { id: clientId, res });
    }
    return clientId;
  }

  /**
   * What the original's map does to its entries when `res` is registered
   * under `id`: an entry put by hand under `id` is replaced, and one that
   * `_resIndex` points `res` at is dropped.
   */
  #dropHandSet(res, id) {
    const handSet = this.#handSet;
    if (handSet.size === 0) return;
    if (id !== undefined) handSet.delete(id);
    if (handSet.index.has(res)) {
      handSet.delete(handSet.index.get(res));
      handSet.index.delete(res);
    }
  }

  /** As the original's `removeClientById` on an entry put by hand. */
  #removeHandSet(id) {
    const entry = this.#handSet.get(id);
    try {
      if (entry.res && !entry.res.writableEnded) entry.res.end();
    } catch {
      // As the original: a failing end still removes the entry.
    }
    this.#handSet.delete(id);
    try {
      if (isObject(entry.res)) this.#handSet.index.delete(entry.res);
    } catch {
      // A throwing getter on an entry put by hand.
    }
  }

  /** Unregisters `res` and ends it if still open. Any value is accepted (false if not registered). */
  removeClient(res) {
    if (this.#handSet.index.has(res)) {
      const id = this.#handSet.index.get(res);
      this.#handSet.index.delete(res);
      if (this.#handSet.has(id)) {
        this.#removeHandSet(id);
        return true;
      }
      return this.#native.unregisterId(encodeId(id));
    }
    return isObject(res) ? this.#native.unregister(res) : false;
  }

  /** Unregisters and ends every connection under `id` (any value, as in the original). */
  removeClientById(id) {
    if (this.#handSet.has(id)) {
      this.#removeHandSet(id);
      return true;
    }
    return this.#native.unregisterId(encodeId(id));
  }

  /**
   * Sends to every connection under `id`; `options` as for `send`. True
   * when a live connection was there (as in the original, even when its
   * `write` threw: it is then ended and removed).
   */
  sendToClient(id, payload, options) {
    if (this.#handSet.has(id)) {
      const entry = this.#handSet.get(id);
      if (!entry?.res) return false;
      if (entry.res.writableEnded) {
        this.#removeHandSet(id);
        return false;
      }
      this.send(entry.res, payload, options);
      return true;
    }
    const sent = this.#native.sendTo(encodeId(id), dataOf(payload, options), fieldsOf(options));
    if (DEBUG) this.#logDrops();
    return sent;
  }

  /**
   * Sends one event to `res`. `options`: `event`, `id`, `retry` fields, and
   * `raw: true` to send a string as-is (one `data:` line per line).
   */
  send(res, payload, options) {
    // As the original, anything is accepted: a value that is no object is
    // nothing to write to.
    if (!isObject(res)) return false;
    const sent = this.#native.send(res, dataOf(payload, options), fieldsOf(options));
    if (DEBUG) this.#logDrops();
    return sent;
  }

  /**
   * Sends to every connection, or to `options.channel`'s members, or to those
   * whose meta passes `options.filter(meta, id)`. Returns how many.
   */
  broadcast(payload, options) {
    const fields = fieldsOf(options, BROADCAST_OPTIONS);
    const data = dataOf(payload, options);
    const channel = options?.channel;
    if (channel !== undefined) checkKey('options.channel', channel);
    const filter = options?.filter;
    if (filter !== undefined && typeof filter !== 'function') {
      throw invalidType(`options.filter must be a function, got ${kindOf(filter)}`);
    }
    const test = filter && ((meta, id) => filter(fromMeta(meta), decodeId(id)));
    let sent = this.#native.broadcast(data, fields, channel, test);
    if (this.#handSet.size > 0 && channel === undefined && filter === undefined) {
      sent += this.#broadcastHandSet(data, fields, false);
    }
    if (DEBUG) this.#logDrops();
    return sent;
  }

  /** A broadcast's share for entries put in `_clients` by hand, as the original writes its map's entries. */
  #broadcastHandSet(data, fields, close) {
    let sent = 0;
    for (const [key, { id, entry }] of Array.from(this.#handSet.byId)) {
      let res;
      try {
        res = entry.res;
      } catch {
        this.#handSet.byId.delete(key);
        continue;
      }
      if (!isObject(res) || res.writableEnded) {
        if (!close) this.#removeHandSet(id);
        continue;
      }
      if (this.#native.send(res, data, fields)) sent += 1;
      else if (!close) this.#removeHandSet(id);
      if (close) {
        try {
          res.end();
        } catch {
          // As the original: a failing end is ignored.
        }
      }
    }
    if (close) this.#handSet.byId.clear();
    return sent;
  }

  /** Sends to the members of `channel`. */
  publish(channel, payload, options) {
    checkKey('channel', channel);
    checkKeys(options, PUBLISH_OPTIONS);
    return this.broadcast(payload, { ...options, channel });
  }

  broadcastAndClose(payload, options) {
    const data = dataOf(payload, options);
    const fields = fieldsOf(options);
    let sent = this.#native.broadcastAndClose(data, fields);
    if (this.#handSet.size > 0) sent += this.#broadcastHandSet(data, fields, true);
    return sent;
  }

  /**
   * Writes a comment (`: text`), which clients ignore, to a response, to the
   * connections under a client id, or to everyone when `target` is null.
   */
  comment(target, text) {
    checkString('text', text);
    if (target === null || target === undefined) return this.#native.comment(undefined, undefined, text);
    if (typeof target === 'string') return this.#native.comment(undefined, encodeId(checkKey('target', target)), text);
    return this.#native.comment(target, undefined, text);
  }

  /** Adds a response, or every connection under a client id, to `channel`. */
  join(target, channel) {
    return this.#setMembership(target, channel, true);
  }

  /** Takes a response, or every connection under a client id, out of `channel`. */
  leave(target, channel) {
    return this.#setMembership(target, channel, false);
  }

  #setMembership(target, channel, member) {
    checkKey('channel', channel);
    if (typeof target === 'string') {
      return this.#native.setMembership(undefined, encodeId(checkKey('target', target)), channel, member);
    }
    if (!isResponseLike(target)) {
      throw invalidType('target must be an http.ServerResponse or a client id');
    }
    return this.#native.setMembership(target, undefined, channel, member);
  }

  getClientCount() {
    return this.#native.count() + this.#handSet.size;
  }

  /**
   * The id a page can embed to subscribe from now on: render the page's
   * state, embed `position()`, and have its stream route pass it as
   * `addClient(res, meta, { lastEventId })`; the client then gets exactly
   * what was broadcast after the render. `null` when nothing can be
   * replayed: history off (`historySize: 0`) without a bus, or a bus that
   * has not reached Redis yet.
   */
  position() {
    return this.#native.position();
  }

  /**
   * Removes connections that ended, errored or were destroyed, and ends
   * those connected for longer than `maxAgeMs` (default one hour). As in
   * the original, a falsy `maxAgeMs` (0, null, NaN) means no age limit, and
   * any other value is compared as a number. Returns how many were removed.
   */
  cleanupStaleClients(maxAgeMs = DEFAULT_MAX_AGE_MS) {
    let limit;
    try {
      limit = maxAgeMs ? Number(maxAgeMs) : Number.POSITIVE_INFINITY;
    } catch {
      // The original's comparison throws for each client, which it then removes.
      limit = -1;
    }
    let removed = 0;
    if (this.#handSet.size > 0) removed += this.#cleanupHandSet(limit);
    // `age > limit`: NaN never holds, a negative limit always does.
    const native = Number.isNaN(limit) ? Number.MAX_VALUE : Math.min(Math.max(limit, 0), Number.MAX_VALUE);
    return removed + this.#native.cleanupStale(native);
  }

  /** The original's pruning, for entries put in `_clients` by hand. */
  #cleanupHandSet(limit) {
    const now = Date.now();
    let removed = 0;
    for (const { id, entry } of Array.from(this.#handSet.byId.values())) {
      let stale;
      try {
        const res = entry.res;
        stale = !res || res.writableEnded || now - (entry.createdAt || 0) > limit;
      } catch {
        stale = true;
      }
      if (stale) {
        this.#removeHandSet(id);
        removed += 1;
      }
    }
    return removed;
  }

  /**
   * Ends every connection, each after what is queued for it has been
   * written (at most `endTimeoutMs`), stops the heartbeat and the native
   * writer thread, and refuses new clients (`addClient` throws an Error with
   * code `ERR_SSE_CLOSED`). With a Redis bus it first waits (at most 5 s)
   * until what this instance broadcast has come back to its own clients, so
   * a broadcast made just before close() reaches them. The promise resolves
   * once all of that is done.
   */
  close() {
    if (this.#closing) return this.#closing;
    if (DEBUG) debug('close: ending %d connection(s)', this.#native.count());
    const closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    // With a bus, closed also means its Redis connections are closed. The
    // writer and the bus answer through weak callbacks (they never keep
    // Node alive by themselves), so Node is kept alive until it settles:
    // the code after `await hub.close()` always runs.
    const settled = [closed];
    if (this.#busStopped) settled.push(this.#busStopped);
    if (this.#bus && this.#busState !== 'closed') {
      // What this instance appended before close() is in Redis, on its way
      // back to this instance's own clients: they get it before they end.
      settled.push(this.#flushBus(CLOSE_FLUSH_MS).then(() => this.#endAll()));
    } else {
      this.#endAll();
    }
    this.#closing = new KeepAlive().during(Promise.all(settled)).then(() => {});
    return this.#closing;
  }

  #endAll() {
    this.#stopHeartbeat();
    this.#native.close();
  }

  /**
   * Resolves once everything this instance appended to the bus has been
   * read back and delivered here, or after `timeoutMs`, whichever is first.
   */
  #flushBus(timeoutMs) {
    const { id, promise } = this.#requests.open();
    // Without a running bus there is nothing to wait for (and the request
    // must be settled, or it would keep Node alive).
    if (!this.#native.busFlush(id)) this.#requests.settle(id, 'ok:0');
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    return Promise.race([promise.catch(() => {}), timeout]).finally(() => clearTimeout(timer));
  }

  /** `using hub = new SseHub()`: closes it (without waiting). */
  [Symbol.dispose ?? Symbol.for('nodejs.dispose')]() {
    this.close();
  }

  /** `await using hub = new SseHub()`: closes it and waits. */
  [Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')]() {
    return this.close();
  }

  /**
   * Settings for this hub; each is optional. `transport` applies to
   * connections registered afterwards, the others at once.
   */
  configure(options) {
    if (options === null || typeof options !== 'object') {
      throw invalidType(`options must be an object, got ${kindOf(options)}`);
    }
    checkKeys(options, HUB_OPTIONS);
    const {
      transport,
      maxBufferedBytes,
      slowClientPolicy,
      historySize,
      heartbeatMs,
      maxClients,
      endTimeoutMs,
      writerThreads,
      redis,
    } = options;
    const bus = redis === undefined ? undefined : busOptionsOf(redis);
    if (bus && this.#closing) throw closedError();
    checkOption('transport', transport, 'string');
    checkOption('maxBufferedBytes', maxBufferedBytes, 'number');
    checkOption('slowClientPolicy', slowClientPolicy, 'string');
    checkOption('historySize', historySize, 'number');
    checkOption('heartbeatMs', heartbeatMs, 'number');
    checkOption('maxClients', maxClients, 'number');
    checkOption('endTimeoutMs', endTimeoutMs, 'number');
    checkOption('writerThreads', writerThreads, 'number');
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
    if (bus) this.#native.checkBus(bus);
    this.#native.configure({
      transport,
      maxBufferedBytes,
      slowClientPolicy,
      historySize,
      endTimeoutMs,
      writerThreads,
    });
    if (bus) this.#startBus(bus);
    if (DEBUG) debug('configure %j', bus ? { ...options, redis: '(set)' } : options);
    if (transport !== undefined) this.#transport = transport;
    if (historySize !== undefined) this.#historySize = historySize;
    if (maxClients !== undefined) this.#maxClients = maxClients;
    if (heartbeatMs !== undefined && heartbeatMs !== this.#heartbeatMs) {
      this.#heartbeatMs = heartbeatMs;
      this.#stopHeartbeat();
      if (this.#native.count() > 0) this.#startHeartbeat();
    }
    return this;
  }

  #startBus(options) {
    this.#native.startBus(options);
    this.#bus = true;
    this.#busState = 'connecting';
    this.#busStopped = new Promise((resolve) => {
      this.#resolveBusStopped = resolve;
    });
  }

  /** What the bus thread reported: its link changing, an answer, its end. */
  #onBus(kind, a, b) {
    if (kind === 'reply') {
      this.#requests.settle(a, b);
      return;
    }
    if (kind === 'busStopped') {
      this.#busState = 'closed';
      // Closed (or drained) before Redis was ever reached: ready() never
      // became true, so it rejects.
      for (const { reject } of this.#busWaiters.splice(0)) reject(closedError());
      this.#requests.failAll('the Redis bus is closed');
      this.#resolveBusStopped?.();
      return;
    }
    this.#busState = a;
    if (DEBUG) debug('bus %s%s', a, b ? `: ${b}` : '');
    if (a === 'connected') {
      for (const { resolve } of this.#busWaiters.splice(0)) resolve();
    }
    if (this.listenerCount('bus') === 0) return;
    const event = { state: a };
    if (a === 'disconnected') {
      event.error = new Error(b);
      event.error.code = 'ERR_SSE_BUS';
    }
    this.#emitSafely('bus', event);
  }

  /**
   * Resolves once the hub can take part: at once without a Redis bus, else
   * when the bus is first connected (it may take a while if Redis is down;
   * broadcasts meanwhile are delivered locally).
   */
  ready() {
    if (!this.#bus || this.#busState === 'connected') return Promise.resolve();
    if (this.#busState === 'closed') return Promise.reject(closedError());
    // The bus thread holds nothing that keeps Node alive; while someone
    // waits here (before app.listen, say), Node is kept alive.
    return new KeepAlive().during(new Promise((resolve, reject) => this.#busWaiters.push({ resolve, reject })));
  }

  /**
   * Connected clients across every instance on the same Redis stream (each
   * instance keeps its count in Redis with a 10 s expiry, so one that died
   * drops out within seconds). Without a bus: this hub's count.
   */
  globalClientCount() {
    if (!this.#bus) return Promise.resolve(this.#native.count());
    const { id, promise } = this.#requests.open();
    if (!this.#native.busCount(id)) this.#requests.settle(id, 'error:the Redis bus is closed');
    return promise;
  }

  /**
   * For a rolling restart: refuses new clients, sends every local client a
   * `retry:` of `retryMs` (how soon browsers reconnect, to another
   * instance), waits until everything this instance broadcast has been
   * delivered, then ends every local connection and closes the hub. The
   * browsers resume elsewhere with `Last-Event-ID` and are replayed what
   * they missed.
   */
  async drain(options) {
    checkKeys(options, ['retryMs']);
    const retryMs = options?.retryMs;
    checkRetryMs(retryMs);
    this.#draining = true;
    if (DEBUG) debug('drain: %d connection(s), retry %s', this.#native.count(), retryMs);
    if (retryMs !== undefined) this.#native.retryHint(retryMs);
    if (this.#bus && this.#busState !== 'closed') await this.#flushBus(MAX_TIMER_MS);
    await this.close();
  }

  /**
   * Drains this hub on the first of `signals` (default SIGTERM and SIGINT;
   * add 'SIGUSR2' for nodemon) for at most `timeoutMs` (default 1,400: PM2
   * kills after 1,600), then raises the signal again so the process ends as
   * it would have, unless the app listens for it itself. Returns a function
   * that removes the listeners.
   */
  drainOnSignals(options) {
    return drainOnSignals((o) => this.drain(o), checkRetryMs, options);
  }

  /** Counters and gauges: clients per transport, channels, frames, bytes, drops, replays. */
  getStats() {
    const stats = this.#native.stats();
    stats.bus ??= null;
    return stats;
  }

  /**
   * `getStats()` in the Prometheus text exposition format (version 0.0.4,
   * served as `text/plain; version=0.0.4`): `sse_`-prefixed counters and
   * gauges with `# HELP` and `# TYPE`, connections labelled by transport.
   * `options.labels` adds constant labels to every sample (`{ hub: 'chat' }`);
   * `options.format: 'json'` returns the metric families as objects in
   * prom-client's shape instead, for a collector on an existing registry.
   */
  metrics(options) {
    return metrics(this.#native.stats(), options);
  }

  /**
   * Node-API references this hub holds (per connection: the response, and
   * on the stream transport its `write`; plus a few of its own). Exposed for
   * leak tests.
   * @internal
   */
  get nativeReferenceCount() {
    return this.#native.heldReferences;
  }

  /**
   * Fault injection for tests: makes the native writer thread panic, so the
   * handling of its death can be checked. False when no writer runs.
   * @internal
   */
  _crashWriterForTest() {
    return this.#native.crashWriterForTest();
  }

  /** Emits `event`; a listener's error surfaces on the next tick instead of unwinding into the hub. */
  #emitSafely(event, arg) {
    try {
      this.emit(event, arg);
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
    }
  }

  /** The writer thread died: `'error'` for apps that listen, a warning otherwise (never a crash). */
  #emitError(code, message) {
    const err = new Error(message);
    err.code = code;
    if (this.listenerCount('error') > 0) this.#emitSafely('error', err);
    else process.emitWarning(err);
  }

  // One unref'd timer per hub, running only while it has clients; it holds
  // the hub weakly so a dropped hub is still collected.
  #startHeartbeat() {
    if (this.#heartbeat || this.#heartbeatMs === 0 || this.#closing) return;
    const self = new WeakRef(this);
    const idleMs = this.#heartbeatMs;
    const timer = setInterval(
      () => {
        const hub = self.deref();
        if (!hub?.#tick(idleMs)) clearInterval(timer);
      },
      Math.max(1, Math.floor(idleMs / 2)),
    );
    timer.unref();
    this.#heartbeat = timer;
  }

  #tick(idleMs) {
    if (this.#closing || this.#native.count() === 0) {
      this.#heartbeat = null;
      return false;
    }
    this.#native.heartbeat(idleMs);
    if (DEBUG) this.#logDrops();
    return true;
  }

  // The debug log (NODE_DEBUG=sse-helper-native). Called only when it is on.

  /** A registration: which transport took it and, on the stream, why the native writer did not. */
  #logRegistration(res, id, isNew, socket) {
    if (!this.#native.has(res)) {
      debug('register %s: not registered (removed while registering)', id);
      return;
    }
    if (!isNew) {
      debug('register %s: already registered, now under this id with the new meta', id);
      return;
    }
    const clients = this.#native.count();
    if (res.write === this.#hooks.write) {
      debug('register %s: transport socket (native writer), %d client(s)', id, clients);
      return;
    }
    let why = socket;
    if (typeof socket !== 'string') {
      const { socketConnections, socketCapacity } = this.#native.stats();
      if (this.#transport === 'stream') why = "configure({ transport: 'stream' })";
      else if (socketConnections >= socketCapacity) why = `socketCapacity (${socketCapacity}) reached`;
      else why = 'the native writer refused it (its fd check failed, or the writer is down)';
    }
    debug('register %s: transport stream (%s), %d client(s)', id, why, clients);
  }

  /** Lifecycle events from the native side: removals with their reason, slow clients, the writer's death. */
  #logLifecycle(kind, a, b) {
    if (kind === 'disconnect') {
      debug('disconnect %s: reason %s, %d client(s) left', a, b, this.#native.count());
    } else if (kind === 'slow') {
      debug('slow %s: more than maxBufferedBytes pending, disconnecting it', a);
    } else if (kind === 'error') {
      debug('error %s: %s', a, b);
    } else if (kind === 'closed') {
      debug('closed: every connection ended, the writer stopped');
    }
  }

  /**
   * Frames dropped for slow clients (the `drop` policy) since the last look.
   * The native writer drops on its own thread, so those show up at the next
   * send or heartbeat.
   */
  #logDrops() {
    const { framesDropped } = this.#native.stats();
    if (framesDropped === this.#droppedSeen) return;
    debug(
      'drop: %d frame(s) skipped for slow clients (slowClientPolicy drop), %d in all',
      framesDropped - this.#droppedSeen,
      framesDropped,
    );
    this.#droppedSeen = framesDropped;
  }

  #stopHeartbeat() {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
  }
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

function closedError() {
  const err = new Error('the SSE hub was closed');
  err.code = 'ERR_SSE_CLOSED';
  return err;
}

const sseHelper = new SseHub();
Object.defineProperties(sseHelper, {
  SseHub: { value: SseHub, enumerable: true },
  SseCapacityError: { value: SseCapacityError, enumerable: true },
  default: { value: sseHelper },
});

module.exports = sseHelper;
