// Shared test utilities: real Express 5 servers on 127.0.0.1, a raw HTTP
// client that sees the exact bytes, decoders for what it received, small
// waiting helpers, child processes, fd inspection and the outcome of a call.
// The per-test hub, route and clients of the feature specs: hub-fixture.js.

const { spawn } = require('node:child_process');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const express = require('express');
const { SseHub } = require('..');

/** Starts an Express app on 127.0.0.1 with a free port. */
async function startServer(configure) {
  const app = express();
  configure(app);
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  // For the leak check of environment.js: which test left it listening.
  server.startedBy = globalThis.expect?.getState().currentTestName;
  const { port } = server.address();
  return {
    app,
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Opens a raw TCP connection, sends a GET and records every byte the server
 * writes: head and chunked body as they are on the wire.
 */
function rawGet(port, path = '/events', headers = {}) {
  const socket = net.connect(port, '127.0.0.1');
  const chunks = [];
  const closed = new Promise((resolve) => socket.on('close', resolve));
  socket.on('data', (d) => chunks.push(d));
  socket.on('error', () => {});
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${extra}\r\n`);
  const client = {
    socket,
    closed,
    /** Everything received so far, as latin1 so bytes map 1:1 to chars. */
    raw: () => Buffer.concat(chunks).toString('latin1'),
    head: () => client.raw().split('\r\n\r\n')[0],
    /** The response body with the chunked framing removed, as UTF-8. */
    body: () => dechunk(Buffer.concat(chunks)).toString('utf8'),
    /** The chunk payloads, one string per HTTP chunk. */
    chunks: () => splitChunks(Buffer.concat(chunks)).map((c) => c.toString('utf8')),
    async waitFor(predicate, what = 'data', timeoutMs = 5000) {
      await waitFor(() => predicate(client), what, timeoutMs);
    },
    destroy: () => socket.destroy(),
  };
  return client;
}

function splitChunks(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return [];
  const out = [];
  let i = headEnd + 4;
  while (i < buf.length) {
    const lineEnd = buf.indexOf('\r\n', i);
    if (lineEnd < 0) break;
    const size = Number.parseInt(buf.subarray(i, lineEnd).toString('latin1'), 16);
    if (Number.isNaN(size) || lineEnd + 2 + size + 2 > buf.length) break;
    if (size === 0) break;
    out.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
    i = lineEnd + 2 + size + 2;
  }
  return out;
}

function dechunk(buf) {
  return Buffer.concat(splitChunks(buf));
}

async function waitFor(predicate, what = 'condition', timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  // An async predicate is awaited (a pending promise is not an answer).
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Forces full garbage collections; tests run with --expose-gc. */
async function collectGarbage() {
  if (typeof global.gc !== 'function') throw new Error('run the tests with node --expose-gc');
  for (let i = 0; i < 4; i++) {
    global.gc();
    await new Promise((r) => setImmediate(r));
  }
}

/** An SSE route using the documented usage example verbatim. */
function documentedRoute(sseHelper) {
  return (req, res) => {
    sseHelper.initResponse(res);
    const clientId = req.sessionID || sseHelper.addClient(res);
    sseHelper.addClient(clientId, res, { ip: req.ip });
    sseHelper.send(res, { utc: new Date().toISOString() });
  };
}

/** The smallest thing the helper accepts as a response: counts its writes. */
class FakeResponse extends EventEmitter {
  finished = false;
  writableEnded = false;
  writes = 0;
  write() {
    this.writes++;
    return true;
  }
  end() {
    this.writableEnded = true;
    this.finished = true;
  }
}

/**
 * Runs `script` with `node -e` and resolves with its exit code and stdout
 * once it exits on its own, or with code 'still running' after
 * `timeoutMs` (then kills it): for "nothing keeps the process alive" tests.
 */
function runToExit(script, timeoutMs = 15_000) {
  return runNode([], script, timeoutMs);
}

/**
 * Like runToExit, with options for node itself (e.g. --expose-gc). With
 * `captureStderr`, the child's stderr is collected into the result's
 * `stderr` (for a test that expects output there) instead of shown.
 */
function runNode(nodeArgs, script, timeoutMs = 15_000, { captureStderr = false } = {}) {
  const child = spawn(process.execPath, [...nodeArgs, '-e', script], {
    stdio: ['ignore', 'pipe', captureStderr ? 'pipe' : 'inherit'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const result = (code) => (captureStderr ? { code, stdout, stderr } : { code, stdout });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill();
      resolve(result(`still running after ${timeoutMs} ms`));
    }, timeoutMs);
    // With stderr captured, 'close': every byte it wrote has been read.
    child.on(captureStderr ? 'close' : 'exit', (code) => {
      clearTimeout(timer);
      resolve(result(code));
    });
  });
}

/** Rejects with a readable message when `promise` takes longer than `ms`. */
async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One turn of the event loop: lets I/O and the socket writer's callbacks run. */
const nextTurn = () => new Promise((r) => setImmediate(r));

/** The events of an SSE body, each without its terminating blank line. */
const framesOf = (body) => body.split('\n\n').slice(0, -1);

/** Everything a rawGet client received, as bytes. */
const rawBytes = (c) => Buffer.from(c.raw(), 'latin1');

/**
 * Strict HTTP/1.1 chunked decoding of a raw response: the body, whether it
 * ended with the terminating chunk and nothing after it, or where it broke.
 * Self-contained, so child processes can inline its source.
 */
function parseChunked(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return { error: 'no head' };
  const parts = [];
  let i = headEnd + 4;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', i);
    if (lineEnd < 0) return { error: `unterminated chunk size at ${i}`, body: Buffer.concat(parts), ended: false };
    const sizeText = buf.subarray(i, lineEnd).toString('latin1');
    if (!/^[0-9a-f]+$/.test(sizeText)) {
      return { error: `bad chunk size ${JSON.stringify(sizeText.slice(0, 16))} at ${i}`, body: Buffer.concat(parts) };
    }
    const size = Number.parseInt(sizeText, 16);
    if (size === 0) {
      const ended = buf.subarray(lineEnd).toString('latin1') === '\r\n\r\n';
      return { error: ended ? null : 'bytes after the last chunk', body: Buffer.concat(parts), ended };
    }
    const end = lineEnd + 2 + size;
    if (end + 2 > buf.length) return { error: `truncated chunk at ${i}`, body: Buffer.concat(parts), ended: false };
    if (buf.subarray(end, end + 2).toString('latin1') !== '\r\n') {
      return { error: `chunk at ${i} not followed by CRLF`, body: Buffer.concat(parts), ended: false };
    }
    parts.push(buf.subarray(lineEnd + 2, end));
    i = end + 2;
  }
}

/** What /proc/self/fd/<fd> links to, e.g. 'socket:[123]': names the connection, not the fd. */
const fdLink = (fd) => fs.readlinkSync(`/proc/self/fd/${fd}`);

/** How many fds of this process refer to the connection `link` names (Node's own and any duplicate). */
function fdsOn(link) {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === link) n++;
    } catch {
      // Closed while we looked (readdir's own fd among them).
    }
  }
  return n;
}

/** What a call threw (or returned), in a form that diffs well. */
function outcome(call) {
  try {
    const value = call();
    return { returned: value instanceof SseHub ? '(the hub)' : value };
  } catch (err) {
    return {
      threw: err instanceof TypeError ? 'TypeError' : String(err?.name),
      code: err?.code,
      message: String(err?.message),
    };
  }
}

/** The outcome of a call refused with a TypeError `code` whose message starts with `name` and a space. */
const refused = (code, name) => ({
  threw: 'TypeError',
  code,
  message: expect.stringMatching(new RegExp(`^${name.replace('.', '\\.')} `)),
});

module.exports = {
  FakeResponse,
  runToExit,
  runNode,
  startServer,
  rawGet,
  waitFor,
  within,
  delay,
  nextTurn,
  collectGarbage,
  documentedRoute,
  dechunk,
  framesOf,
  rawBytes,
  parseChunked,
  fdLink,
  fdsOn,
  outcome,
  refused,
};
