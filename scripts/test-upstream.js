#!/usr/bin/env node
// Runs the original helper's own unit suite (mocha + chai, from the app the
// JS helper comes from) against this package as a migrating user would: the
// packed tarballs installed into a scratch copy of that app, the one import
// line of test/sseHelper.test.js pointed at `sse-helper-native`, nothing else
// changed. It checks the drop-in claim with a suite we did not write.
//
// The reference copy lives beside the repository, in
// ../shared/reference/upstream (see its README.md). Without it the suite is
// not run: that is said loudly, and the script exits 0. The scratch install
// needs the npm registry (mocha, chai, winston).
//
//   node scripts/test-upstream.js        # KEEP=1 keeps the scratch folder
//
// Exits with mocha's exit code (the number of failed tests).

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const upstream = path.join(root, '..', 'shared', 'reference', 'upstream');
const TEST = path.join('test', 'sseHelper.test.js');
const IMPORT_FROM = 'import sseHelper from "../src/modules/sse/sseHelper.js";';
const IMPORT_TO = 'import sseHelper from "sse-helper-native";';
// What test/sseHelper.test.js needs: mocha and chai, and winston for
// src/utils/logger.js (the rest of its imports are node: built-ins).
const DEV_DEPS = ['mocha', 'chai'];
const DEPS = ['winston'];
const MOCHA_TIMEOUT_MS = 5 * 60 * 1000;

/** This machine's npm/<platform> folder name: linux-x64-gnu, linux-arm64-musl, darwin-arm64, ... */
function hostPlatform() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return base;
  return `${base}-${process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** The reference files are read-only; their copies must not be (the edit, logs/, the cleanup). */
function makeWritable(file) {
  const stat = fs.statSync(file);
  fs.chmodSync(file, stat.mode | 0o200);
  if (stat.isDirectory()) for (const entry of fs.readdirSync(file)) makeWritable(path.join(file, entry));
}

/** The app's package.json with only what the suite needs, at the app's own versions. */
function scratchPackageJson(original) {
  const versions = (names) =>
    Object.fromEntries(
      names.map((name) => {
        const version = original.devDependencies?.[name] ?? original.dependencies?.[name];
        if (!version) throw new Error(`test-upstream: the upstream package.json does not name ${name}`);
        return [name, version];
      }),
    );
  const { name, version } = original;
  return {
    name,
    version,
    private: true,
    type: 'module',
    dependencies: versions(DEPS),
    devDependencies: versions(DEV_DEPS),
  };
}

function swapImport(file) {
  const text = fs.readFileSync(file, 'utf8');
  const count = text.split(IMPORT_FROM).length - 1;
  if (count !== 1) {
    throw new Error(`test-upstream: expected the line \`${IMPORT_FROM}\` once in ${file}, found it ${count} times`);
  }
  fs.writeFileSync(file, text.replace(IMPORT_FROM, IMPORT_TO));
}

function run(scratch) {
  for (const entry of ['src', 'test', 'LICENSE']) {
    fs.cpSync(path.join(upstream, entry), path.join(scratch, entry), { recursive: true });
  }
  makeWritable(scratch);
  const original = JSON.parse(fs.readFileSync(path.join(upstream, 'package.json'), 'utf8'));
  fs.writeFileSync(path.join(scratch, 'package.json'), `${JSON.stringify(scratchPackageJson(original), null, 2)}\n`);
  swapImport(path.join(scratch, TEST));

  console.log('test-upstream: packing sse-helper-native (scripts/pack.js)');
  const out = path.join(scratch, 'packages');
  const packed = JSON.parse(
    execFileSync(process.execPath, [path.join(root, 'scripts', 'pack.js'), out], { cwd: root, encoding: 'utf8' }),
  );
  const platform = hostPlatform();
  const host = packed.platforms[platform];
  if (!host) {
    throw new Error(`test-upstream: no ${platform} package was packed: build the addon first (npm run build)`);
  }

  console.log(`test-upstream: installing ${path.basename(host)}, ${path.basename(packed.main)} and the suite's deps`);
  // As __test__/packaging.spec.js: the platform package's tarball, then the main one.
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', host, packed.main], {
    cwd: scratch,
    stdio: 'inherit',
  });

  console.log(`test-upstream: npx mocha ${TEST} (the upstream suite, import swapped to sse-helper-native)`);
  const mocha = spawnSync('npx', ['mocha', TEST], { cwd: scratch, stdio: 'inherit', timeout: MOCHA_TIMEOUT_MS });
  if (mocha.error || mocha.status === null) {
    const why = mocha.error?.code === 'ETIMEDOUT' ? 'timed out after 5 min' : (mocha.error?.message ?? mocha.signal);
    console.error(`test-upstream: mocha did not finish: ${why}`);
    return 1;
  }
  // mocha exits with its failure count (failed tests plus failed hooks, at most 255); a failed hook skips the
  // tests after it in its suite, so the passing/failing counts are mocha's summary above, not this code.
  console.log(
    mocha.status === 0
      ? 'test-upstream: the upstream suite PASSED against sse-helper-native'
      : `test-upstream: the upstream suite FAILED against sse-helper-native: mocha exit code ${mocha.status} ` +
          "(failed tests and hooks; see mocha's passing/failing summary above)",
  );
  return mocha.status;
}

function main() {
  if (!fs.existsSync(path.join(upstream, TEST))) {
    console.log(`\n!!!!!!!! test-upstream: the upstream compatibility suite was NOT run: ${upstream} is not there.\n`);
    return 0;
  }
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-upstream-'));
  try {
    return run(scratch);
  } finally {
    if (process.env.KEEP === '1') console.log(`test-upstream: kept the scratch folder ${scratch}`);
    else fs.rmSync(scratch, { recursive: true, force: true });
  }
}

process.exitCode = main();
