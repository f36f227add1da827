// The native socket writer: which connections it takes, and what it must
// guarantee on real sockets (order, bounds, disconnects, fds, 10k clients).

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const _http = require('node:http');
const http2 = require('node:http2');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const compression = require('compression');
const { SseHub } = require('..');
const { startServer, rawGet, waitFor, collectGarbage, runToExit } = require('./helpers.js');

let hub;
let srv;
let idleRefs;

beforeEach(() => {
  hub = new SseHub();
  idleRefs = hub.nativeReferenceCount;
});

afterEach(async () => {
  hub.broadcastAndClose('bye');
  await waitFor(() => hub.nativeReferenceCount === idleRefs, 'references released');
  await srv?.close();
  srv = undefined;
});

function sseRoute(app, { before } = {}) {
  app.get('/events', (req, res) => {
    before?.(req, res);
    hub.initResponse(res);
    hub.addClient(req.query.id ?? null, res);
  });
}

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
    hub.broadcast('over h2');
    await waitFor(() => body === 'data: "over h2"\n\n', 'h2 event');
    stream.close();
    session.close();
    await waitFor(() => hub.getClientCount() === 0, 'h2 cleanup');
    await new Promise((r) => server.close(r));
  });
});

describe('the socket writer', () => {
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

  test('a client that stops reading is disconnected at maxBufferedBytes; memory stays bounded', async () => {
    hub.configure({ maxBufferedBytes: 256 * 1024, slowClientPolicy: 'disconnect' });
    srv = await startServer((app) => sseRoute(app));
    const stuck = rawGet(srv.port);
    const healthy = rawGet(srv.port);
    await waitFor(() => hub.getStats().socketConnections === 2, 'clients');
    await stuck.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    stuck.socket.pause();
    const big = { blob: 'z'.repeat(64 * 1024) };
    let sent = 0;
    while (hub.getStats().slowDisconnects === 0 && sent < 2000) {
      hub.broadcast(big);
      sent++;
      expect(hub.getStats().queuedBytes).toBeLessThanOrEqual(2 * (256 * 1024 + 70 * 1024));
      await new Promise((r) => setImmediate(r));
    }
    expect(hub.getStats().slowDisconnects).toBe(1);
    await waitFor(() => hub.getClientCount() === 1, 'slow one removed');
    // The server closed it: once it reads again, the client sees the end.
    stuck.socket.resume();
    await stuck.closed;
    // The healthy client got every frame, whole.
    await healthy.waitFor((x) => x.body().split('\n\n').length - 1 === sent, 'healthy frames', 20_000);
  });

  test('the drop policy skips whole frames while a client is behind and it catches up in order', async () => {
    hub.configure({ maxBufferedBytes: 128 * 1024, slowClientPolicy: 'drop' });
    srv = await startServer((app) => sseRoute(app));
    const slow = rawGet(srv.port);
    await waitFor(() => hub.getStats().socketConnections === 1, 'client');
    await slow.waitFor((x) => x.raw().includes('\r\n\r\n'), 'headers');
    slow.socket.pause();
    const pad = 'p'.repeat(32 * 1024);
    let seq = 0;
    while (hub.getStats().framesDropped === 0 && seq < 5000) {
      hub.broadcast({ seq: seq++, pad });
      await new Promise((r) => setImmediate(r));
    }
    expect(hub.getStats().framesDropped).toBeGreaterThan(0);
    expect(hub.getClientCount()).toBe(1);
    slow.socket.resume();
    await waitFor(() => hub.getStats().queuedBytes === 0, 'drained', 20_000);
    hub.broadcast({ seq: seq++, pad: 'final' });
    await slow.waitFor((x) => x.body().includes('"pad":"final"'), 'final frame', 20_000);
    const seen = slow
      .body()
      .split('\n\n')
      .filter(Boolean)
      .map((e) => JSON.parse(e.slice('data: '.length)).seq);
    expect(seen.length).toBeLessThan(seq);
    expect(seen.at(-1)).toBe(seq - 1);
    expect(seen.every((s, i) => i === 0 || s > seen[i - 1])).toBe(true);
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

  test('5k connection churns: no fd growth, no memory growth', async () => {
    const responses = new Set();
    srv = await startServer((app) =>
      app.get('/events', (_req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
        hub.send(res, { hello: 1 });
        responses.add(res);
        res.on('close', () => responses.delete(res));
      }),
    );
    const openFds = () => fs.readdirSync('/proc/self/fd').length;
    const churn = async (count) => {
      for (let done = 0; done < count; done += 50) {
        const sockets = [];
        for (let i = 0; i < 50; i++) {
          const s = net.connect(srv.port, '127.0.0.1');
          s.on('error', () => {});
          s.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
          sockets.push(s);
        }
        await waitFor(() => hub.getStats().socketConnections === 50, 'batch', 10_000);
        hub.broadcast({ done });
        // Some leave through the server's graceful end, the rest abruptly.
        if (done % 100 === 0) hub.removeClient([...responses][0]);
        for (const s of sockets) s.destroy();
        await waitFor(() => hub.getClientCount() === 0 && responses.size === 0, 'batch gone', 10_000);
      }
    };
    await churn(500);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle');
    await collectGarbage();
    const fdsBefore = openFds();
    const heapBefore = process.memoryUsage().heapUsed;
    await churn(5_000);
    await waitFor(() => hub.nativeReferenceCount === idleRefs, 'idle');
    await collectGarbage();
    expect(openFds()).toBeLessThanOrEqual(fdsBefore + 5);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(4 * 1024 * 1024);
  });

  /**
   * Connects `n` real clients (sse-clients.js) to burst-server.js in their
   * own processes, lets `checkStats` look at the hub's stats, broadcasts
   * `count` numbered frames and expects every client to get all of them.
   */
  async function burst({ n, count, timeoutMs, openFiles }, checkStats) {
    const server = lineProcess(path.join(__dirname, 'fixtures', 'burst-server.js'), [], { openFiles });
    const { port } = await server.next();
    const clients = lineProcess(path.join(__dirname, 'fixtures', 'sse-clients.js'), [port, n, count, timeoutMs]);
    try {
      expect(await clients.next()).toEqual({ connected: n });
      server.send('stats');
      checkStats((await server.next()).stats);
      server.send(`go ${count}`);
      expect((await server.next()).written).toBe(count * n);
      expect(await clients.next()).toEqual({ complete: n, problems: [] });
    } finally {
      server.kill();
      clients.kill();
    }
  }

  test('10k real clients each receive every frame of a 100-broadcast burst, in order, complete', async () => {
    const N = 10_000;
    await burst({ n: N, count: 100, timeoutMs: 90_000 }, (stats) => {
      expect(stats.clients).toBe(N);
      // The writer takes connections up to its fd budget; past it the rest
      // stay on the stream transport, and both must deliver.
      expect(stats.socketCapacity).toBeGreaterThan(N / 2);
      expect(stats.socketConnections).toBe(Math.min(N, stats.socketCapacity));
      expect(stats.streamConnections).toBe(N - stats.socketConnections);
    });
  }, 120_000);

  test('past the fd budget, new connections use the stream transport and still get every frame', async () => {
    // 300 open files: (300 - 128 reserved) / 2 = 86 connections fit with their duplicates.
    const N = 120;
    await burst({ n: N, count: 50, timeoutMs: 30_000, openFiles: 300 }, (stats) => {
      expect(stats).toMatchObject({ clients: N, socketCapacity: 86, socketConnections: 86, streamConnections: N - 86 });
    });
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

/** A child process speaking JSON lines on stdout, commands on stdin. */
function lineProcess(script, args, { openFiles } = {}) {
  const argv = [process.execPath, script, ...args.map(String)];
  const [command, ...rest] = openFiles ? ['bash', '-c', `ulimit -n ${openFiles} && exec "$@"`, 'bash', ...argv] : argv;
  const child = spawn(command, rest, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  const waiting = [];
  let buffer = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buffer += d;
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = JSON.parse(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
      nl = buffer.indexOf('\n');
    }
  });
  return {
    next: () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiting.push(r))),
    send: (line) => child.stdin.write(`${line}\n`),
    kill: () => child.kill(),
  };
}
