// `_clients` and `_resIndex`: the original helper exports its `Map` of
// clients (id → { res, meta, createdAt }) and its `WeakMap` (res → id), and
// its own tests read and write them. Here the registry is native, so these
// are live views of it with the same interface, not copies:
//
// - reading (`has`, `get`, `size`, iteration) reads the native registry;
// - `delete(id)` and `clear()` drop connections from it without ending them,
//   as deleting from the original's map does;
// - `set(id, entry)` stores an entry by hand, as the original's tests do
//   (an entry without `res`, or one whose getters throw). Such an entry is
//   no connection: it lives in `HandSetEntries` (hand-set.js), the one
//   owner of that fact, and the hub's methods treat it as the original treats its
//   map's entries (sendToClient writes to its `res`, cleanupStaleClients
//   prunes it, getClientCount counts it).

const { encodeId, decodeId } = require('./client-id.js');
const { isObject } = require('./hand-set.js');

/** A `Map`-shaped view of a hub's clients. */
class ClientsView {
  #native;
  #handSet;
  #fromMeta;

  /** `fromMeta` turns the meta the native registry holds back into the app's. */
  constructor(native, handSet, fromMeta) {
    this.#native = native;
    this.#handSet = handSet;
    this.#fromMeta = fromMeta;
  }

  get size() {
    return this.#native.count() + this.#handSet.size;
  }

  has(id) {
    return this.#handSet.has(id) || this.#native.entries(encodeId(id)).length > 0;
  }

  /** `{ res, meta, createdAt }` of the newest connection under `id`. */
  get(id) {
    if (this.#handSet.has(id)) return this.#handSet.get(id);
    const flat = this.#native.entries(encodeId(id));
    if (flat.length === 0) return undefined;
    return this.#entryAt(flat, flat.length - 4);
  }

  /**
   * Puts `entry` under `id` by hand, as on the original's map: connections
   * under `id` are dropped (not ended), as the map's entry is replaced.
   */
  set(id, entry) {
    this.#native.forgetId(encodeId(id));
    this.#handSet.set(id, entry);
    return this;
  }

  delete(id) {
    const handSet = this.#handSet.delete(id);
    return this.#native.forgetId(encodeId(id)) || handSet;
  }

  clear() {
    this.#handSet.byId.clear();
    const flat = this.#native.entries();
    for (let i = 0; i < flat.length; i += 4) this.#native.forgetId(flat[i]);
  }

  *entries() {
    const flat = this.#native.entries();
    for (let i = 0; i < flat.length; i += 4) yield [decodeId(flat[i]), this.#entryAt(flat, i)];
    for (const { id, entry } of Array.from(this.#handSet.byId.values())) yield [id, entry];
  }

  *keys() {
    for (const [id] of this.entries()) yield id;
  }

  *values() {
    for (const [, entry] of this.entries()) yield entry;
  }

  forEach(callback, thisArg) {
    for (const [id, entry] of this.entries()) callback.call(thisArg, entry, id, this);
  }

  [Symbol.iterator]() {
    return this.entries();
  }

  get [Symbol.toStringTag]() {
    return 'Map';
  }

  #entryAt(flat, i) {
    return { res: flat[i + 1], meta: this.#fromMeta(flat[i + 2]), createdAt: flat[i + 3] };
  }
}

/** A `WeakMap`-shaped view of res → id. */
class ResIndexView {
  #native;
  #handSet;

  constructor(native, handSet) {
    this.#native = native;
    this.#handSet = handSet;
  }

  get(res) {
    if (this.#handSet.index.has(res)) return this.#handSet.index.get(res);
    const key = isObject(res) ? this.#native.idOf(res) : null;
    return key === null || key === undefined ? undefined : decodeId(key);
  }

  has(res) {
    return this.#handSet.index.has(res) || (isObject(res) && this.#native.has(res));
  }

  /** Points `res` at `id` by hand (what `removeClient(res)` then removes). */
  set(res, id) {
    this.#handSet.index.set(res, id);
    return this;
  }

  delete(res) {
    return isObject(res) && this.#handSet.index.delete(res);
  }

  get [Symbol.toStringTag]() {
    return 'WeakMap';
  }
}

module.exports = { ClientsView, ResIndexView };
