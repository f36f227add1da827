// The package's import shapes, from a separate Node process as a user would
// load them, and its TypeScript types checked by tsc: in this repository,
// and in an ESM and a CommonJS TypeScript project that installed it.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const run = (args, input) => execFileSync(process.execPath, args, { cwd: root, input, encoding: 'utf8' }).trim();

const NAMES = [
  'initResponse',
  'addClient',
  'removeClient',
  'removeClientById',
  'sendToClient',
  'send',
  'broadcast',
  'broadcastAndClose',
  'getClientCount',
  'cleanupStaleClients',
  'metrics',
];

test('ESM: default import and named imports are the same bound functions', () => {
  const out = run(
    ['--input-type=module', '-'],
    `import sseHelper, { SseHub, ${NAMES.join(', ')} } from 'sse-helper-native';
     const named = { ${NAMES.join(', ')} };
     const same = Object.entries(named).every(([k, f]) => typeof f === 'function' && sseHelper[k] === f);
     console.log(JSON.stringify({ same, count: getClientCount(), hub: new SseHub() instanceof SseHub }));`,
  );
  expect(JSON.parse(out)).toEqual({ same: true, count: 0, hub: true });
});

test('CommonJS: require, destructuring and the class', () => {
  const out = run([
    '-e',
    `const s = require('sse-helper-native'); const { broadcast, getClientCount, SseHub } = s;
     console.log(JSON.stringify([typeof s.initResponse, broadcast('x'), getClientCount(), typeof SseHub]));`,
  ]);
  expect(JSON.parse(out)).toEqual(['function', 0, 0, 'function']);
});

test('index.d.ts types the documented usage and rejects misuse (tsc)', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  expect(() =>
    execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types', 'tsconfig.json')], {
      cwd: root,
      encoding: 'utf8',
      stdio: 'pipe',
    }),
  ).not.toThrow();
});

/**
 * Copies the TypeScript project in __test__/types/<name> to a temporary
 * folder, "installs" this package there (node_modules/sse-helper-native is
 * a link to the repository, as `npm link` makes; @types links to ours),
 * compiles it with this repository's tsc and runs what it emitted. Returns
 * the JSON the program printed.
 */
function compileAndRun(name, tsconfig, main) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sse-ts-${name}-`));
  try {
    fs.cpSync(path.join(__dirname, 'types', name), dir, { recursive: true });
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(root, path.join(dir, 'node_modules', 'sse-helper-native'), 'dir');
    fs.symlinkSync(path.join(root, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'), 'dir');
    const tsc = require.resolve('typescript/bin/tsc');
    try {
      execFileSync(process.execPath, [tsc, '-p', path.join(dir, tsconfig)], {
        cwd: dir,
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (err) {
      throw new Error(`tsc failed for ${name}/${tsconfig}:\n${err.stdout}${err.stderr}`);
    }
    const out = execFileSync(process.execPath, [path.join(dir, main)], { cwd: dir, encoding: 'utf8' });
    return JSON.parse(out);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// One family per getStats() figure (lib/metrics.js).
const { FAMILIES } = require('../lib/metrics.js');
const RAN = { clients: 0, text: true, families: FAMILIES.length, written: expect.any(Number), capacity: true };

test('a TypeScript ESM project ("module": "nodenext") type-checks the default and named imports, and runs', () => {
  expect(compileAndRun('esm-nodenext', 'tsconfig.json', 'dist/app.js')).toEqual(RAN);
});

test('a TypeScript CommonJS project type-checks `import x = require()` (nodenext and node10), and runs', () => {
  expect(compileAndRun('cjs-nodenext', 'tsconfig.json', 'dist/app.js')).toEqual(RAN);
  expect(compileAndRun('cjs-nodenext', 'tsconfig.node10.json', 'dist-node10/app.js')).toEqual(RAN);
});
