// Bad input is a TypeError whose message starts with the argument's name and
// whose `code` says whether the type or the value was wrong, as Node's own
// APIs do.

/** `name` had the wrong type (`ERR_INVALID_ARG_TYPE`). */
function invalidType(message) {
  const err = new TypeError(message);
  err.code = 'ERR_INVALID_ARG_TYPE';
  return err;
}

/** `name` had the right type but a value that is refused (`ERR_INVALID_ARG_VALUE`). */
function invalidValue(message) {
  const err = new TypeError(message);
  err.code = 'ERR_INVALID_ARG_VALUE';
  return err;
}

/** `typeof value`, with null told apart. */
function kindOf(value) {
  return value === null ? 'null' : typeof value;
}

/** Throws unless `value` is a string. */
function checkString(name, value) {
  if (typeof value !== 'string') throw invalidType(`${name} must be a string, got ${kindOf(value)}`);
  return value;
}

// Lone surrogates become U+FFFD on their way into Rust, so two different
// JS strings would become one key there (one client's events reaching
// another): a string that becomes a key must be well-formed UTF-16.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const isWellFormed =
  typeof String.prototype.isWellFormed === 'function'
    ? (text) => text.isWellFormed()
    : (text) => !LONE_SURROGATE.test(text);

/** Throws unless `value` is a well-formed (no lone surrogate) string. */
function checkKey(name, value) {
  checkString(name, value);
  if (!isWellFormed(value)) {
    throw invalidValue(`${name} must be a well-formed Unicode string (it contains a lone surrogate)`);
  }
  return value;
}

/** `retryAfterMs`'s default, in seconds (`Retry-After: 5`). */
const DEFAULT_RETRY_AFTER = 5;

/**
 * Answers a refused stream request: `status`, `Retry-After`, a short
 * plain-text body, before any SSE header (a response whose headers went
 * out already can only be ended).
 */
function respondRefused(res, err, text) {
  if (res === null || typeof res !== 'object' || typeof res.end !== 'function') {
    throw invalidType('res must be an http.ServerResponse (an object with end)');
  }
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = `${text}; retry in ${err.retryAfter} s\n`;
  const headers = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    'Retry-After': String(err.retryAfter),
  };
  if (typeof res.writeHead === 'function') {
    res.writeHead(err.status, headers);
  } else {
    // Express-like test doubles and adapters.
    res.statusCode = err.status;
    if (typeof res.set === 'function') res.set(headers);
  }
  res.end(body);
}

/**
 * Thrown by `initResponse` and `addClient` when the hub already holds
 * `maxClients` connections (reservations by `initResponse` included).
 * `statusCode` and `status` are 503; `retryAfter` is the `Retry-After` in
 * seconds; `respond(res)` answers the request with them.
 */
class SseCapacityError extends Error {
  constructor(maxClients, retryAfter = DEFAULT_RETRY_AFTER) {
    super(`the SSE hub is at its limit of ${maxClients} clients`);
    this.name = 'SseCapacityError';
    this.code = 'ERR_SSE_CAPACITY';
    this.statusCode = 503;
    this.maxClients = maxClients;
    this.status = 503;
    this.retryAfter = retryAfter;
  }

  /** Answers `res`: 503, `Retry-After`, a short text body. */
  respond(res) {
    respondRefused(res, this, '503 Service Unavailable: the server is at its limit of event streams');
  }
}

/**
 * Thrown by `initResponse` and `addClient` when `maxClientsPerKey`
 * connections under the request's key (`clientKey(req)`: by default its
 * remote address) are open or reserved. `statusCode` and `status` are 429;
 * `key` is that key; `respond(res)` answers the request.
 */
class SseKeyCapacityError extends Error {
  constructor(maxClientsPerKey, retryAfter = DEFAULT_RETRY_AFTER, key = undefined) {
    super(`the SSE hub is at its limit of ${maxClientsPerKey} clients per key`);
    this.name = 'SseKeyCapacityError';
    this.code = 'ERR_SSE_KEY_CAPACITY';
    this.statusCode = 429;
    this.status = 429;
    this.maxClientsPerKey = maxClientsPerKey;
    this.key = key;
    this.retryAfter = retryAfter;
  }

  /** Answers `res`: 429, `Retry-After`, a short text body. */
  respond(res) {
    respondRefused(res, this, '429 Too Many Requests: this client has too many event streams open');
  }
}

/** Whether `err` is one of the hub's refusals (answered by `respond`). */
function isRefusal(err) {
  return err instanceof SseCapacityError || err instanceof SseKeyCapacityError;
}

module.exports = {
  invalidType,
  invalidValue,
  kindOf,
  checkString,
  checkKey,
  SseCapacityError,
  SseKeyCapacityError,
  isRefusal,
};
