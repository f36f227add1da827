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

/** Refused because the hub was closed or is draining (`ERR_SSE_CLOSED`). */
function closedError() {
  const err = new Error('the SSE hub was closed');
  err.code = 'ERR_SSE_CLOSED';
  return err;
}

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

module.exports = { invalidType, invalidValue, kindOf, checkString, checkKey, closedError, SseCapacityError };
