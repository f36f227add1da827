// Entries put in `_clients` (and `_resIndex`) by hand, as the original's
// own tests do: an entry without `res`, or one whose getters throw. Such an
// entry is no connection of the native registry; it lives here, the one
// owner of that fact, and the hub's methods treat it as the original treats
// its map's entries (sendToClient writes to its `res`, cleanupStaleClients
// prunes it, getClientCount counts it, broadcasts write to it).

const { encodeId } = require('./client-id.js');

/** A value a property can be read from. */
const isObject = (value) => value !== null && (typeof value === 'object' || typeof value === 'function');

/** Ends `res`, ignoring a throw (as the original does). */
function endQuietly(res) {
  try {
    res.end();
  } catch {
    // As the original: a failing end is ignored.
  }
}

class HandSetEntries {
  /** encoded id → { id, entry } */
  byId = new Map();
  /** res → id, from `_resIndex.set` */
  index = new WeakMap();

  get size() {
    return this.byId.size;
  }

  get(id) {
    return this.byId.get(encodeId(id))?.entry;
  }

  has(id) {
    return this.byId.has(encodeId(id));
  }

  set(id, entry) {
    this.byId.set(encodeId(id), { id, entry });
  }

  delete(id) {
    return this.byId.delete(encodeId(id));
  }

  /**
   * What the original's map does to its entries when `res` is registered
   * under `id`: an entry put by hand under `id` is replaced, and one that
   * `_resIndex` points `res` at is dropped.
   */
  dropFor(res, id) {
    if (this.size === 0) return;
    if (id !== undefined) this.delete(id);
    if (this.index.has(res)) {
      this.delete(this.index.get(res));
      this.index.delete(res);
    }
  }

  /** As the original's `removeClientById` on an entry put by hand: ends its `res` and drops it. */
  remove(id) {
    const entry = this.get(id);
    try {
      if (entry.res && !entry.res.writableEnded) entry.res.end();
    } catch {
      // As the original: a failing end still removes the entry.
    }
    this.delete(id);
    try {
      if (isObject(entry.res)) this.index.delete(entry.res);
    } catch {
      // A throwing getter on an entry put by hand.
    }
  }

  /**
   * A broadcast's share for these entries, written with `send(res)` as the
   * original writes its map's entries; with `close`, each is ended and the
   * set emptied (broadcastAndClose). Returns how many were written.
   */
  broadcast(send, close) {
    let sent = 0;
    for (const [key, { id, entry }] of Array.from(this.byId)) {
      let res;
      try {
        res = entry.res;
      } catch {
        this.byId.delete(key);
        continue;
      }
      if (!isObject(res) || res.writableEnded) {
        if (!close) this.remove(id);
        continue;
      }
      if (send(res)) sent += 1;
      else if (!close) this.remove(id);
      if (close) endQuietly(res);
    }
    if (close) this.byId.clear();
    return sent;
  }

  /** The original's pruning: ended entries and those older than `limit` ms. Returns how many. */
  cleanup(limit) {
    const now = Date.now();
    let removed = 0;
    for (const { id, entry } of Array.from(this.byId.values())) {
      let stale;
      try {
        const res = entry.res;
        stale = !res || res.writableEnded || now - (entry.createdAt || 0) > limit;
      } catch {
        stale = true;
      }
      if (stale) {
        this.remove(id);
        removed += 1;
      }
    }
    return removed;
  }
}

module.exports = { HandSetEntries, isObject };
