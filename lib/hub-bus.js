// A hub's side of the Redis bus in JS: the promises it hands out (ready(),
// globalClientCount(), the flush before close/drain, all native but the
// stop's), and where live delivery stood when each response got its
// headers. The bus itself (its link and who waits for it, its stream,
// replay) is native; this keeps only what JS alone can hold.

const { debug, DEBUG } = require('./hub-log.js');

/** The bits of the native hub's `flags` (`NativeHub::flags`). */
const FLAGS = Object.freeze({ REPLAYABLE: 1, STREAM: 2, BUS: 4, BUS_RUNNING: 8 });

class HubBus {
  #native;
  /** `(state, message)` for each link change, for the hub's `bus` event. */
  #onState;
  /** res -> busMark() at initResponse (a WeakMap: no response kept alive). */
  #marks = new WeakMap();
  #stopped = null;
  #resolveStopped = null;

  constructor(native, onState) {
    this.#native = native;
    this.#onState = onState;
  }

  /** Whether `configure({ redis })` started a bus on this hub. */
  get configured() {
    return (this.#native.flags & FLAGS.BUS) !== 0;
  }

  /** Configured and not yet stopped. */
  get running() {
    return (this.#native.flags & FLAGS.BUS_RUNNING) !== 0;
  }

  /** Resolves once the bus has stopped (its Redis connections closed); null without a bus. */
  get stopped() {
    return this.#stopped;
  }

  /** Starts the native bus with checked options. */
  start(options) {
    this.#native.startBus(options);
    this.#stopped = new Promise((resolve) => {
      this.#resolveStopped = resolve;
    });
  }

  /** At initResponse: where live delivery stands, so addClient replays what came in between. */
  markResponse(res) {
    // `null` without a running bus.
    const mark = this.#native.busMark();
    if (mark != null) this.#marks.set(res, mark);
  }

  /** The mark taken at `res`'s initResponse, if any. */
  markOf(res) {
    return this.#marks.get(res);
  }

  /**
   * What the bus thread reported: its link changing ('bus'), its end
   * ('busStopped'). The link's state and who waits for it are native.
   */
  onEvent(kind, a, b) {
    if (kind === 'busStopped') {
      this.#resolveStopped?.();
      return;
    }
    if (DEBUG) debug('bus %s%s', a, b ? `: ${b}` : '');
    this.#onState(a, b);
  }

  /**
   * Resolves at once without a bus, else once it is first connected; a
   * native promise (Node stays alive while it waits), rejected with
   * `ERR_SSE_CLOSED` once the bus has stopped.
   */
  ready() {
    // Without a bus there is nothing to wait for (nor to ask).
    if (!this.configured) return Promise.resolve();
    return this.#native.busReady().then(() => {});
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

module.exports = { HubBus, FLAGS };
