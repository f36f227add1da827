const { invalidType } = require('./errors.js');

/** True for anything that can act as an SSE response: write, end and on. */
function isResponseLike(value) {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof value.write === 'function' &&
    typeof value.end === 'function' &&
    typeof value.on === 'function'
  );
}

function assertResponse(res, name = 'res') {
  if (!isResponseLike(res)) {
    throw invalidType(`${name} must be an http.ServerResponse (an object with write, end and on)`);
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
  assertResponse(res);
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
  res.flushHeaders();
}

module.exports = { initResponse, isResponseLike, assertResponse, isHttp2 };
