/**
 * Payload to JSON text, with `JSON.stringify` semantics on the fast path.
 *
 * Falls back to a tolerant pass only when the fast path throws: a circular
 * reference becomes "[Circular]" and a BigInt its decimal string. Anything
 * else that throws (a getter, a toJSON) is reported as a TypeError, before a
 * single byte is written. A top-level value JSON cannot represent
 * (undefined, a function, a symbol) becomes `null`, so every event carries
 * valid JSON.
 *
 * @param {unknown} payload
 * @returns {string}
 */
function serialize(payload) {
  let text;
  try {
    text = JSON.stringify(payload);
  } catch {
    text = tolerantStringify(payload);
  }
  return text === undefined ? 'null' : text;
}

function tolerantStringify(payload) {
  // The replacer is called with `this` bound to the object holding `key`, so
  // popping the stack down to `this` leaves exactly the current value's
  // ancestors: a value already on it is a cycle, a repeated sibling is not.
  const ancestors = [];
  try {
    return JSON.stringify(payload, function replacer(_key, value) {
      if (typeof value === 'bigint') return value.toString();
      if (typeof value !== 'object' || value === null) return value;
      while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
      if (ancestors.includes(value)) return '[Circular]';
      ancestors.push(value);
      return value;
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const error = new TypeError(`payload could not be serialized to JSON: ${reason}`, { cause: err });
    error.code = 'ERR_INVALID_ARG_VALUE';
    throw error;
  }
}

module.exports = { serialize };
