const { invalidType } = require('./errors.js');

/**
 * True for anything that can act as an SSE response: an object with
 * `write` (the original helper needs nothing more; `end` and `once` are
 * used when there).
 */
function isResponseLike(value) {
  return typeof value === 'object' && value !== null && typeof value.write === 'function';
}

/** The headers the original helper sets through Express's `res.set`. */
const ORIGINAL_HEADERS = Object.freeze({
  'Content-Type': 'text/event-stream',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
});

function assertResponse(res, name = 'res') {
  if (!isResponseLike(res) || typeof res.end !== 'function') {
    throw invalidType(`${name} must be an http.ServerResponse (an object with write and end)`);
  }
}

/** HTTP/2 responses (the compatibility API) must not carry `Connection`. */
function isHttp2(res) {
  return res.stream != null && typeof res.stream === 'object' && 'session' in res.stream;
}

/**
 * Turns `res` into an event stream: status 200, the SSE headers, headers
 * flushed at once so the browser's EventSource fires `open`, Nagle off so each
 * event leaves as soon as it is written.
 */
function initResponse(res) {
  if (typeof res?.setHeader !== 'function') {
    // Not a Node response: what the original does, for objects with
    // Express's `set` only (test doubles, other frameworks' adapters).
    if (typeof res?.set !== 'function') {
      throw invalidType('res must be an http.ServerResponse (an object with setHeader, or set)');
    }
    res.set({ ...ORIGINAL_HEADERS });
    if (typeof res.flushHeaders === 'function') res.flushHeaders();
    return;
  }
  if (res.headersSent) {
    throw new Error(
      'initResponse(res): the response headers were already sent; call initResponse before anything is written',
    );
  }
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  // no-transform keeps proxies and the `compression` middleware from
  // buffering the stream.
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  if (!isHttp2(res)) {
    res.setHeader('Connection', 'keep-alive');
    res.socket?.setNoDelay?.(true);
  }
  // nginx buffers proxied responses unless told otherwise.
  res.setHeader('X-Accel-Buffering', 'no');
  if (typeof res.flushHeaders === 'function') res.flushHeaders();
}

module.exports = { initResponse, isResponseLike, assertResponse, isHttp2 };
