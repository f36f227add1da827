#!/usr/bin/env node
// Runs on `npm install` in a clone (npm's `prepare`): builds the addon from
// source when no binary for this platform sits beside the loader. Installs of
// the packed tarball never run this; they use the binary inside it.

const { existsSync, readdirSync } = require('node:fs');
const { join } = require('node:path');
const { spawnSync } = require('node:child_process');

const root = join(__dirname, '..');
const haveBinary = readdirSync(root).some((f) => /^sse-helper-native\..+\.node$/.test(f));
const haveLoader = existsSync(join(root, 'binding.js'));

if (haveBinary && haveLoader && !process.env.SSE_HELPER_FORCE_BUILD) {
  process.exit(0);
}
console.log('sse-helper-native: no native binary yet, building it (napi build --release)...');
const result = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
