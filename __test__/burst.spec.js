// Many connections on the socket writer: 5k connection churns without fd or
// memory growth, 10k real clients (in their own processes) receiving a
// 100-broadcast burst, and the stream-transport fallback past the fd budget.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { sseFixture } = require('./hub-fixture.js');
const { waitFor, collectGarbage } = require('./helpers.js');

let hub;
let srv;
let idleRefs;
const { startServer } = sseFixture((t) => {
  ({ hub, srv, idleRefs } = t);
});

describe('the socket writer', () => {
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
  async function burst({ n, count, timeoutMs, openFiles, writerThreads }, checkStats) {
    const server = lineProcess(
      path.join(__dirname, 'fixtures', 'burst-server.js'),
      writerThreads ? [writerThreads] : [],
      {
        openFiles,
      },
    );
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

  test('10k real clients each receive every frame of a 100-broadcast burst, in order, complete (2 writer threads)', async () => {
    const N = 10_000;
    await burst({ n: N, count: 100, timeoutMs: 90_000, writerThreads: 2 }, (stats) => {
      expect(stats.clients).toBe(N);
      // Spread over both writer threads.
      expect(stats.writerThreads).toBe(2);
      expect(stats.socketConnectionsByThread.reduce((a, b) => a + b, 0)).toBe(stats.socketConnections);
      expect(Math.min(...stats.socketConnectionsByThread)).toBeGreaterThan(stats.socketConnections / 2 - 2);
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
      // Counted as what they are: past the writer's capacity.
      expect(stats.streamFallbacks).toMatchObject({ capacity: N - 86, noFd: 0, fdMismatch: 0 });
    });
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
