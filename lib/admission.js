// Admission control's JS half: a request's key (the app's `clientKey`, or
// the remote address; `X-Forwarded-For`'s first address only when the app
// trusts the proxy it came through) and the reservation a response holds
// from `initResponse` to `addClient`. The limits, the counts and the
// refusals are native: this keeps only the ticket each response holds, so
// its `close` can give it back.

const { invalidType, kindOf } = require('./errors.js');

/**
 * The default key: the peer's address; with `trustProxy`, the address the
 * trusted proxies saw. Proxies append to `X-Forwarded-For` whatever the
 * client sent, so only its right end is theirs: `true` trusts the one proxy
 * in front (the peer), so the key is the last address; a function trusts
 * each hop it returns true for, walking from the peer leftwards, and the
 * key is the first address it does not trust. A client cannot pick its key
 * by sending the header itself.
 */
function defaultClientKey(req, trustProxy) {
  const remote = req?.socket?.remoteAddress;
  if (trustProxy !== true && typeof trustProxy !== 'function') return remote;
  const header = req.headers?.['x-forwarded-for'];
  const joined = Array.isArray(header) ? header.join(',') : header;
  const forwarded = typeof joined === 'string' ? joined.split(',').map((a) => a.trim()) : [];
  const hops = [...forwarded.filter((a) => a !== ''), remote];
  if (trustProxy === true) return hops.length > 1 ? hops[hops.length - 2] : remote;
  let i = hops.length - 1;
  while (i > 0 && trustProxy(hops[i]) === true) i--;
  return hops[i];
}

/** `configure()`'s `clientKey` and `trustProxy`, types only (undefined: unchanged). */
function checkAdmissionOptions({ clientKey, trustProxy }) {
  if (clientKey !== undefined && clientKey !== null && typeof clientKey !== 'function') {
    throw invalidType(`options.clientKey must be a function (req, res) => string, or null, got ${kindOf(clientKey)}`);
  }
  if (trustProxy !== undefined && typeof trustProxy !== 'boolean' && typeof trustProxy !== 'function') {
    throw invalidType(
      `options.trustProxy must be a boolean or a function (remoteAddress) => boolean, got ${kindOf(trustProxy)}`,
    );
  }
}

class Admission {
  #native;
  /** The app's `clientKey(req, res)`; null for the default. */
  #clientKey = null;
  #trustProxy = false;
  /** res → { ticket, onClose }: the reservation `initResponse` made. */
  #held = new WeakMap();
  /** Gives back the tickets of responses that cannot report their `close` (no `once`) once they are collected. */
  #finalizer;
  /** This, weakly: a response's listener must not keep a dropped hub alive. */
  #self = new WeakRef(this);

  constructor(native) {
    this.#native = native;
    const self = this.#self;
    this.#finalizer = new FinalizationRegistry((ticket) => self.deref()?.#native.releaseReservation(ticket));
  }

  /** Applies `clientKey` and `trustProxy` (checked by checkAdmissionOptions). */
  configure({ clientKey, trustProxy }) {
    if (clientKey !== undefined) this.#clientKey = clientKey;
    if (trustProxy !== undefined) this.#trustProxy = trustProxy;
  }

  /** `res`'s key, when `maxClientsPerKey` is on (undefined: not counted per key). */
  #keyOf(res) {
    if (!this.#native.keyed) return undefined;
    const req = res.req;
    const key = this.#clientKey ? this.#clientKey(req, res) : defaultClientKey(req, this.#trustProxy);
    if (key === undefined || key === null) return undefined;
    if (typeof key !== 'string') {
      throw invalidType(`options.clientKey must return a string, undefined or null, got ${kindOf(key)}`);
    }
    return key;
  }

  /**
   * `initResponse`: reserves a place for `res`, or throws the refusal
   * (before any header). Returns the ticket, or undefined when nothing
   * was reserved (no limit, registered already, or reserved already).
   */
  reserve(res) {
    if (res === null || typeof res !== 'object' || this.#held.has(res)) return undefined;
    // A response whose client is gone already: its `close` has fired, so
    // nothing would give the place back (and addClient registers nothing).
    if (res.destroyed === true || res.writableEnded === true || res.socket?.destroyed === true) return undefined;
    const ticket = this.#native.reserve(res, this.#keyOf(res)) ?? undefined;
    if (ticket === undefined) return undefined;
    const entry = { ticket, onClose: undefined };
    if (typeof res.once === 'function') {
      const self = this.#self;
      entry.onClose = () => self.deref()?.release(res);
      res.once('close', entry.onClose);
    } else {
      this.#finalizer.register(res, ticket, entry);
    }
    this.#held.set(res, entry);
    return ticket;
  }

  /**
   * `addClient` for a new connection: its reservation (no longer given back
   * at `close`: registering takes it, and the caller releases it if that
   * did not happen), else its key to be counted under.
   */
  take(res) {
    const entry = this.#held.get(res);
    if (entry === undefined) return { ticket: undefined, clientKey: this.#keyOf(res) };
    this.#forget(res, entry);
    return { ticket: entry.ticket, clientKey: undefined };
  }

  /** Gives `res`'s reservation back, if it holds one. */
  release(res) {
    const entry = this.#held.get(res);
    if (entry === undefined) return;
    this.#forget(res, entry);
    this.#native.releaseReservation(entry.ticket);
  }

  #forget(res, entry) {
    this.#held.delete(res);
    if (entry.onClose) res.removeListener?.('close', entry.onClose);
    else this.#finalizer.unregister(entry);
  }
}

module.exports = { Admission, defaultClientKey, checkAdmissionOptions };
