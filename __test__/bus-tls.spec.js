// rediss://: the bus over TLS (rustls) to a real redis-server with TLS on,
// its certificate signed by a throwaway CA that only the hub is told about.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { SseHub } = require('..');
const { startRedis, startSentinel, onFreePorts } = require('./redis-helpers.js');
const { startServer, rawGet, waitFor, outcome, refused } = require('./helpers.js');

const ONLY_LINUX = process.platform === 'linux' ? describe : describe.skip;

let dir;
let redis;
let tlsPort;
let ca;

/** A CA and a server certificate for 127.0.0.1, made with openssl. */
function makeCertificates() {
  const openssl = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test-ca'].concat([
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
    ]),
  );
  openssl([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
  ]);
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial'].concat([
      '-days',
      '2',
      '-extfile',
      'san.ext',
      '-out',
      'server.crt',
    ]),
  );
  return fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8');
}

ONLY_LINUX('rediss://', () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-tls-'));
    ca = makeCertificates();
    // The TLS port may be taken before redis-server binds it, as the plain one may.
    redis = await onFreePorts(1, (free) => {
      tlsPort = free;
      return startRedis({
        args: [
          '--tls-port',
          String(tlsPort),
          '--tls-cert-file',
          path.join(dir, 'server.crt'),
          '--tls-key-file',
          path.join(dir, 'server.key'),
          '--tls-ca-cert-file',
          path.join(dir, 'ca.crt'),
          '--tls-auth-clients',
          'no',
        ],
      });
    });
  });

  afterAll(async () => {
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a hub trusting the CA connects over TLS and delivers through the stream', async () => {
    const hub = new SseHub();
    hub.configure({ redis: { url: `rediss://127.0.0.1:${tlsPort}`, stream: 'tls', ca } });
    await hub.ready();
    const srv = await startServer((app) =>
      app.get('/events', (_req, res) => {
        hub.initResponse(res);
        hub.addClient(res);
      }),
    );
    try {
      const client = rawGet(srv.port);
      await client.waitFor(() => hub.getClientCount() === 1, 'the client');
      expect(hub.broadcast({ over: 'tls' })).toBe(1);
      await client.waitFor((c) => c.body().includes('data: {"over":"tls"}'), 'the event');
      // It came back from the stream: its id is the entry's.
      const [entry] = await redis.command('XRANGE', 'tls', '-', '+');
      expect(client.body()).toContain(`id: ${entry[0]}\ndata: {"over":"tls"}\n\n`);
      expect(hub.getStats().bus).toMatchObject({ state: 'connected', entriesWritten: 1, entriesRead: 1 });
      client.destroy();
    } finally {
      await hub.close();
      await srv.close();
    }
  });

  test('an untrusted certificate is a disconnected bus with the TLS error, never a crash', async () => {
    const hub = new SseHub();
    const events = [];
    hub.on('bus', (e) => events.push(e));
    // The system roots do not know the throwaway CA.
    hub.configure({ redis: `rediss://127.0.0.1:${tlsPort}` });
    const deadline = Date.now() + 10_000;
    while (events.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(events[0]).toMatchObject({ state: 'disconnected' });
    expect(events[0].error).toBeInstanceOf(Error);
    expect(events[0].error.message).toMatch(/certificate|Unknown|invalid/i);
    expect(hub.getStats().bus.state).toBe('disconnected');
    // Broadcasts still reach this instance's clients (none here: 0).
    expect(hub.broadcast({ local: true })).toBe(0);
    expect(hub.getStats().bus.localFallbacks).toBe(1);
    await hub.close();
    expect(hub.getStats().bus.state).toBe('closed');
  });

  test('a CA that is not PEM is refused by configure', () => {
    const hub = new SseHub();
    let thrown;
    try {
      hub.configure({ redis: { url: `rediss://127.0.0.1:${tlsPort}`, ca: 'not a certificate' } });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect(thrown.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(thrown.message).toMatch(/^options\.redis\.ca must hold/);
    expect(hub.getStats().bus).toBeNull();
  });

  test('rediss+sentinel://: TLS to the Sentinel and to the master it names; the object form with tls: true says the same', async () => {
    const tls = (file) => path.join(dir, file);
    let sentinelTlsPort;
    // A Sentinel that speaks TLS to its clients (on sentinelTlsPort) and to
    // the master, which it knows by the master's TLS port: a bus that spoke
    // plain TCP on either hop would get no answer.
    const sentinel = await onFreePorts(1, (free) => {
      sentinelTlsPort = free;
      return startSentinel(tlsPort, {
        config: [
          `tls-port ${sentinelTlsPort}`,
          `tls-cert-file ${tls('server.crt')}`,
          `tls-key-file ${tls('server.key')}`,
          `tls-ca-cert-file ${tls('ca.crt')}`,
          'tls-auth-clients no',
          'tls-replication yes',
        ],
      });
    });
    const hubs = [];
    const srv = [];
    try {
      const fields = async () => {
        const flat = await sentinel.command('SENTINEL', 'master', 'm');
        return Object.fromEntries(flat.flatMap((v, i) => (i % 2 === 0 ? [[v, flat[i + 1]]] : [])));
      };
      await waitFor(
        async () => (await fields())['role-reported'] === 'master',
        'the Sentinel reaching the master over TLS',
        20_000,
      );
      const stream = 'tls-sentinel';
      const byUrl = new SseHub().configure({
        heartbeatMs: 0,
        redis: { url: `rediss+sentinel://127.0.0.1:${sentinelTlsPort}/m`, stream, ca },
      });
      hubs.push(byUrl);
      const byObject = new SseHub().configure({
        heartbeatMs: 0,
        redis: { sentinels: [{ host: '127.0.0.1', port: sentinelTlsPort }], masterName: 'm', tls: true, stream, ca },
      });
      hubs.push(byObject);
      await Promise.all(hubs.map((h) => h.ready()));
      for (const hub of hubs) {
        srv.push(
          await startServer((app) =>
            app.get('/events', (_req, res) => {
              hub.initResponse(res);
              hub.addClient(res);
            }),
          ),
        );
      }
      const clients = srv.map((s) => rawGet(s.port));
      await waitFor(() => hubs.every((h) => h.getClientCount() === 1), 'a client on each hub');
      // Made on one instance, delivered on both through the master's stream.
      expect(byObject.broadcast({ via: 'sentinel over tls' })).toBe(1);
      for (const client of clients) await client.waitFor((c) => c.body().includes('"sentinel over tls"'), 'the event');
      // Read back from the stream, so appended by now: its id is the one sent.
      const [entry] = await redis.command('XRANGE', stream, '-', '+');
      for (const client of clients) {
        expect(client.body()).toContain(`id: ${entry[0]}\ndata: {"via":"sentinel over tls"}\n\n`);
        client.destroy();
      }
      for (const hub of hubs) expect(hub.getStats().bus).toMatchObject({ state: 'connected', reconnects: 0 });
    } finally {
      for (const hub of hubs) await hub.close();
      for (const s of srv) await s.close();
      await sentinel.stop();
    }
  });

  test('a CA without TLS is refused by configure, not ignored; tls goes with sentinels only', () => {
    const configure = (redisOption) => () => new SseHub().configure({ redis: redisOption });
    expect(outcome(configure({ url: 'redis+sentinel://127.0.0.1:26379/m', ca }))).toEqual({
      threw: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
      message: expect.stringContaining('rediss+sentinel://'),
    });
    expect(outcome(configure({ sentinels: ['127.0.0.1:26379'], masterName: 'm', ca }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.redis.ca'),
    );
    expect(outcome(configure({ url: `rediss://127.0.0.1:${tlsPort}`, tls: true }))).toEqual(
      refused('ERR_INVALID_ARG_VALUE', 'options.redis.tls'),
    );
    expect(outcome(configure({ sentinels: ['127.0.0.1:26379'], masterName: 'm', tls: 'yes' }))).toEqual(
      refused('ERR_INVALID_ARG_TYPE', 'options.redis.tls'),
    );
  });
});
