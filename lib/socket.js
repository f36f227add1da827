// Which connections the native socket writer may take over, and the
// `write`/`end` it installs on them so the app's own writes stay in order
// with the helper's frames.

const http = require('node:http');

const NODE_WRITE = http.ServerResponse.prototype.write;
const NODE_END = http.ServerResponse.prototype.end;
const SOCKET_PLATFORMS = new Set(['linux', 'darwin']);

/**
 * The socket's fd when `res` can be handed to the native writer, else -1:
 * plain HTTP/1.1 over TCP with chunked coding, Node's own write/end (no
 * wrapper such as `compression`), not TLS, headers sent and nothing pending.
 * Everything else stays on the stream transport.
 */
function socketFd(res) {
  if (!SOCKET_PLATFORMS.has(process.platform)) return -1;
  if (res.write !== NODE_WRITE || res.end !== NODE_END) return -1;
  if (res.headersSent !== true || res.chunkedEncoding !== true) return -1;
  if (res.req?.httpVersionMajor !== 1) return -1;
  const socket = res.socket;
  if (!socket || socket.encrypted || socket.writableLength !== 0 || res.writableLength !== 0) return -1;
  const fd = socket._handle?.fd;
  return Number.isInteger(fd) && fd >= 0 ? fd : -1;
}

function toBytes(chunk, encoding) {
  if (typeof chunk === 'string') return Buffer.from(chunk, encoding ?? 'utf8');
  if (ArrayBuffer.isView(chunk)) return chunk;
  throw new TypeError('chunk must be a string, Buffer or Uint8Array');
}

/**
 * `write` and `end` for responses the socket writer owns. One pair per hub,
 * shared by all its responses (`this` is the response). `native()` returns
 * the native hub, or undefined once it was garbage-collected, in which case
 * the response gets Node's own methods back.
 */
function responseHooks(native) {
  function release(res) {
    delete res.write;
    delete res.end;
  }
  function write(chunk, encoding, callback) {
    const hub = native();
    if (!hub) {
      release(this);
      return this.write(chunk, encoding, callback);
    }
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    const accepted = hub.writeRaw(this, toBytes(chunk, encoding));
    if (typeof callback === 'function') process.nextTick(callback);
    return accepted;
  }
  function end(chunk, encoding, callback) {
    const hub = native();
    if (!hub) {
      release(this);
      return this.end(chunk, encoding, callback);
    }
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (chunk !== undefined && chunk !== null) write.call(this, chunk, encoding);
    if (typeof callback === 'function') this.once('finish', callback);
    // Unregistering ends it through Node once the queue is flushed.
    hub.unregister(this);
    return this;
  }
  return { write, end };
}

module.exports = { socketFd, responseHooks };
