// A hub's side of the Redis bus in JS: the promises it hands out (ready(),
// globalClientCount(), the flush before close/drain) and where live
// delivery stood when each response got its headers. The bus itself (its
// link, its stream, replay) is native; this holds only who waits for it.

const { keptAlive } = require('./bus.js');
const { debug, DEBUG } = require('./hub-log.js');

class HubBus {
  #native;
  /** `(state, message)` for each link change, for the hub's `bus` event. */
  #onState;
  /** The link's last reported state: 'off' (never configured), 'connecting', 'connected', 'disconnected', 'closed'. */
  #state = 'off';
  /** res -> busMark() at initResponse (a WeakMap: no response kept alive). */
  #marks = new WeakMap();
  #waiters = [];
  #stopped = null;
  #resolveStopped = null;

  constructor(native, onState) {
    this.#native = native;
    this.#onState = onState;
  }

  /** Whether `configure({ redis })` started a bus on this hub. */
  get configured() {
    return this.#state !== 'off';
  }

  /** Configured and not yet stopped. */
  get running() {
    return this.configured && this.#state !== 'closed';
  }

  /** Resolves once the bus has stopped (its Redis connections closed); null without a bus. */
  get stopped() {
    return this.#stopped;
  }

  /** Starts the native bus with checked options. */
  start(options) {
    this.#native.startBus(options);
    this.#state = 'connecting';
    this.#stopped = new Promise((resolve) => {
      this.#resolveStopped = resolve;
    });
  }

  /** At initResponse: where live delivery stands, so addClient replays what came in between. */
  markResponse(res) {
    if (this.configured) this.#marks.set(res, this.#native.busMark());
  }

  /** The mark taken at `res`'s initResponse, if any. */
  markOf(res) {
    return this.configured ? this.#marks.get(res) : undefined;
  }

  /** What the bus thread reported: its link changing ('bus'), its end ('busStopped'). */
  onEvent(kind, a, b) {
    if (kind === 'busStopped') {
      this.#state = 'closed';
      // Closed (or drained) before Redis was ever reached: ready() never
      // became true, so it rejects. (The native side fails its own
      // requests, globalClientCount() and flushes.)
      for (const { reject } of this.#waiters.splice(0)) reject(this.#native.closedError());
      this.#resolveStopped?.();
      return;
    }
    this.#state = a;
    if (DEBUG) debug('bus %s%s', a, b ? `: ${b}` : '');
    if (a === 'connected') {
      for (const { resolve } of this.#waiters.splice(0)) resolve();
    }
    this.#onState(a, b);
  }

  /** Resolves at once without a bus, else once it is first connected. */
  ready() {
    if (!this.configured || this.#state === 'connected') return Promise.resolve();
    if (this.#state === 'closed') return Promise.reject(this.#native.closedError());
    // The bus thread holds nothing that keeps Node alive; while someone
    // waits here (before app.listen, say), Node is kept alive.
    return keptAlive(this.#native, new Promise((resolve, reject) => this.#waiters.push({ resolve, reject })));
  }

  /**
   * Connected clients across every instance on the stream (the bus must be
   * configured): a native promise, rejected with `ERR_SSE_BUS` when the bus
   * cannot answer.
   */
  globalCount() {
    return this.#native.busCount();
  }

  /**
   * Resolves once everything this instance appended to the bus has been
   * read back and delivered here, or after `timeoutMs`, whichever is first.
   */
  flush(timeoutMs) {
    // A native promise (resolved at once without a running bus).
    const flushed = this.#native.busFlush();
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    return Promise.race([flushed.catch(() => {}), timeout]).finally(() => clearTimeout(timer));
  }
}

module.exports = { HubBus };
