const { loadBinding } = require('./lib/load-binding.js');
const { serialize } = require('./lib/serialize.js');
const { initResponse, isResponseLike } = require('./lib/response.js');
const { socketFd, responseHooks } = require('./lib/socket.js');

const { NativeHub } = loadBinding();

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

const METHODS = [
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
];

/**
 * A registry of Server-Sent Events connections. The package's default export
 * is one instance; `new SseHub()` makes another, fully separate one.
 * Every method is bound, so `const { broadcast } = hub` works.
 */
class SseHub {
  #native;

  constructor() {
    // The hooks live on responses and the native hub holds them strongly, so
    // they must not hold the hub strongly back, or it could never be freed.
    let native;
    const hooks = responseHooks(() => native?.deref());
    this.#native = new NativeHub(TypeError, hooks.write, hooks.end);
    native = new WeakRef(this.#native);
    for (const name of METHODS) {
      Object.defineProperty(this, name, { value: this[name].bind(this), enumerable: true });
    }
  }

  initResponse(res) {
    initResponse(res);
  }

  addClient(idOrRes, resOrMeta, meta) {
    if (typeof idOrRes === 'string') return this.#register(resOrMeta, idOrRes, meta);
    if (isResponseLike(idOrRes)) return this.#register(idOrRes, undefined, resOrMeta);
    if (idOrRes === undefined || idOrRes === null) {
      // addClient(req.sessionID, res) without a session: generate the id.
      if (isResponseLike(resOrMeta)) return this.#register(resOrMeta, undefined, meta);
    } else if (isResponseLike(resOrMeta)) {
      throw new TypeError(`id must be a string, got ${typeof idOrRes}`);
    }
    return this.#native.register(idOrRes);
  }

  #register(res, id, meta) {
    const fd = isResponseLike(res) ? socketFd(res) : -1;
    return this.#native.register(res, id, toMeta(meta), fd);
  }

  removeClient(res) {
    return this.#native.unregister(res);
  }

  removeClientById(id) {
    return this.#native.unregisterId(checkId(id));
  }

  sendToClient(id, payload) {
    checkId(id);
    return this.#native.sendTo(id, serialize(payload));
  }

  send(res, payload) {
    return this.#native.send(res, serialize(payload));
  }

  broadcast(payload) {
    return this.#native.broadcast(serialize(payload));
  }

  broadcastAndClose(payload) {
    return this.#native.broadcastAndClose(serialize(payload));
  }

  getClientCount() {
    return this.#native.count();
  }

  cleanupStaleClients(maxAgeMs) {
    if (typeof maxAgeMs !== 'number') {
      throw new TypeError(`maxAgeMs must be a non-negative finite number, got ${typeof maxAgeMs}`);
    }
    return this.#native.cleanupStale(maxAgeMs);
  }

  /**
   * Settings for this hub. `transport` applies to connections registered
   * afterwards; the buffer bound and policy apply at once.
   */
  configure(options) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError('options must be an object');
    }
    const { transport, maxBufferedBytes, slowClientPolicy } = options;
    checkOption('transport', transport, 'string');
    checkOption('maxBufferedBytes', maxBufferedBytes, 'number');
    checkOption('slowClientPolicy', slowClientPolicy, 'string');
    this.#native.configure(transport, maxBufferedBytes, slowClientPolicy);
    return this;
  }

  /** Counters and gauges: clients per transport, frames, bytes, drops. */
  getStats() {
    return this.#native.stats();
  }

  /**
   * Node-API references this hub holds (two or three per connection plus
   * two of its own). Exposed for leak tests.
   * @internal
   */
  get nativeReferenceCount() {
    return this.#native.heldReferences;
  }
}

function checkOption(name, value, type) {
  if (value !== undefined && typeof value !== type) {
    throw new TypeError(`options.${name} must be a ${type}, got ${typeof value}`);
  }
}

function checkId(id) {
  if (typeof id !== 'string') throw new TypeError(`id must be a string, got ${typeof id}`);
  return id;
}

const sseHelper = new SseHub();
Object.defineProperties(sseHelper, {
  SseHub: { value: SseHub, enumerable: true },
  default: { value: sseHelper },
});

module.exports = sseHelper;
