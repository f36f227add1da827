// scripts/release.js's refusals, on a small tree of its own: a release never
// ships a missing or stale platform binary, or a platform package at
// another version. (The publishing itself runs against a real registry,
// Verdaccio, in install.spec.js.)

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { release, releaseProblems } = require('../scripts/release.js');

let root;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-release-tree-'));
  const write = (file, text) => {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), text);
  };
  write('package.json', JSON.stringify({ name: 'x', version: '1.2.3', napi: { binaryName: 'x' } }));
  write('Cargo.toml', '[workspace]');
  write('src/lib.rs', '// binding');
  write('crates/core/src/lib.rs', '// core');
  for (const p of ['linux-x64-gnu', 'darwin-arm64']) {
    write(`npm/${p}/package.json`, JSON.stringify({ name: `x-${p}`, version: '1.2.3' }));
    write(`npm/${p}/x.${p}.node`, 'binary');
  }
  // Sources an hour old, binaries built since.
  const hourAgo = new Date(Date.now() - 3600_000);
  for (const f of ['package.json', 'Cargo.toml', 'src/lib.rs', 'crates/core/src/lib.rs']) {
    fs.utimesSync(path.join(root, f), hourAgo, hourAgo);
  }
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

const PLATFORMS = ['darwin-arm64', 'linux-x64-gnu'];

test('fresh binaries at the right version: nothing to object to', () => {
  expect(releaseProblems(root, PLATFORMS)).toEqual([]);
});

test('a missing binary, a binary older than a source, a package at another version: each named', () => {
  fs.rmSync(path.join(root, 'npm/darwin-arm64/x.darwin-arm64.node'));
  // The core changed after the linux binary was built.
  const later = new Date(Date.now() + 60_000);
  fs.utimesSync(path.join(root, 'crates/core/src/lib.rs'), later, later);
  fs.writeFileSync(
    path.join(root, 'npm/linux-x64-gnu/package.json'),
    JSON.stringify({ name: 'x-linux-x64-gnu', version: '1.2.2' }),
  );
  expect(releaseProblems(root, PLATFORMS)).toEqual([
    'darwin-arm64: no binary (npm/darwin-arm64/x.darwin-arm64.node); run npm run build:targets',
    'linux-x64-gnu: npm/linux-x64-gnu/package.json is at 1.2.2, not 1.2.3',
    'linux-x64-gnu: npm/linux-x64-gnu/x.linux-x64-gnu.node is older than crates/core/src/lib.rs; run npm run build:targets',
  ]);
});

test('a refused release publishes nothing and says why; the CLI needs a registry', () => {
  fs.rmSync(path.join(root, 'npm/linux-x64-gnu/x.linux-x64-gnu.node'));
  // An unreachable registry: reaching npm publish at all would fail differently.
  expect(() => release({ registry: 'http://127.0.0.1:9/', root, platforms: PLATFORMS })).toThrow(
    /^release refused, nothing published:\n {2}.*linux-x64-gnu: no binary/,
  );
  let stderr = '';
  try {
    execFileSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'release.js')], { stdio: 'pipe' });
  } catch (err) {
    stderr = String(err.stderr);
    expect(err.status).toBe(1);
  }
  expect(stderr).toContain('--registry <url> is required');
});
