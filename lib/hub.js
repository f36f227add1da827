// `SseHub`: a registry of Server-Sent Events connections. The registry,
// framing, delivery, history and the bus are native (`NativeHub`); this
// class checks the JS-side arguments, keeps the original's behaviour for
// entries put in `_clients` by hand, and turns native callbacks into
// events and promises. It keeps no copy of the registry.

const { EventEmitter } = require('node:events');
const { loadBinding } = require('./load-binding.js');
const { formatSSEMessage } = require('./serialize.js');
const { encodeId, decodeId } = require('./client-id.js');
const { HandSetEntries, isObject } = require('./hand-set.js');
const { ClientsView, ResIndexView } = require('./registry-view.js');
const { initResponse, isResponseLike } = require('./response.js');
const { inspectSocket, responseHooks } = require('./socket.js');
const { metrics } = require('./metrics.js');
const { observe } = require('./otel.js');
const { busOptionsOf, keptAlive } = require('./bus.js');
const { FLAGS, HubBus } = require('./hub-bus.js');
const { Heartbeat, MAX_TIMER_MS } = require('./heartbeat.js');
const { HubLog, debug, DEBUG } = require('./hub-log.js');
const { toMeta, fromMeta } = require('./meta.js');
const { Admission, checkAdmissionOptions } = require('./admission.js');
const {
  invalidType,
  kindOf,
  checkString,
  checkKey,
  SseCapacityError,
  SseKeyCapacityError,
  isRefusal,
} = require('./errors.js');
const { drainOnSignals } = require('./signals.js');
const {
  BROADCAST_OPTIONS,
  PUBLISH_OPTIONS,
  ADD_CLIENT_OPTIONS,
  checkHubShape,
  checkHubValues,
  checkKeys,
  checkDrainOptions,
  dataOf,
  fieldsOf,
  lastEventIdOf,
  channelsOf,
} = require('./options.js');

const { NativeHub } = loadBinding();

/** The methods bound to each hub, so `const { broadcast } = hub` works. */
const METHODS = [
  'formatSSEMessage',
  'initResponse',
  'refuse',
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
  'observeOpenTelemetry',
];

/** `cleanupStaleClients()`'s default age limit, the original's: one hour. */
const DEFAULT_MAX_AGE_MS = 60 * 60 * 1000;
/**
 * How long close() waits, on a hub with a bus, for what this instance
 * appended to come back to its own clients before it ends them.
 */
const CLOSE_FLUSH_MS = 5_000;

/**
 * A registry of Server-Sent Events connections. The package's default export
 * is one instance; `new SseHub()` makes another, fully separate one.
 * Every method is bound, so `const { broadcast } = hub` works. Emits
 * `connect` ({ id, res }), `disconnect` ({ id, reason }), `slow` ({ id }),
 * `bus` ({ state, error? }) and `error`.
 */
class SseHub extends EventEmitter {
  #native;
  #bus;
  #heartbeat;
  /** Client keys and the reservations between initResponse and addClient. */
  #admission;
  /** The debug log; null while NODE_DEBUG does not name the package. */
  #log = null;
  /** The promise `close()` returns, once called. */
  #closing = null;
  #resolveClosed = null;
  /** Entries put in `_clients` by hand (no connection of the registry). */
  #handSet = new HandSetEntries();
  /** What removes each OpenTelemetry callback this hub registered; run at close(). */
  #observers = new Set();
  /** Whether a `setImmediate` will hand this turn's socket connections to the writer threads. */
  #flushScheduled = false;

  constructor() {
    super();
    // The native hub holds these callbacks strongly (they live on responses
    // and in its state), so they reach the hub only through weak references,
    // or a dropped hub could never be freed.
    let native;
    const self = new WeakRef(this);
    const hooks = responseHooks(() => native?.deref());
    const onNative = (kind, a, b) => self.deref()?.#onNative(kind, a, b);
    this.#native = new NativeHub(TypeError, hooks, onNative, SseCapacityError, SseKeyCapacityError);
    native = new WeakRef(this.#native);
    this.#admission = new Admission(this.#native);
    this.#bus = new HubBus(this.#native, (state, message) => self.deref()?.#emitBusState(state, message));
    this.#heartbeat = new Heartbeat((idleMs) => self.deref()?.#tick(idleMs) ?? false);
    if (DEBUG) this.#log = new HubLog(this.#native);
    for (const name of METHODS) {
      Object.defineProperty(this, name, { value: this[name].bind(this), enumerable: true });
    }
    Object.defineProperties(this, {
      _clients: { value: new ClientsView(this.#native, this.#handSet, fromMeta), enumerable: true },
      _resIndex: { value: new ResIndexView(this.#native, this.#handSet), enumerable: true },
    });
  }

  /** A callback from the native side: a lifecycle event, the writer's death, or the bus. */
  #onNative(kind, a, b) {
    this.#log?.lifecycle(kind, a, b);
    if (kind === 'closed') {
      this.#resolveClosed?.();
      return;
    }
    if (kind === 'error') {
      this.#emitError(a, b);
      return;
    }
    if (kind === 'bus' || kind === 'busStopped') {
      this.#bus.onEvent(kind, a, b);
      return;
    }
    if (kind === 'disconnect' && this.#native.count() === 0) this.#heartbeat.stop();
    if (this.listenerCount(kind) === 0) return;
    const id = decodeId(a);
    this.#emitSafely(kind, kind === 'slow' ? { id } : { id, reason: b });
  }

  /** The original's wire format for one payload: `data: <json>\n\n`. */
  formatSSEMessage(payload) {
    return formatSSEMessage(payload);
  }

  /**
   * Headers for an event stream. With `maxClients` or `maxClientsPerKey`
   * set, first reserves the response's place (taken by `addClient`, given
   * back when the response closes), or throws `SseCapacityError` (503) or
   * `SseKeyCapacityError` (429) before anything is sent: `refuse(res, err)`
   * answers it.
   */
  initResponse(res) {
    const reserved = this.#admission.reserve(res);
    try {
      initResponse(res);
    } catch (err) {
      // Only the place this call reserved (a second call keeps the first's).
      if (reserved !== undefined) this.#admission.release(res);
      throw err;
    }
    // With a bus: where live delivery stood when the client got its
    // headers, so addClient can replay what was delivered in between.
    this.#bus.markResponse(res);
  }

  /**
   * Answers a refusal `initResponse` or `addClient` threw: `err.status`
   * (429 for `maxClientsPerKey`, 503 for `maxClients`), `Retry-After:
   * err.retryAfter` and a short text body, so
   * `catch (err) { return hub.refuse(res, err); }` is the whole route's
   * part. Any other error is thrown again.
   */
  refuse(res, err) {
    if (!isRefusal(err)) throw err;
    err.respond(res);
    return true;
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
    // Refused once closing or draining, as the core decides; else whether
    // `res` is registered already.
    const isNew = !this.#native.checkOpen(res);
    checkKeys(options, ADD_CLIENT_OPTIONS);
    this.#handSet.dropFor(res, id);
    // Its place: the reservation initResponse made, or a new one under its key.
    const { ticket, clientKey } = isNew ? this.#admission.take(res) : {};
    try {
      if (isNew) this.#native.checkCapacity(res, clientKey, ticket);
      return this.#registerNew(res, id, meta, options, isNew, ticket, clientKey);
    } finally {
      // Registering took it; anything else (a refusal, a response already
      // over) gives it back.
      if (ticket !== undefined) this.#native.releaseReservation(ticket);
    }
  }

  #registerNew(res, id, meta, options, isNew, ticket, clientKey) {
    const flags = this.#native.flags;
    const bus = (flags & FLAGS.BUS) !== 0;
    const lastEventId = isNew && flags & FLAGS.REPLAYABLE ? lastEventIdOf(res, options) : undefined;
    const channels = isNew ? channelsOf(options) : undefined;
    // Read before registering: registration installs the writer's hooks.
    // Where it is, or why the writer cannot have it (the core counts that).
    // With `transport: 'stream'` the core counts every connection as
    // `configured` whatever its socket, so there is nothing to read.
    const socket = flags & FLAGS.STREAM ? 'configured' : inspectSocket(res);
    const key = id === undefined ? undefined : encodeId(id);
    const mark = isNew ? this.#bus.markOf(res) : undefined;
    const start =
      lastEventId === undefined &&
      mark === undefined &&
      channels === undefined &&
      ticket === undefined &&
      clientKey === undefined
        ? undefined
        : { lastEventId, mark, channels, ticket, clientKey };
    const registered = this.#native.register(res, key, toMeta(meta), socket, start);
    // A socket offered to the writer waits there until the end of this
    // turn (once the poll phase has run every request callback), so a burst
    // of registrations wakes each writer thread once; any other command
    // to a thread hands the waiting ones over before it.
    if (typeof socket === 'object' && !this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        // close() handed every held connection to its thread already.
        if (!this.#closing) this.#native.flushWriters();
      });
    }
    const clientId = id === undefined ? registered : id;
    this.#log?.registration(res, registered, isNew);
    if (isNew && this.#native.has(res)) {
      // A connection the bus held (a Last-Event-ID, or entries delivered
      // since its headers) is replayed on the next tick, so channels the
      // route joins right after addClient count; it gets nothing live before.
      if (bus) process.nextTick(() => this.#native.requestReplay(res));
      if (!this.#closing) this.#heartbeat.start();
      // The client is registered whatever a listener does: its error
      // surfaces on the next tick, and addClient still returns the id.
      if (this.listenerCount('connect') > 0) this.#emitSafely('connect', { id: clientId, res });
    }
    return clientId;
  }

  /** Unregisters `res` and ends it if still open. Any value is accepted (false if not registered). */
  removeClient(res) {
    const handSet = this.#handSet;
    if (handSet.index.has(res)) {
      const id = handSet.index.get(res);
      handSet.index.delete(res);
      if (handSet.has(id)) {
        handSet.remove(id);
        return true;
      }
      return this.#native.unregisterId(encodeId(id));
    }
    return isObject(res) ? this.#native.unregister(res) : false;
  }

  /** Unregisters and ends every connection under `id` (any value, as in the original). */
  removeClientById(id) {
    if (this.#handSet.has(id)) {
      this.#handSet.remove(id);
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
        this.#handSet.remove(id);
        return false;
      }
      this.send(entry.res, payload, options);
      return true;
    }
    const sent = this.#native.sendTo(encodeId(id), dataOf(payload, options), fieldsOf(options));
    this.#log?.drops();
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
    this.#log?.drops();
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
      sent += this.#handSet.broadcast((res) => this.#native.send(res, data, fields), false);
    }
    this.#log?.drops();
    return sent;
  }

  /** Sends to the members of `channel`. */
  publish(channel, payload, options) {
    checkKey('channel', channel);
    checkKeys(options, PUBLISH_OPTIONS);
    return this.broadcast(payload, { ...options, channel });
  }

  /** Sends one event to every connection, then ends each. Returns how many got it. */
  broadcastAndClose(payload, options) {
    const data = dataOf(payload, options);
    const fields = fieldsOf(options);
    let sent = this.#native.broadcastAndClose(data, fields);
    if (this.#handSet.size > 0) sent += this.#handSet.broadcast((res) => this.#native.send(res, data, fields), true);
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

  /** Registered connections, plus entries put in `_clients` by hand. */
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
    const removed = this.#handSet.size > 0 ? this.#handSet.cleanup(limit) : 0;
    // `age > limit`: NaN never holds, a negative limit always does.
    const native = Number.isNaN(limit) ? Number.MAX_VALUE : Math.min(Math.max(limit, 0), Number.MAX_VALUE);
    return removed + this.#native.cleanupStale(native);
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
    // New connections are refused from now on, also while a bus flushes
    // before the connections end.
    this.#native.drain();
    const closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    // With a bus, closed also means its Redis connections are closed. The
    // writer and the bus answer through weak callbacks (they never keep
    // Node alive by themselves), so they are ref'd until it settles: the
    // code after `await hub.close()` always runs.
    const settled = [closed];
    if (this.#bus.stopped) settled.push(this.#bus.stopped);
    if (this.#bus.running) {
      // What this instance appended before close() is in Redis, on its way
      // back to this instance's own clients: they get it before they end.
      settled.push(this.#bus.flush(CLOSE_FLUSH_MS).then(() => this.#endAll()));
    } else {
      this.#endAll();
    }
    this.#closing = keptAlive(this.#native, Promise.all(settled)).then(() => {});
    // A closed hub has nothing to report, and a meter outlives it.
    for (const stop of this.#observers) stop();
    this.#observers.clear();
    return this.#closing;
  }

  #endAll() {
    this.#heartbeat.stop();
    this.#native.close();
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
    checkHubShape(options);
    const {
      transport,
      maxBufferedBytes,
      slowClientPolicy,
      historySize,
      channelHistorySize,
      heartbeatMs,
      maxClients,
      maxClientsPerKey,
      retryAfterMs,
      redis,
    } = options;
    const bus = redis === undefined ? undefined : busOptionsOf(redis);
    if (bus) this.#native.checkOpen();
    checkHubValues(options);
    checkAdmissionOptions(options);
    if (bus) this.#native.checkBus(bus);
    const { endTimeoutMs, writerThreads } = options;
    const settings = {
      transport,
      maxBufferedBytes,
      slowClientPolicy,
      historySize,
      channelHistorySize,
      endTimeoutMs,
      writerThreads,
      maxClients,
      maxClientsPerKey,
      retryAfterMs,
    };
    this.#native.configure(settings);
    this.#admission.configure(options);
    if (bus) this.#bus.start(bus);
    if (DEBUG) debug('configure %j', bus ? { ...options, redis: '(set)' } : options);
    if (heartbeatMs !== undefined && this.#heartbeat.setIdleMs(heartbeatMs) && this.#native.count() > 0) {
      if (!this.#closing) this.#heartbeat.start();
    }
    return this;
  }

  /**
   * Resolves once the hub can take part: at once without a Redis bus, else
   * when the bus is first connected (it may take a while if Redis is down;
   * broadcasts meanwhile are delivered locally).
   */
  ready() {
    return this.#bus.ready();
  }

  /**
   * Connected clients across every instance on the same Redis stream (each
   * instance keeps its count in Redis with a 10 s expiry, so one that died
   * drops out within seconds). Without a bus: this hub's count.
   */
  globalClientCount() {
    if (!this.#bus.configured) return Promise.resolve(this.#native.count());
    return this.#bus.globalCount();
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
    checkDrainOptions(options);
    const retryMs = options?.retryMs;
    this.#native.drain();
    if (DEBUG) debug('drain: %d connection(s), retry %s', this.#native.count(), retryMs);
    if (retryMs !== undefined) this.#native.retryHint(retryMs, options?.retryJitterMs);
    if (this.#bus.running) await this.#bus.flush(MAX_TIMER_MS);
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
    return drainOnSignals((o) => this.drain(o), checkDrainOptions, options);
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
   * The figures of `metrics()` as OpenTelemetry observable instruments on
   * `options.meter` (default: `@opentelemetry/api`'s global meter provider,
   * meter `sse-helper-native`), under the same names, read in one batch per
   * collection; `options.labels` become attributes on every point. No span
   * is created, ever. Returns a function that removes the instruments'
   * callback; `close()` removes it too.
   */
  observeOpenTelemetry(options) {
    const self = new WeakRef(this);
    // The meter holds this callback for as long as it lives: it reaches the
    // hub weakly, so a dropped hub is still collected.
    const stop = observe(() => self.deref()?.#statsWhileOpen(), options);
    if (this.#closing) stop();
    else this.#observers.add(stop);
    return () => {
      this.#observers.delete(stop);
      stop();
    };
  }

  #statsWhileOpen() {
    return this.#closing ? undefined : this.getStats();
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

  /** The bus link changed: the `bus` event, with the error when it went down. */
  #emitBusState(state, message) {
    if (this.listenerCount('bus') === 0) return;
    const event = { state };
    if (state === 'disconnected') {
      event.error = new Error(message);
      event.error.code = 'ERR_SSE_BUS';
    }
    this.#emitSafely('bus', event);
  }

  /** The writer thread died: `'error'` for apps that listen, a warning otherwise (never a crash). */
  #emitError(code, message) {
    const err = new Error(message);
    err.code = code;
    if (this.listenerCount('error') > 0) this.#emitSafely('error', err);
    else process.emitWarning(err);
  }

  /** One heartbeat: false (stopping the timer) once closing or without clients. */
  #tick(idleMs) {
    if (this.#closing || this.#native.count() === 0) return false;
    this.#native.heartbeat(idleMs);
    this.#log?.drops();
    return true;
  }
}

module.exports = { SseHub };
