// drainOnSignals(): the shutdown process managers send (PM2 SIGINT, systemd
// and Docker SIGTERM, nodemon SIGUSR2), on a real server in a child process
// with a real client: the client gets the retry hint and its stream ends,
// then the process ends by the same signal (or as the app's own listener
// decides).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { rawGet, waitFor } = require('./helpers.js');
const { SseHub } = require('..');

const SERVER = `
  const express = require(${JSON.stringify(require.resolve('express'))});
  const { SseHub } = require(${JSON.stringify(require.resolve('..'))});
  const hub = new SseHub().configure({ heartbeatMs: 0 });
  const options = JSON.parse(process.env.DRAIN_OPTIONS || '{}');
  hub.drainOnSignals(options);
  const app = express();
  app.get('/events', (req, res) => {
    hub.initResponse(res);
    hub.addClient(res);
    console.log('registered');
  });
  const server = app.listen(0, '127.0.0.1', () => console.log('port', server.address().port));
  if (process.env.APP_LISTENER) {
    process.on(process.env.APP_LISTENER, () => {
      console.log('app listener');
      server.close();
    });
  }
`;

/** The server in a child process; resolves once it listens. */
async function startChild(env = {}) {
  const child = spawn(process.execPath, ['-e', SERVER], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await waitFor(() => /port (\d+)/.test(out) || child.exitCode !== null, 'the child listening', 15_000);
  const port = Number(/port (\d+)/.exec(out)[1]);
  return { child, port, exited, out: () => out };
}

const children = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.child.exitCode === null) c.child.kill('SIGKILL');
});

async function connected(env) {
  const server = await startChild(env);
  children.push(server);
  const client = rawGet(server.port);
  await waitFor(() => server.out().includes('registered'), 'the client registered', 10_000);
  return { server, client };
}

test.each(['SIGTERM', 'SIGINT'])(
  '%s: the client gets the retry hint and its end, then the process ends by that signal',
  async (signal) => {
    const { server, client } = await connected({ DRAIN_OPTIONS: JSON.stringify({ retryMs: 1234 }) });
    server.child.kill(signal);
    expect(await server.exited).toEqual({ code: null, signal });
    await client.closed;
    expect(client.body()).toBe('retry: 1234\n\n');
    expect(client.raw()).toMatch(/\r\n0\r\n\r\n$/);
  },
);

test("SIGUSR2 (nodemon) only when asked for; without it the signal's default action applies", async () => {
  const asked = await connected({ DRAIN_OPTIONS: JSON.stringify({ signals: ['SIGUSR2'], retryMs: 50 }) });
  asked.server.child.kill('SIGUSR2');
  expect(await asked.server.exited).toEqual({ code: null, signal: 'SIGUSR2' });
  await asked.client.closed;
  expect(asked.client.body()).toBe('retry: 50\n\n');

  const notAsked = await connected({ DRAIN_OPTIONS: JSON.stringify({ retryMs: 50 }) });
  notAsked.server.child.kill('SIGUSR2');
  expect(await notAsked.server.exited).toEqual({ code: null, signal: 'SIGUSR2' });
  await notAsked.client.closed;
  expect(notAsked.client.body()).toBe('');
});

test("the app's own listener decides: the drain runs, nothing re-raises, the process ends when nothing is left", async () => {
  const { server, client } = await connected({ APP_LISTENER: 'SIGTERM', DRAIN_OPTIONS: '{"retryMs": 7}' });
  server.child.kill('SIGTERM');
  expect(await server.exited).toEqual({ code: 0, signal: null });
  expect(server.out()).toContain('app listener');
  await client.closed;
  expect(client.body()).toBe('retry: 7\n\n');
});

test('options are checked at once, and the returned function removes the listeners', () => {
  const hub = new SseHub();
  try {
    const before = process.listenerCount('SIGTERM');
    const uninstall = hub.drainOnSignals();
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    expect(process.listenerCount('SIGINT')).toBeGreaterThan(0);
    uninstall();
    expect(process.listenerCount('SIGTERM')).toBe(before);
    for (const [options, code] of [
      [{ signals: 'SIGTERM' }, 'ERR_INVALID_ARG_TYPE'],
      [{ signals: [] }, 'ERR_INVALID_ARG_VALUE'],
      [{ signals: ['SIGKILL'] }, 'ERR_INVALID_ARG_VALUE'],
      [{ timeoutMs: -1 }, 'ERR_INVALID_ARG_VALUE'],
      [{ timeoutMs: '1' }, 'ERR_INVALID_ARG_TYPE'],
      [{ retryMs: 1.5 }, 'ERR_INVALID_ARG_VALUE'],
      [{ signal: ['SIGTERM'] }, 'ERR_INVALID_ARG_VALUE'],
    ]) {
      expect(() => hub.drainOnSignals(options)).toThrow(expect.objectContaining({ code }));
    }
    expect(process.listenerCount('SIGTERM')).toBe(before);
  } finally {
    hub.close();
  }
});

test('node --watch: a change restarts the app; the old process drains first (its client gets the retry hint and its end)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-watch-'));
  const script = path.join(dir, 'server.js');
  fs.writeFileSync(script, SERVER);
  const watcher = spawn(process.execPath, ['--watch', script], {
    env: { ...process.env, DRAIN_OPTIONS: JSON.stringify({ retryMs: 321 }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  watcher.stdout.on('data', (d) => {
    out += d;
  });
  watcher.stderr.resume();
  const exited = new Promise((resolve) => watcher.once('exit', resolve));
  try {
    await waitFor(() => /port (\d+)/.test(out), 'the app listening', 15_000);
    const client = rawGet(Number(/port (\d+)/.exec(out)[1]));
    await waitFor(() => out.includes('registered'), 'the client registered', 10_000);
    fs.appendFileSync(script, '\n// changed\n');
    await client.closed;
    expect(client.body()).toBe('retry: 321\n\n');
    // The new process is up.
    await waitFor(() => (out.match(/port \d+/g) ?? []).length === 2, 'the restarted app listening', 15_000);
  } finally {
    watcher.kill('SIGTERM');
    const timer = setTimeout(() => watcher.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
