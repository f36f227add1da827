// Which connections the native socket writer may take over, and the
// functions it installs on them: `write`/`end` so the app's own writes stay
// in order with the helper's frames (with Node's backpressure contract),
// `destroy` so a destroyed connection is dropped before anything else is
// sent to it, and the `write` a response gets once the hub ended it.

const http = require('node:http');
const { invalidType } = require('./errors.js');

const NODE_WRITE = http.ServerResponse.prototype.write;
const NODE_END = http.ServerResponse.prototype.end;
const SOCKET_PLATFORMS = new Set(['linux', 'darwin']);

/**
 * How Node delimits `res`'s body: 'chunked' (HTTP/1.1), 'identity' (a body
 * that ends when the connection closes: an HTTP/1.0 client, such as
 * nginx's default `proxy_pass`), or why the writer cannot frame it.
 */
function bodyFraming(res) {
  if (res._hasBody === false) return 'noBody';
  if (res.hasHeader?.('content-length')) return 'contentLength';
  if (res.hasHeader?.('transfer-encoding') && res.chunkedEncoding !== true) return 'transferEncoding';
  if (res.chunkedEncoding === true) return 'chunked';
  // Node closes the connection after such a body (`_last`): the writer's
  // bare frames are the body, and Node's own `end` closes it.
  if (res._last === true) return 'identity';
  return 'notDelimited';
}

/**
 * Where `res`'s socket is, when it can be handed to the native writer, else
 * why not (a reason's name, as the core counts them): plain HTTP/1.x
 * over TCP with a body the writer can frame (chunked, or close-delimited
 * for HTTP/1.0), Node's own write/end (no wrapper such as `compression`),
 * not TLS, headers sent and nothing pending. The native side checks that
 * the fd's addresses are the socket's before it writes to it, and counts
 * every reason. Everything else stays on the stream transport.
 */
function inspectSocket(res) {
  if (!SOCKET_PLATFORMS.has(process.platform)) return 'platform';
  if (res.req?.httpVersionMajor !== 1) return 'notHttp1';
  if (res.write !== NODE_WRITE || res.end !== NODE_END) return 'wrapped';
  if (!Object.isExtensible(res)) return 'notExtensible';
  if (res.headersSent !== true) return 'headersNotSent';
  const socket = res.socket;
  if (!socket) return 'noSocket';
  if (socket.encrypted) return 'tls';
  // Before the framing: where the socket has no fd (Bun's and Deno's
  // node:http), that is the reason, whatever else the response says.
  const fd = socket._handle?.fd;
  if (!Number.isInteger(fd) || fd < 0) return 'noFd';
  const framing = bodyFraming(res);
  if (framing !== 'chunked' && framing !== 'identity') return framing;
  if (socket.writableLength !== 0 || res.writableLength !== 0) return 'pending';
  const { remoteAddress, remotePort, localPort } = socket;
  if (typeof remoteAddress !== 'string' || !Number.isInteger(remotePort) || !Number.isInteger(localPort)) {
    return 'noAddresses';
  }
  return { fd, remoteAddress, remotePort, localPort, identity: framing === 'identity' };
}

/**
 * What `writeBatch` reports per response (the native side reads them), each
 * with `DONE` set: a place it did not reach still holds its slot.
 */
const BATCH = Object.freeze({ WRITTEN: 0, BUFFERED: 1, ENDED: 2, THREW: 3, NATIVE: 4, DONE: 0x8000_0000 });
const WRITTEN = BATCH.DONE | BATCH.WRITTEN;
const BUFFERED = BATCH.DONE | BATCH.BUFFERED;
const ENDED = BATCH.DONE | BATCH.ENDED;
const THREW = BATCH.DONE | BATCH.THREW;
const NATIVE = BATCH.DONE | BATCH.NATIVE;

/**
 * Whether `writeBatch` may put a chunk on a response's socket itself: on
 * Node only, whose `http` fields it reads (Bun's and Deno's `node:http`
 * have sockets of their own, which those fields do not describe).
 */
const DIRECT_SOCKET_WRITES = typeof process.versions.bun !== 'string' && typeof process.versions.deno !== 'string';

/**
 * Where Node's own `write(body)` on `res` would do nothing but put the
 * body's HTTP chunk (`chunk`, the same bytes) on `res.socket` and return
 * true, the socket to write `chunk` to, else undefined. Node's `write` makes
 * four socket writes per call (the size line, CRLF, the body, CRLF) under a
 * cork it lifts on the next tick, which cost more than the bytes; one write
 * of the whole chunk puts the same bytes on the wire, in the same order with
 * anything the app wrote. Everything else (headers not sent yet, a body Node
 * does not chunk, a response the app corked, whose writes Node 21 and later
 * hold on the response until `uncork()`, output Node holds for a socket not
 * yet assigned, an empty body, whose chunk would end the stream, a socket
 * the chunk would fill past its high-water mark, where Node's `write` must
 * return false and owe a `'drain'`) is left to Node's `write`.
 */
function directSocket(res, chunk, bodyStart) {
  if (
    res.chunkedEncoding !== true ||
    res._headerSent !== true ||
    res._hasBody !== true ||
    res.destroyed ||
    res.writableCorked !== 0 ||
    res.strictContentLength ||
    res.outputData?.length !== 0 ||
    chunk.length <= bodyStart + 2
  ) {
    return undefined;
  }
  const socket = res.socket;
  if (!socket || socket._httpMessage !== res || !socket.writable) return undefined;
  if (socket.writableLength + chunk.length >= socket.writableHighWaterMark) return undefined;
  return socket;
}

/**
 * A stream-transport send's writes to the responses whose `write` is
 * Node's own, in one call from the native side (a call from native code per
 * response, and its property reads, cost more than the write). `chunk` is
 * the frame's HTTP chunk, written whole to the socket where that is what
 * Node's `write` would do (`directSocket`); the rest get the frame's body,
 * the same `Buffer` view of it for each. `table` is the hub's response table
 * (every registered response at its slot, kept by the native side) and
 * `batch` the targets' slots in it, so nothing is built per target; each
 * place gets its response's code back (`BATCH`). No app code runs in Node's
 * own `write`, so none can change the registry in between. A response that
 * ended is skipped, as the original helper does; one with a `write` of its
 * own (a wrapper, a test double) is `NATIVE`, and the native side writes it
 * itself.
 */
function writeBatch(table, batch, chunk, bodyStart) {
  let body;
  for (let i = 0; i < batch.length; i++) {
    const res = table[batch[i]];
    let write;
    try {
      write = res.write;
    } catch {
      batch[i] = NATIVE;
      continue;
    }
    if (write !== NODE_WRITE) {
      batch[i] = NATIVE;
      continue;
    }
    // What Node's writableEnded getter returns.
    if (res.finished) {
      batch[i] = ENDED;
      continue;
    }
    try {
      const socket = DIRECT_SOCKET_WRITES ? directSocket(res, chunk, bodyStart) : undefined;
      if (socket !== undefined) {
        socket.write(chunk);
        batch[i] = WRITTEN;
      } else {
        body ??= chunk.subarray(bodyStart, chunk.length - 2);
        batch[i] = write.call(res, body) ? WRITTEN : BUFFERED;
      }
    } catch {
      batch[i] = THREW;
    }
  }
}

function toBytes(chunk, encoding) {
  if (typeof chunk === 'string') return Buffer.from(chunk, encoding ?? 'utf8');
  if (ArrayBuffer.isView(chunk)) return chunk;
  throw invalidType('chunk must be a string, Buffer or Uint8Array');
}

function writeAfterEndError() {
  const err = new Error('write after end: the SSE hub ended this response');
  err.code = 'ERR_STREAM_WRITE_AFTER_END';
  return err;
}

/**
 * The functions a hub installs on responses. One set per hub, shared by all
 * its responses (`this` is the response, or its socket for
 * `socketDestroy`). `native()` returns the native hub, or undefined once it
 * was garbage-collected: the response then keeps these functions until the
 * orphaned hub's writer has flushed and ended it, which puts Node's own
 * methods back.
 */
function responseHooks(native) {
  function release(res) {
    delete res.write;
    delete res.end;
    delete res.destroy;
    if (res.socket) delete res.socket.destroy;
  }
  // The hub forgets a destroyed connection (dropping what its writer
  // queued), then Node destroys it; without a hub Node's `close` event does
  // the forgetting.
  function write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    const hub = native();
    if (!hub) {
      // The hub was garbage-collected: its writer is flushing this
      // connection before ending it, so Node must not write to the socket
      // in between. Like a write after end.
      if (typeof callback === 'function') process.nextTick(callback, writeAfterEndError());
      return false;
    }
    const status = hub.writeRaw(this, toBytes(chunk, encoding), this.writableHighWaterMark);
    if (status < 0) {
      // Removed already (ending after its queue): like Node after end, but
      // never an 'error' event.
      if (typeof callback === 'function') process.nextTick(callback, writeAfterEndError());
      return false;
    }
    if (typeof callback === 'function') process.nextTick(callback);
    // false: the writer's backlog for this connection reached the
    // high-water mark; it emits 'drain' on the response once flushed.
    return status === 1;
  }
  function end(chunk, encoding, callback) {
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    const hub = native();
    if (typeof callback === 'function') this.once('finish', callback);
    // Ended for the app at once, as with Node's own `end` (`writableEnded`
    // reads `finished`); the hub puts it back before Node's `end` runs,
    // once the writer has flushed.
    // Without a hub (garbage-collected), its writer already ends this
    // connection after flushing, then puts Node's methods back.
    if (!hub) {
      this.finished = true;
      return this;
    }
    if (chunk !== undefined && chunk !== null) write.call(this, chunk, encoding);
    this.finished = true;
    // Unregistering ends it through Node once the queue is flushed.
    hub.unregister(this);
    return this;
  }
  // The writer must drop the connection before anything sent later in this
  // tick reaches it: Node's own close events come a tick late.
  function destroy(...args) {
    native()?.forget(this);
    release(this);
    return this.destroy(...args);
  }
  function socketDestroy(...args) {
    const res = this._httpMessage;
    if (res) {
      native()?.forget(res);
      release(res);
    }
    delete this.destroy;
    return this.destroy(...args);
  }
  /** `res.write` once the hub ended the response. */
  function writeAfterEnd(_chunk, encoding, callback) {
    if (typeof encoding === 'function') callback = encoding;
    if (typeof callback === 'function') process.nextTick(callback, writeAfterEndError());
    return false;
  }
  return { write, end, destroy, socketDestroy, writeAfterEnd, nodeWrite: NODE_WRITE, writeBatch };
}

module.exports = { inspectSocket, responseHooks, BATCH };
