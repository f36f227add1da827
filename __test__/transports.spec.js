// Which transport a connection gets (the native socket writer for plain
// HTTP/1.1 over TCP; the stream for TLS, HTTP/2 and a compressing
// middleware), what the socket writer guarantees (order with the app's own
// writes, merged sends, abrupt disconnects, never keeping the process alive),
// gzip behind the compression middleware, and the fd handed to the writer.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http2 = require('node:http2');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
const compression = require('compression');
const { sseFixture } = require('./hub-fixture.js');
const { rawGet, waitFor, delay, dechunk, runToExit, outcome } = require('./helpers.js');

let hub;
let srv;

/** The stream-transport reasons counted so far (the nonzero ones). */
function fallbacks() {
  const counts = hub.getStats().streamFallbacks;
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
}
const { client, startServer, sseRoute } = sseFixture((t) => {
  ({ hub, srv } = t);
});

describe('which transport a connection gets', () => {
  test('plain HTTP/1.1 over TCP is handed to the socket writer; configure can keep it on the stream', async () => {
    srv = await startServer((app) => sseRoute(app));
    const a = rawGet(srv.port);
    await waitFor(() => hub.getClientCount() === 1, 'a');
    expect(hub.getStats().socketCapacity).toBeGreaterThan(0);
    hub.configure({ transport: 'stream' });
    expect(hub.getStats().socketCapacity).toBe(0);
    const b = rawGet(srv.port);
    await waitFor(() => hub.getClientCount() === 2, 'b');
    expect(hub.getStats()).toMatchObject({ clients: 2, socketConnections: 1, streamConnections: 1 });
    expect(fallbacks()).toEqual({ configured: 1 });
    expect(hub.broadcast({ n: 1 })).toBe(2);
    for (const c of [a, b]) {
      await c.waitFor((x) => x.body() === 'data: {"n":1}\n\n');
      // Both transports put the same bytes on the wire.
      expect(c.raw().endsWith('\r\n\r\nf\r\ndata: {"n":1}\n\n\r\n')).toBe(true);
    }
    expect(() => hub.configure({ transport: 'fast' })).toThrow(/^options.transport must be 'auto' or 'stream'/);
    expect(() => hub.configure({ maxBufferedBytes: -1 })).toThrow(TypeError);
    expect(() => hub.configure({ slowClientPolicy: 'ignore' })).toThrow(/slowClientPolicy/);
  });

  test("an HTTP/1.0 client (nginx's default proxy_pass) gets the socket writer, bare frames, and a closed connection at the end", async () => {
    srv = await startServer((app) => sseRoute(app));
    const net = require('node:net');
    const socket = net.connect(srv.port, '127.0.0.1');
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => {
      raw += d;
    });
    const closed = new Promise((resolve) => socket.on('close', resolve));
    // What nginx sends upstream by default: HTTP/1.0, Connection: close.
    socket.write(`GET /events HTTP/1.0\r\nHost: 127.0.0.1:${srv.port}\r\nConnection: close\r\n\r\n`);
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    expect(hub.getStats()).toMatchObject({ socketConnections: 1, streamConnections: 0 });
    expect(fallbacks()).toEqual({});
    expect(hub.broadcast({ n: 1 })).toBe(1);
    hub.comment(null, 'kept alive');
    expect(hub.sendToClient(hub._clients.keys().next().value, 'to you')).toBe(true);
    const body = 'data: {"n":1}\n\n: kept alive\n\ndata: "to you"\n\n';
    await waitFor(() => raw.endsWith(body), 'the frames, bare');
    const [head, rest] = raw.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head).not.toMatch(/transfer-encoding/i);
    expect(head).not.toMatch(/content-length/i);
    expect(rest).toBe(body);
    // The body ends with the connection: Node closes it after the writer.
    expect(hub.broadcastAndClose('bye')).toBe(1);
    await closed;
    expect(raw.split('\r\n\r\n')[1]).toBe(`${body}data: "bye"\n\n`);
    await waitFor(() => hub.getClientCount() === 0, 'removed');
  });

  test('a Content-Length stays on the stream transport (a fixed-length body cannot take frames)', async () => {
    srv = await startServer((app) =>
      app.get('/events', (_req, res) => {
        res.setHeader('Content-Length', '1000');
        hub.initResponse(res);
        hub.addClient(res);
      }),
    );
    rawGet(srv.port);
    await waitFor(() => hub.getClientCount() === 1, 'registered');
    expect(hub.getStats()).toMatchObject({ socketConnections: 0, streamConnections: 1 });
    expect(fallbacks()).toEqual({ contentLength: 1 });
  });

  test('every connection on the stream is counted by its reason, in getStats() and metrics()', async () => {
    srv = await startServer((app) => {
      // Registered before its headers went out (the original allows it).
      app.get('/early', (_req, res) => {
        hub.addClient(res);
      });
      sseRoute(app);
    });
    const early = rawGet(srv.port, '/early');
    await waitFor(() => hub.getClientCount() === 1, 'early');
    // A HEAD request: a response without a body.
    const net = require('node:net');
    const head = net.connect(srv.port, '127.0.0.1');
    head.on('error', () => {});
    head.write(`HEAD /events HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\n\r\n`);
    await waitFor(() => hub.getClientCount() === 2, 'head');
    const plain = rawGet(srv.port);
    await waitFor(() => hub.getClientCount() === 3, 'plain');
    expect(hub.getStats()).toMatchObject({ socketConnections: 1, streamConnections: 2 });
    expect(fallbacks()).toEqual({ headersNotSent: 1, noBody: 1 });
    // Every reason listed, zeros included, under the names the types give.
    const counts = hub.getStats().streamFallbacks;
    expect(Object.keys(counts)).toEqual(expect.arrayContaining(['configured', 'wrapped', 'tls', 'noFd', 'capacity']));
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(2);
    const text = hub.metrics();
    const samples = text.split('\n').filter((line) => line.startsWith('sse_stream_fallbacks_total{'));
    expect(samples).toHaveLength(Object.keys(counts).length);
    expect(samples).toContain('sse_stream_fallbacks_total{reason="headersNotSent"} 1');
    expect(samples).toContain('sse_stream_fallbacks_total{reason="noBody"} 1');
    expect(samples).toContain('sse_stream_fallbacks_total{reason="tls"} 0');
    expect(text).toContain('# TYPE sse_stream_fallbacks_total counter\n');
    // Counted once per registration: leaving does not uncount.
    early.destroy();
    head.destroy();
    await waitFor(() => hub.getClientCount() === 1, 'both left');
    expect(fallbacks()).toEqual({ headersNotSent: 1, noBody: 1 });
    // A label of the app's own may not take the family's.
    expect(() => hub.metrics({ labels: { reason: 'x' } })).toThrow(/options.labels.reason is taken/);
    plain.destroy();
  });

  test("on the stream, one broadcast skips a response the app just ended and writes the rest, on Node's write or its own", async () => {
    hub.configure({ transport: 'stream' });
    const responses = new Map();
    const errors = [];
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        res.on('error', (err) => errors.push(err.code));
        if (req.query.id === 'own') {
          const nodeWrite = res.write;
          res.write = function (...args) {
            return nodeWrite.apply(this, args);
          };
        }
        responses.set(req.query.id, res);
        hub.addClient(req.query.id, res);
      }),
    );
    const clients = Object.fromEntries(
      ['a', 'own', 'ended', 'b'].map((id) => [id, rawGet(srv.port, `/events?id=${id}`)]),
    );
    await waitFor(() => hub.getClientCount() === 4, 'four clients');
    // Ended by the app itself, in the same tick as the broadcast (its close comes later).
    responses.get('ended').end();
    expect(hub.broadcast({ n: 1 })).toBe(3);
    for (const id of ['a', 'own', 'b']) await clients[id].waitFor((c) => c.body() === 'data: {"n":1}\n\n', id);
    await clients.ended.waitFor((c) => c.raw().endsWith('0\r\n\r\n'), 'the ended body');
    expect(clients.ended.body()).toBe('');
    await delay(20);
    // No write after end reached Node (it would emit ERR_STREAM_WRITE_AFTER_END).
    expect(errors).toEqual([]);
    await waitFor(() => hub.getClientCount() === 3, 'the ended one removed');
    expect(hub.broadcast({ n: 2 })).toBe(3);
    for (const id of ['a', 'own', 'b']) {
      await clients[id].waitFor((c) => c.body() === 'data: {"n":1}\n\ndata: {"n":2}\n\n', id);
    }
  });

  test('on the stream, a client that app JS adds during a send, in place of one it removed, gets none of that send', async () => {
    hub.configure({ transport: 'stream' });
    const responses = new Map();
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        responses.set(req.query.id, res);
        // `c` is only registered later, by the getter below.
        if (req.query.id !== 'c') hub.addClient(req.query.id, res);
      }),
    );
    // One at a time: a send writes its targets in registration order, and
    // `a` must come before `b` for the swap to happen before `b`'s turn.
    const clients = {};
    for (const [id, registered] of [
      ['a', 1],
      ['b', 2],
      ['c', 2],
    ]) {
      clients[id] = rawGet(srv.port, `/events?id=${id}`);
      await waitFor(() => responses.get(id)?.headersSent && hub.getClientCount() === registered, id);
    }
    expect([...hub._clients.keys()]).toEqual(['a', 'b']);
    // Read by the send before it writes to `a`, which comes before `b`:
    // the app removes `b` and adds `c` in the middle of the send.
    const a = responses.get('a');
    let finished = a.finished;
    let swap = true;
    Object.defineProperty(a, 'finished', {
      configurable: true,
      get() {
        if (swap) {
          swap = false;
          hub.removeClientById('b');
          hub.addClient('c', responses.get('c'));
        }
        return finished;
      },
      set(value) {
        finished = value;
      },
    });
    hub.broadcast({ n: 1 });
    expect(swap).toBe(false);
    expect([...hub._clients.keys()].sort()).toEqual(['a', 'c']);
    await clients.a.waitFor((x) => x.body() === 'data: {"n":1}\n\n', 'a');
    await clients.b.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), "b's end");
    expect(clients.b.body()).toBe('');
    expect(hub.broadcast({ n: 2 })).toBe(2);
    await clients.a.waitFor((x) => x.body() === 'data: {"n":1}\n\ndata: {"n":2}\n\n', 'a, twice');
    // `c` got the next send and nothing of the one it was added during.
    await clients.c.waitFor((x) => x.body() === 'data: {"n":2}\n\n', 'c, the second only');
  });

  test("registering runs none of the app's JS through Array.prototype (the response table defines its elements)", async () => {
    // In a process of its own: Jest's sandbox has an Array.prototype of its
    // own, which the arrays the addon makes never see.
    const script = `
      const http = require('node:http');
      const { SseHub } = require(${JSON.stringify(path.join(__dirname, '..'))});
      const hub = new SseHub();
      hub.configure({ transport: 'stream' });
      let calls = 0;
      let listed = 0;
      const srv = http.createServer((_req, res) => {
        hub.initResponse(res);
        // Only for the registration: index setters an app (or a library it
        // loads) put on Array.prototype, which an assignment to a hole at
        // the first slots of the hub's table would reach.
        for (const index of ['0', '1', '2']) {
          Object.defineProperty(Array.prototype, index, {
            configurable: true,
            set(value) {
              calls++;
              Object.defineProperty(this, index, { value, writable: true, enumerable: true, configurable: true });
            },
          });
        }
        try {
          hub.addClient(res);
          // The registry's view is built natively as one array, too.
          listed = [...hub._clients.keys()].length;
        } finally {
          for (const index of ['0', '1', '2']) delete Array.prototype[index];
        }
        hub.broadcast({ n: 1 });
      });
      srv.listen(0, '127.0.0.1', () => {
        http.get('http://127.0.0.1:' + srv.address().port + '/', (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk) => {
            body += chunk;
            if (!body.endsWith('\\n\\n')) return;
            console.log(JSON.stringify({ calls, listed, body }));
            hub.close();
            process.exit(0);
          });
        });
      });
    `;
    const { code, stdout } = await runToExit(script);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ calls: 0, listed: 1, body: 'data: {"n":1}\n\n' });
  });

  // The test certificate is made with the openssl CLI (CI installs it).
  const withOpenssl = fs.existsSync('/usr/bin/openssl') ? test : test.skip;
  withOpenssl('TLS stays on the stream transport', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        path.join(dir, 'key.pem'),
        '-out',
        path.join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const key = fs.readFileSync(path.join(dir, 'key.pem'));
    const cert = fs.readFileSync(path.join(dir, 'cert.pem'));
    fs.rmSync(dir, { recursive: true, force: true });
    const server = https.createServer({ key, cert }, (_req, res) => {
      hub.initResponse(res);
      hub.addClient(res);
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const body = [];
    const req = https.get({ host: '127.0.0.1', port: server.address().port, path: '/', ca: cert }, (res) => {
      res.on('data', (d) => body.push(String(d)));
    });
    req.on('error', () => {});
    await waitFor(() => hub.getClientCount() === 1, 'tls client');
    expect(hub.getStats()).toMatchObject({ socketConnections: 0, streamConnections: 1 });
    expect(fallbacks()).toEqual({ tls: 1 });
    hub.broadcast({ secure: true });
    await waitFor(() => body.join('') === 'data: {"secure":true}\n\n', 'tls event');
    req.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('behind the compression middleware: stream transport, each event arrives at once', async () => {
    srv = await startServer((app) => {
      app.use(compression());
      sseRoute(app);
    });
    const c = rawGet(srv.port, '/events', { 'Accept-Encoding': 'gzip' });
    await waitFor(() => hub.getClientCount() === 1, 'client');
    expect(hub.getStats()).toMatchObject({ socketConnections: 0, streamConnections: 1 });
    expect(fallbacks()).toEqual({ wrapped: 1 });
    for (let i = 1; i <= 3; i++) {
      hub.broadcast({ i });
      // Not one behind: event i is there before event i+1 is sent.
      await c.waitFor((x) => x.body().endsWith(`data: {"i":${i}}\n\n`), `event ${i}`);
    }
    expect(c.head()).not.toMatch(/content-encoding/i);
  });

  test('HTTP/2: no Connection header, stream transport, events arrive', async () => {
    const server = http2.createServer((_req, res) => {
      hub.initResponse(res);
      hub.addClient(res);
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const session = http2.connect(`http://127.0.0.1:${server.address().port}`);
    const stream = session.request({ ':path': '/events' });
    let headers;
    let body = '';
    stream.on('response', (h) => {
      headers = h;
    });
    stream.setEncoding('utf8');
    stream.on('data', (d) => {
      body += d;
    });
    await waitFor(() => headers && hub.getClientCount() === 1, 'h2 client');
    expect(headers[':status']).toBe(200);
    expect(headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(headers.connection).toBeUndefined();
    expect(hub.getStats()).toMatchObject({ socketConnections: 0, streamConnections: 1 });
    expect(fallbacks()).toEqual({ notHttp1: 1 });
    hub.broadcast('over h2');
    await waitFor(() => body === 'data: "over h2"\n\n', 'h2 event');
    stream.close();
    session.close();
    await waitFor(() => hub.getClientCount() === 0, 'h2 cleanup');
    await new Promise((r) => server.close(r));
  });
});

describe.each([1, 2])('the socket writer, %i writer thread(s)', (writerThreads) => {
  beforeEach(() => hub.configure({ writerThreads }));

  test('connections spread over the threads, whose number is fixed while they run', async () => {
    srv = await startServer((app) => sseRoute(app));
    for (let i = 0; i < 4; i++) client(`/events?id=c${i}`);
    await waitFor(() => hub.getStats().socketConnections === 4, 'handed off');
    const { socketConnectionsByThread } = hub.getStats();
    expect(socketConnectionsByThread).toEqual(writerThreads === 1 ? [4] : [2, 2]);
    hub.configure({ writerThreads });
    expect(outcome(() => hub.configure({ writerThreads: writerThreads + 1 }))).toMatchObject({
      code: 'ERR_SSE_WRITER_RUNNING',
      message: expect.stringMatching(/^options\.writerThreads cannot change while the socket writer runs/),
    });
    expect(hub.getStats().writerThreads).toBe(writerThreads);
  });

  test("the app's own res.write stays in order with broadcasts, and res.end flushes first", async () => {
    let res;
    srv = await startServer((app) =>
      app.get('/events', (_req, r) => {
        hub.initResponse(r);
        hub.addClient(r);
        res = r;
      }),
    );
    const c = rawGet(srv.port);
    await waitFor(() => res && hub.getStats().socketConnections === 1, 'handed off');
    const expected = [];
    for (let i = 0; i < 50; i++) {
      hub.broadcast({ i });
      expected.push(`data: {"i":${i}}\n\n`);
      res.write(`data: app ${i}\n\n`);
      expected.push(`data: app ${i}\n\n`);
      res.write(Buffer.from(`: raw ${i}\n`));
      expected.push(`: raw ${i}\n`);
    }
    res.write('');
    res.end('data: last\n\n');
    expected.push('data: last\n\n');
    expect(hub.getClientCount()).toBe(0);
    await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'end of body');
    expect(c.body()).toBe(expected.join(''));
    // Node's own end and destroy are back once the writer let go; write is
    // the hub's write-after-end, which refuses without an 'error' event.
    await waitFor(() => !Object.hasOwn(res, 'end') && !Object.hasOwn(res, 'destroy'), 'restored');
    expect(res.writableEnded).toBe(true);
    expect(res.write('late')).toBe(false);
  });

  test('broadcasts, channel publishes and sends issued together reach each client in order', async () => {
    srv = await startServer((app) => sseRoute(app));
    const clients = [];
    for (let i = 0; i < 60; i++) clients.push(rawGet(srv.port, `/events?id=c${i}`));
    await waitFor(() => hub.getStats().socketConnections === 60, 'clients');
    const expected = clients.map(() => []);
    for (let i = 0; i < 60; i++) if (i % 3 === 0) hub.join(`c${i}`, 'thirds');
    // Issued in one turn, so the writer gets them as one batch and merges
    // them; each client must still see exactly its own sequence.
    for (let seq = 0; seq < 300; seq++) {
      const kind = seq % 3;
      if (kind === 0) {
        hub.broadcast({ seq });
        for (const list of expected) list.push(seq);
      } else if (kind === 1) {
        hub.publish('thirds', { seq });
        for (let i = 0; i < 60; i += 3) expected[i].push(seq);
      } else {
        // Every client in turn, channel members included.
        const target = Math.floor(seq / 3) % 60;
        hub.sendToClient(`c${target}`, { seq });
        expected[target].push(seq);
      }
    }
    for (const [i, c] of clients.entries()) {
      await c.waitFor((x) => x.body().split('\n\n').length - 1 === expected[i].length, `client ${i}`);
      const seen = c
        .body()
        .split('\n\n')
        .filter(Boolean)
        .map((e) => JSON.parse(e.slice('data: '.length)).seq);
      expect(seen).toEqual(expected[i]);
    }
  });

  test('abrupt disconnects in the middle of broadcasting', async () => {
    srv = await startServer((app) => sseRoute(app));
    const clients = [];
    for (let i = 0; i < 200; i++) clients.push(rawGet(srv.port));
    await waitFor(() => hub.getStats().socketConnections === 200, 'clients');
    for (let i = 0; i < 100; i++) {
      hub.broadcast({ i });
      if (i % 2 === 0) clients[i].socket.resetAndDestroy();
      else clients[i].destroy();
      await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => hub.getClientCount() === 100, 'half left');
    for (const c of clients.slice(100)) {
      await c.waitFor((x) => x.body().split('\n\n').length - 1 === 100, 'all frames');
      const seen = c
        .body()
        .split('\n\n')
        .filter(Boolean)
        .map((e) => JSON.parse(e.slice(6)).i);
      expect(seen).toEqual([...Array(100).keys()]);
    }
  });

  test('the writer thread never keeps the process alive', async () => {
    const script = `
      const http = require('node:http');
      const hub = require(${JSON.stringify(path.join(__dirname, '..'))});
      const server = http.createServer((req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
        hub.broadcast({ ok: true });
        if (hub.getStats().socketConnections !== 1) process.exit(3);
        setTimeout(() => {
          res.on('finish', () => server.close());
          hub.broadcastAndClose('bye');
        }, 50);
      });
      server.listen(0, '127.0.0.1', () => {
        http.get('http://127.0.0.1:' + server.address().port, (res) => res.resume());
      });`;
    const { code } = await runToExit(script);
    expect(code).toBe(0);
  });
});

describe('behind a compressing middleware', () => {
  test('without no-transform the stream is gzipped, and res.flush() still delivers each event at once', async () => {
    srv = await startServer((app) => {
      app.use(compression());
      // The helper's own headers: no-transform, so `compression` leaves it alone.
      app.get('/sse', (_req, res) => {
        hub.initResponse(res);
        hub.addClient('plain', res);
      });
      // An app that sets the content type itself: compression applies.
      app.get('/gz', (_req, res) => {
        res.setHeader('Content-Type', 'text/event-stream');
        res.setHeader('Cache-Control', 'no-cache');
        hub.addClient('gz', res);
      });
    });
    const plain = client('/sse', { 'Accept-Encoding': 'gzip' });
    const gz = client('/gz', { 'Accept-Encoding': 'gzip' });
    await waitFor(() => hub.getClientCount() === 2, 'registered');
    expect(hub.getStats()).toMatchObject({ streamConnections: 2, socketConnections: 0 });
    const decompressed = () => {
      const body = dechunk(Buffer.from(gz.raw(), 'latin1'));
      if (body.length === 0) return '';
      return zlib.gunzipSync(body, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString('utf8');
    };
    let expected = '';
    for (let i = 1; i <= 5; i++) {
      expect(hub.broadcast({ i, text: 'compressible '.repeat(20) }, { id: String(i) })).toBe(2);
      expected += `id: ${i}\ndata: ${JSON.stringify({ i, text: 'compressible '.repeat(20) })}\n\n`;
      // Event i is readable before event i+1 is sent: nothing waits in the compressor.
      await waitFor(() => decompressed() === expected, `gzip event ${i}`);
      await plain.waitFor((x) => x.body() === expected, `plain event ${i}`);
    }
    expect(gz.head()).toMatch(/\r\nContent-Encoding: gzip\r\n/i);
    expect(dechunk(Buffer.from(gz.raw(), 'latin1')).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(dechunk(Buffer.from(gz.raw(), 'latin1')).length).toBeLessThan(Buffer.byteLength(expected));
    expect(plain.head()).not.toMatch(/content-encoding/i);
  });
});

describe('the fd handed to the socket writer', () => {
  test("a handle whose fd lies (it reports another connection's fd) keeps that response on the stream transport", async () => {
    let fdOfA;
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        if (req.query.id === 'a') fdOfA = res.socket._handle.fd;
        else Object.defineProperty(res.socket._handle, 'fd', { configurable: true, get: () => fdOfA });
        hub.addClient(req.query.id, res);
      }),
    );
    const a = client('/events?id=a');
    await waitFor(() => hub.getStats().socketConnections === 1, 'a on the socket writer');
    const b = client('/events?id=b');
    await waitFor(() => hub.getClientCount() === 2, 'b registered');
    expect(hub.getStats()).toMatchObject({ clients: 2, socketConnections: 1, streamConnections: 1 });
    expect(fallbacks()).toEqual({ fdMismatch: 1 });
    hub.sendToClient('b', 'for b');
    hub.sendToClient('a', 'for a');
    hub.sendToClient('b', 'b again');
    await b.waitFor((x) => x.body() === 'data: "for b"\n\ndata: "b again"\n\n', 'b gets its own frames');
    await a.waitFor((x) => x.body() === 'data: "for a"\n\n', 'a gets its frame');
    await delay(50);
    // Exactly its own chunk on A's wire, nothing of B's.
    expect(a.raw().slice(a.head().length)).toBe('\r\n\r\nf\r\ndata: "for a"\n\n\r\n');
  });
});
