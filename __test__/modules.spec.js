// The package's import shapes, from a separate Node process as a user would
// load them, and its TypeScript types checked by tsc.

const { execFileSync } = require('node:child_process');
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
