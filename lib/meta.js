// The app's `meta` for a client, as the native registry holds it: a
// Node-API reference needs an object, so a primitive meta travels boxed and
// is unboxed on its way back out (`_clients`, filters).

/** Holds a primitive meta value. */
class MetaBox {
  constructor(value) {
    this.value = value;
  }
}

/** `meta` as the registry stores it: undefined, the object itself, or a box. */
function toMeta(meta) {
  if (meta === undefined || meta === null) return undefined;
  return typeof meta === 'object' || typeof meta === 'function' ? meta : new MetaBox(meta);
}

/** The app's own meta back from what the registry stored. */
const fromMeta = (meta) => (meta instanceof MetaBox ? meta.value : meta);

module.exports = { toMeta, fromMeta };
