// Client ids as the registry keys them. The original helper keys a `Map`,
// so any value is an id there, and two values are the same id exactly when
// `Map` says so (SameValueZero): `42` and `'42'` are two clients. The
// native registry keys by string, so each id is encoded to one string that
// no other id shares:
//
// - a well-formed string that does not start with U+0000 is itself (the
//   common case costs one check, and the id is the same string in events,
//   logs and on the Redis bus);
// - anything else is U+0000, a tag and a text: `s` and the JSON of a string
//   (JSON escapes lone surrogates, which would otherwise all become U+FFFD
//   in Rust and alias), `n` a number, `b` a BigInt, `t`/`f` a boolean, `u`
//   undefined, `z` null, `o`/`y` an object or a symbol by identity.
//
// `decode` gives back the value the app passed.

const TAG = '\u0000';

const isWellFormed =
  typeof String.prototype.isWellFormed === 'function'
    ? (text) => text.isWellFormed()
    : (text) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);

/**
 * Objects and symbols used as ids, by identity. Objects are held weakly
 * (an object id the app dropped cannot be looked up again anyway).
 */
const tokenOf = new WeakMap();
const objectOf = new Map();
const symbolTokens = new Map();
const symbolOf = new Map();
let nextToken = 0;

function identityToken(value) {
  if (typeof value === 'symbol') {
    let token = symbolTokens.get(value);
    if (token === undefined) {
      token = `${TAG}y${nextToken++}`;
      symbolTokens.set(value, token);
      symbolOf.set(token, value);
    }
    return token;
  }
  let token = tokenOf.get(value);
  if (token === undefined) {
    token = `${TAG}o${nextToken++}`;
    tokenOf.set(value, token);
    objectOf.set(token, new WeakRef(value));
  }
  return token;
}

/** The registry's string for `id`. Never throws. */
function encodeId(id) {
  switch (typeof id) {
    case 'string':
      return id.charCodeAt(0) !== 0 && isWellFormed(id) ? id : `${TAG}s${JSON.stringify(id)}`;
    case 'number':
      // SameValueZero: -0 is 0, NaN is NaN.
      return `${TAG}n${id === 0 ? 0 : id}`;
    case 'bigint':
      return `${TAG}b${id}`;
    case 'boolean':
      return id ? `${TAG}t` : `${TAG}f`;
    case 'undefined':
      return `${TAG}u`;
    default:
      return id === null ? `${TAG}z` : identityToken(id);
  }
}

/** The id the app passed, from the registry's string. */
function decodeId(key) {
  if (key.charCodeAt(0) !== 0) return key;
  const text = key.slice(2);
  switch (key[1]) {
    case 's':
      return JSON.parse(text);
    case 'n':
      return Number(text);
    case 'b':
      return BigInt(text);
    case 't':
      return true;
    case 'f':
      return false;
    case 'u':
      return undefined;
    case 'z':
      return null;
    case 'y':
      return symbolOf.get(key);
    case 'o':
      return objectOf.get(key)?.deref();
    default:
      return key;
  }
}

module.exports = { encodeId, decodeId };
