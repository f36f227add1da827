// For the platform tests (musl-suite.js, wine.spec.js): a private npm
// registry, as install.spec.js sets up its own, and the apps installed from
// it run on a foreign runtime. The registry: Verdaccio on a free
// loopback port, our packages never proxied ('sse-helper-native*' has no
// uplink), everything else (express) proxied from npmjs into the
// registry's temporary storage. The packages scripts/pack.js makes (every
// platform package that has a binary, and the main package naming them
// all) are published to it, and apps outside the repository install from
// it with npm, on a PATH without cargo, for the platform npm is told
// (`--os`, `--cpu`, `--libc`).

const { execFile, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const { EventSource } = require('eventsource');
const { waitFor, within } = require('./helpers.js');

const root = path.join(__dirname, '..');
const { name: NAME, version: VERSION } = require('../package.json');
const VERDACCIO = path.join(root, 'node_modules', 'verdaccio', 'bin', 'verdaccio');

// The environment of every child: nothing npm or napi-rs set for this process.
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_|napi_rs_)/i.test(k)));
// What a user without Rust has: PATH without any directory that is about cargo or holds it.
const PATH = (process.env.PATH ?? '')
  .split(path.delimiter)
  .filter((dir) => dir && !dir.includes('cargo') && !fs.existsSync(path.join(dir, 'cargo')))
  .join(path.delimiter);

const execFileAsync = promisify(execFile);

/** Runs a command to completion within `timeoutMs`; its output, or an error carrying its stderr. */
async function run(command, args, options, timeoutMs = 60_000) {
  try {
    return await execFileAsync(command, args, {
      encoding: 'utf8',
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 16 << 20,
      ...options,
    });
  } catch (err) {
    const how = err.killed ? `killed after ${timeoutMs} ms` : `exit ${err.code}`;
    throw new Error(`${command} ${args.join(' ')}: ${how}\n${err.stderr || err.message}`);
  }
}

async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Resolves true once Verdaccio answers its ping, false if it exits first or not within 30 s. */
async function registryUp(verdaccio, registry) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${registry}-/ping`, { signal: AbortSignal.timeout(2_000) })).ok) return true;
    } catch {
      // Not listening yet.
    }
    if (verdaccio.exitCode !== null || verdaccio.signalCode !== null || Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Resolves once `child` has exited; SIGTERM first, SIGKILL if it lingers. */
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  try {
    await within(exited, 10_000, `pid ${child.pid} to exit`);
  } catch {
    child.kill('SIGKILL');
    await within(exited, 5_000, `pid ${child.pid} to die`);
  }
}

function verdaccioConfig(work, port) {
  return [
    `storage: ${path.join(work, 'storage')}`,
    `listen: 127.0.0.1:${port}`,
    'max_body_size: 100mb',
    'web:',
    '  enable: false',
    'auth:',
    '  htpasswd:',
    `    file: ${path.join(work, 'htpasswd')}`,
    '    max_users: 1',
    'uplinks:',
    '  npmjs:',
    '    url: https://registry.npmjs.org/',
    '    timeout: 30s',
    'packages:',
    `  '${NAME}*':`,
    '    access: $all',
    '    publish: $authenticated',
    "  '**':",
    '    access: $all',
    '    publish: $authenticated',
    '    proxy: npmjs',
    'middlewares:',
    '  audit:',
    '    enabled: false',
    'log:',
    '  type: stdout',
    '  format: pretty',
    '  level: warn',
    '',
  ].join('\n');
}

/**
 * Starts Verdaccio in a new temporary folder and publishes what
 * scripts/pack.js packs (every platform that has a binary), or with
 * `release`, what scripts/release.js publishes (every platform, refused
 * when a binary is missing or stale). Returns { work, registry, published, installApp,
 * stop }: `installApp(name, npmFlags, files)` makes a fresh app in `work`
 * with `files` ({ name in the app: source path }), runs `npm install
 * sse-helper-native express@5` in it and returns its folder.
 */
async function startRegistry({ release = false } = {}) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-helper-registry-'));
  fs.writeFileSync(path.join(work, 'empty.npmrc'), '');
  let port;
  let registry;
  let verdaccio;
  let log = '';
  const stopAll = async () => {
    if (verdaccio) await stop(verdaccio);
    fs.rmSync(work, { recursive: true, force: true });
  };
  try {
    // A port can be taken between freePort() and Verdaccio's bind (any
    // outgoing loopback connection draws from the same range): then it exits
    // with EADDRINUSE, and the next try takes a fresh port.
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      registry = `http://127.0.0.1:${port}/`;
      fs.writeFileSync(path.join(work, 'config.yaml'), verdaccioConfig(work, port));
      log = '';
      verdaccio = spawn(process.execPath, [VERDACCIO, '--config', path.join(work, 'config.yaml')], {
        cwd: work,
        env: baseEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      verdaccio.stdout.on('data', (d) => {
        log += d;
      });
      verdaccio.stderr.on('data', (d) => {
        log += d;
      });
      if (await registryUp(verdaccio, registry)) break;
      await stop(verdaccio);
      if (attempt >= 5 || !log.includes('EADDRINUSE')) {
        throw new Error(`Verdaccio did not start (exit ${verdaccio.exitCode}):\n${log}`);
      }
    }
    // A user through the npm-compatible API (htpasswd, max_users 1); its token publishes.
    const user = await fetch(`${registry}-/user/org.couchdb.user:tester`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'tester', password: 'tester-password' }),
      signal: AbortSignal.timeout(10_000),
    });
    const { token } = await user.json();
    const npmrc = path.join(work, 'publish.npmrc');
    fs.writeFileSync(npmrc, `//127.0.0.1:${port}/:_authToken=${token}\n`);
    const env = { ...baseEnv, npm_config_cache: path.join(work, 'npm-cache-publish') };
    let published;
    if (release) {
      // As a maintainer releases: scripts/release.js checks every binary,
      // publishes the platform packages, then the main one.
      published = require('../scripts/release.js').release({
        registry,
        userconfig: npmrc,
        out: path.join(work, 'packages'),
        env,
      });
    } else {
      published = require('../scripts/pack.js').pack(path.join(work, 'packages'), { log: () => {} });
      const publish = (tgz) =>
        run('npm', ['publish', tgz, '--registry', registry, '--userconfig', npmrc], { env }, 60_000);
      // The platform packages first (side by side: none names another), then
      // the main package, which names them.
      await Promise.all(Object.values(published.platforms).map(publish));
      await publish(published.main);
    }

    /** Environment for npm in app `name`: our registry, its own empty cache and config, no cargo. */
    const appEnv = (name) => ({
      ...baseEnv,
      PATH,
      npm_config_registry: registry,
      npm_config_cache: path.join(work, `npm-cache-${name}`),
      npm_config_userconfig: path.join(work, 'empty.npmrc'),
      npm_config_audit: 'false',
      npm_config_fund: 'false',
      npm_config_update_notifier: 'false',
    });

    const installApp = async (name, npmFlags, files) => {
      const app = path.join(work, name);
      fs.mkdirSync(app);
      fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'commonjs' }));
      for (const [file, source] of Object.entries(files)) fs.copyFileSync(source, path.join(app, file));
      await run('npm', ['install', ...npmFlags, NAME, 'express@5'], { cwd: app, env: appEnv(name) }, 120_000);
      const lock = JSON.parse(fs.readFileSync(path.join(app, 'package-lock.json'), 'utf8'));
      // Ours came from the private registry.
      // Everything of ours came from the private registry; npm saw every published platform package.
      expect(lock.packages[`node_modules/${NAME}`].resolved).toBe(`${registry}${NAME}/-/${NAME}-${VERSION}.tgz`);
      const locked = Object.keys(lock.packages).filter((k) => k.startsWith(`node_modules/${NAME}-`));
      expect(locked.sort()).toEqual(Object.keys(published.platforms).map((p) => `node_modules/${NAME}-${p}`));
      return app;
    };

    return { work, registry, published, installApp, appEnv, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** What a platform app gets: the usage example as server.js, the contract subset as contract.js. */
const PLATFORM_APP_FILES = {
  'server.js': path.join(__dirname, 'fixtures', 'install-app.js'),
  'contract.js': path.join(__dirname, 'fixtures', 'platform-contract.js'),
};

/**
 * Starts the registry, which must have published `platform`, and installs
 * app `name` from it with `npmFlags` and PLATFORM_APP_FILES: resolves with
 * { registry, app } (the registry is stopped again if the install fails).
 */
async function startPlatformApp(platform, name, npmFlags) {
  const registry = await startRegistry();
  try {
    expect(Object.keys(registry.published.platforms)).toContain(platform);
    const app = await registry.installApp(name, npmFlags, PLATFORM_APP_FILES);
    return { registry, app };
  } catch (err) {
    await registry.stop();
    throw err;
  }
}

/** A contract run passed: no fatal error (else its stderr is shown), no failed check, all ten run. */
function expectContractPassed(report, stderr) {
  expect({ fatal: report.fatal, stderr: report.fatal ? stderr : '' }).toEqual({ fatal: undefined, stderr: '' });
  expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  expect(report.checks).toHaveLength(10);
}

const children = [];

/** Spawns `command args` with stdout and stderr in files (under Wine, node.exe's stdout to a pipe fails with EBADF). */
function spawnToFiles(command, args, { cwd, env, name }) {
  const out = path.join(cwd, `${name}.stdout`);
  const err = path.join(cwd, `${name}.stderr`);
  const fds = [fs.openSync(out, 'w'), fs.openSync(err, 'w')];
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', ...fds] });
  for (const fd of fds) fs.closeSync(fd);
  children.push(child);
  const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
  return { child, stdout: () => read(out), stderr: () => read(err) };
}

/** Starts an app's server.js (install-app.js) and resolves with its URL once it has printed its port. */
async function startApp(command, args, { cwd, env, timeoutMs }) {
  const app = spawnToFiles(command, args, { cwd, env, name: 'server' });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = app.stdout().split('\n')[0];
    if (app.stdout().includes('\n')) return `http://127.0.0.1:${JSON.parse(line).port}`;
    if (app.child.exitCode !== null || app.child.signalCode !== null || Date.now() > deadline) {
      await stop(app.child);
      throw new Error(`the app did not listen (exit ${app.child.exitCode ?? app.child.signalCode}):\n${app.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `command args` to its end with stdout and stderr in files; resolves with { status, stdout, stderr }. */
async function runToEnd(command, args, { cwd, env, timeoutMs, name = 'run' }) {
  const run = spawnToFiles(command, args, { cwd, env, name });
  const exited = new Promise((resolve) => run.child.once('exit', (code, signal) => resolve(code ?? signal)));
  try {
    const status = await within(exited, timeoutMs, `${name} to end`);
    return { status, stdout: run.stdout(), stderr: run.stderr() };
  } catch (err) {
    await stop(run.child);
    throw new Error(`${err.message}\n${run.stderr()}`);
  }
}

/** Runs an app's contract.js (fixtures/platform-contract.js) to its end and resolves with its report. */
async function runContract(command, args, { cwd, env, timeoutMs }) {
  const reportFile = path.join(cwd, 'contract-report.json');
  fs.rmSync(reportFile, { force: true });
  const { status, stderr } = await runToEnd(command, args, {
    cwd,
    env: { ...env, REPORT_FILE: reportFile },
    timeoutMs,
    name: 'contract',
  });
  if (!fs.existsSync(reportFile)) throw new Error(`the contract run wrote no report (exit ${status}):\n${stderr}`);
  return { status, report: JSON.parse(fs.readFileSync(reportFile, 'utf8')), stderr };
}

/**
 * The README's usage example through a real socket, as install.spec.js
 * drives it: an EventSource gets the greeting, the connection is on
 * `transport` ('socket': the native writer; 'stream': Node's own writes),
 * and a broadcast reaches it.
 */
async function exerciseUsageExample(url, { arch, transport, timeoutMs }) {
  const es = new EventSource(`${url}/events`);
  try {
    const messages = [];
    es.onmessage = (e) => messages.push(JSON.parse(e.data));
    await within(
      new Promise((resolve, reject) => {
        es.onopen = resolve;
        es.onerror = reject;
      }),
      timeoutMs,
      'the EventSource to open',
    );
    await waitFor(() => messages.length === 1, 'the greeting', timeoutMs);
    expect(Object.keys(messages[0])).toEqual(['utc']);
    const stats = await getJson(`${url}/stats`);
    expect(stats).toMatchObject({
      arch,
      clients: 1,
      socketConnections: transport === 'socket' ? 1 : 0,
      streamConnections: transport === 'stream' ? 1 : 0,
    });
    expect(await getJson(`${url}/broadcast`, { method: 'POST' })).toEqual({ delivered: 1 });
    await waitFor(() => messages.length === 2, 'the broadcast', timeoutMs);
    expect(messages[1]).toEqual({ broadcast: 1, arch });
    return stats;
  } finally {
    es.close();
  }
}

const getJson = async (url, init) => (await fetch(url, { signal: AbortSignal.timeout(30_000), ...init })).json();

/** Stops every app this module started. */
const stopApps = () => Promise.all(children.splice(0).map(stop));

/** The platform packages (sse-helper-native-*) in an app's node_modules. */
const platformPackagesIn = (app) =>
  fs.readdirSync(path.join(app, 'node_modules')).filter((n) => n.startsWith(`${NAME}-`));

module.exports = {
  startRegistry,
  startPlatformApp,
  expectContractPassed,
  platformPackagesIn,
  startApp,
  runToEnd,
  runContract,
  exerciseUsageExample,
  stopApps,
  run,
  baseEnv,
  PATH,
  NAME,
};
