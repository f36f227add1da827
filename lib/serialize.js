// Payloads to JSON text exactly as the original helper does: `JSON.stringify`,
// and when that throws (a cycle, a BigInt, a throwing getter or `toJSON`),
// `{"error":"unserializable payload"}` instead, so a send never throws on
// its payload. A top-level value JSON cannot represent (undefined, a
// function, a symbol) is the text `undefined`, as in the original's
// template string.

const UNSERIALIZABLE = JSON.stringify({ error: 'unserializable payload' });

/**
 * @param {unknown} payload
 * @returns {string}
 */
function serialize(payload) {
  try {
    return `${JSON.stringify(payload)}`;
  } catch {
    return UNSERIALIZABLE;
  }
}

/** The original's `formatSSEMessage`: one `data:` event, `data: <json>\n\n`. */
function formatSSEMessage(payload) {
  return `data: ${serialize(payload)}\n\n`;
}

module.exports = { serialize, formatSSEMessage };
