// What a new user does without registry access: pack the main package and
// this platform's package, install both tarballs into a fresh Express app on
// a PATH without Rust, and run the documented usage example. The registry
// path (Verdaccio, every platform, arm64 under qemu) is install.spec.js.

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');

const root = path.join(__dirname, '..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-helper-pack-'));
// No cargo, no rustc: only the system's own directories.
const PATH = ['/usr/local/bin', '/usr/bin', '/bin']
  .filter((dir) => !fs.existsSync(path.join(dir, 'cargo')))
  .join(path.delimiter);

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** The packages scripts/pack.js makes: the main one, and one per platform with a binary. */
let packed;

test('the main package carries the loader, entry points, types and license, no binary; one package per platform carries it', () => {
  const { pack, PLATFORMS } = require('../scripts/pack.js');
  const notes = [];
  packed = pack(path.join(work, 'packages'), { log: (line) => notes.push(line) });
  // A platform without a binary here is left out, and said so, once each.
  expect(packed.leftOut).toEqual(PLATFORMS.filter((p) => !packed.platforms[p]));
  expect(notes).toEqual(packed.leftOut.map((p) => `pack: no binary for ${p} (run scripts/build-targets.js); left out`));
  const list = (tgz) =>
    execFileSync('tar', ['-tzf', tgz], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''))
      .sort();
  const files = list(packed.main);
  expect(files).toEqual(
    expect.arrayContaining([
      'binding.d.ts',
      'binding.js',
      'index.d.mts',
      'index.d.ts',
      'index.js',
      'index.mjs',
      'LICENSE',
      'CHANGELOG.md',
      'README.md',
      'lib/serialize.js',
      'package.json',
    ]),
  );
  expect(files.filter((f) => f.endsWith('.node') || f.startsWith('src/') || f.startsWith('__test__/'))).toEqual([]);
  const manifest = JSON.parse(
    execFileSync('tar', ['-xzOf', packed.main, 'package/package.json'], { encoding: 'utf8' }),
  );
  expect(Object.keys(manifest.optionalDependencies).sort()).toEqual(
    [
      'darwin-arm64',
      'darwin-x64',
      'linux-arm64-gnu',
      'linux-arm64-musl',
      'linux-x64-gnu',
      'linux-x64-musl',
      'win32-x64-msvc',
    ].map((p) => `sse-helper-native-${p}`),
  );
  expect(new Set(Object.values(manifest.optionalDependencies))).toEqual(new Set([manifest.version]));
  // npm 11 refuses dependencies' install scripts in strict mode: none needed.
  expect(manifest.scripts).toBeUndefined();
  // This machine's package at least: the host build stands in without the cross-builds.
  const host = `${process.platform}-${process.arch}-gnu`;
  expect(list(packed.platforms[host])).toEqual([
    'LICENSE',
    'README.md',
    'package.json',
    `sse-helper-native.${host}.node`,
  ]);
});

test('the tarball installs into a fresh Express app without Rust and runs the usage example', async () => {
  const app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }),
  );
  const env = { ...process.env, PATH, npm_config_audit: 'false', npm_config_fund: 'false' };
  // Without registry access: the platform package's tarball, then the main one.
  const host = packed.platforms[`${process.platform}-${process.arch}-gnu`];
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', host, packed.main, 'express@5'], {
    cwd: app,
    env,
    stdio: 'pipe',
  });
  expect(() => execFileSync('cargo', ['--version'], { env, stdio: 'pipe' })).toThrow();
  // The MIT license travels with the package.
  const installed = path.join(app, 'node_modules', 'sse-helper-native');
  expect(fs.readFileSync(path.join(installed, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n/);
  expect(JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')).license).toBe('MIT');
  fs.writeFileSync(
    path.join(app, 'server.js'),
    `import express from 'express';
import sseHelper from 'sse-helper-native';
const app = express();
app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  const clientId = req.sessionID || sseHelper.addClient(res);
  sseHelper.addClient(clientId, res, { ip: req.ip });
  sseHelper.send(res, { utc: new Date().toISOString() });
  sseHelper.broadcast({ clients: sseHelper.getClientCount() });
});
const server = app.listen(0, '127.0.0.1', () => console.log(server.address().port));
`,
  );
  const child = spawn(process.execPath, ['server.js'], { cwd: app, env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
      child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    const body = await new Promise((resolve, reject) => {
      http
        .get(`http://127.0.0.1:${port}/events`, (res) => {
          expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
          let text = '';
          res.on('data', (d) => {
            text += d;
            if (text.split('\n\n').length > 2) {
              res.destroy();
              resolve(text);
            }
          });
        })
        .on('error', reject);
    });
    expect(body).toMatch(/^data: \{"utc":"[^"]+"\}\n\ndata: \{"clients":1\}\n\n$/);
  } finally {
    child.kill();
  }
});

test('without a binary for the platform, require fails with a message naming it and the way out', () => {
  const bare = path.join(work, 'no-binary');
  fs.mkdirSync(path.join(bare, 'lib'), { recursive: true });
  for (const f of ['index.js', 'binding.js', 'package.json']) fs.copyFileSync(path.join(root, f), path.join(bare, f));
  for (const f of fs.readdirSync(path.join(root, 'lib'))) {
    fs.copyFileSync(path.join(root, 'lib', f), path.join(bare, 'lib', f));
  }
  let message = '';
  try {
    execFileSync(process.execPath, ['-e', 'require("./index.js")'], { cwd: bare, stdio: 'pipe', encoding: 'utf8' });
  } catch (err) {
    message = err.stderr;
  }
  expect(message).toContain(`no native binary for ${process.platform}-${process.arch}`);
  expect(message).toContain('npm run build');
});
