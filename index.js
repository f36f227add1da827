const { loadBinding } = require('./lib/load-binding.js');
const { serialize } = require('./lib/serialize.js');
const { initResponse, isResponseLike } = require('./lib/response.js');

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
];

/**
 * A registry of Server-Sent Events connections. The package's default export
 * is one instance; `new SseHub()` makes another, fully separate one.
 * Every method is bound, so `const { broadcast } = hub` works.
 */
class SseHub {
  #native;

  constructor() {
    this.#native = new NativeHub(TypeError);
    for (const name of METHODS) {
      Object.defineProperty(this, name, { value: this[name].bind(this), enumerable: true });
    }
  }

  initResponse(res) {
    initResponse(res);
  }

  addClient(idOrRes, resOrMeta, meta) {
    if (typeof idOrRes === 'string') {
      return this.#native.register(resOrMeta, idOrRes, toMeta(meta));
    }
    if (isResponseLike(idOrRes)) {
      return this.#native.register(idOrRes, undefined, toMeta(resOrMeta));
    }
    if (idOrRes === undefined || idOrRes === null) {
      // addClient(req.sessionID, res) without a session: generate the id.
      if (isResponseLike(resOrMeta)) return this.#native.register(resOrMeta, undefined, toMeta(meta));
    } else if (isResponseLike(resOrMeta)) {
      throw new TypeError(`id must be a string, got ${typeof idOrRes}`);
    }
    return this.#native.register(idOrRes, undefined, undefined);
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
   * Node-API references this hub holds (two or three per connection plus
   * two of its own). Exposed for leak tests.
   * @internal
   */
  get nativeReferenceCount() {
    return this.#native.heldReferences;
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
