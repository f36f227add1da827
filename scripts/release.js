#!/usr/bin/env node
// Publishes a release: every platform package first, then the main package
// (whose optionalDependencies name them), all at package.json's version.
// Refuses before publishing anything when a platform's cross-built binary
// is missing, older than a source it is built from, or its package is at
// another version: a release must never ship a stale or missing binary.
//
//   npm run release -- --registry <url> [--userconfig <npmrc>] [--dry-run]
//
// Exit code 0 once everything is published; 1 on a refusal or a failed
// publish (the packages published before the failure stay published).

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pack, PLATFORMS } = require('./pack.js');

const ROOT = path.join(__dirname, '..');

/** Every file under `dir` (recursively), skipping `target` folders. */
function filesUnder(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'target' ? [] : filesUnder(full);
    return [full];
  });
}

/** The sources a binary is built from: the Rust crates, their manifests and the build script. */
function sourcesOf(root) {
  const fixed = ['Cargo.toml', 'Cargo.lock', 'build.rs'].map((f) => path.join(root, f));
  const crates = fs.existsSync(path.join(root, 'crates'))
    ? fs.readdirSync(path.join(root, 'crates')).map((c) => path.join(root, 'crates', c))
    : [];
  return [
    ...fixed,
    ...filesUnder(path.join(root, 'src')),
    ...crates.flatMap((c) => [path.join(c, 'Cargo.toml'), ...filesUnder(path.join(c, 'src'))]),
  ].filter((f) => fs.existsSync(f));
}

/**
 * Why a release of the tree at `root` must not go out: one line per
 * platform whose binary is missing or stale, or whose package is at
 * another version. Empty when it may.
 */
function releaseProblems(root = ROOT, platforms = PLATFORMS) {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const binaryName = pkg.napi.binaryName;
  const sources = sourcesOf(root).map((file) => ({ file, mtime: fs.statSync(file).mtimeMs }));
  const newest = sources.reduce((a, b) => (b.mtime > a.mtime ? b : a), { file: null, mtime: 0 });
  const problems = [];
  for (const platform of platforms) {
    const dir = path.join(root, 'npm', platform);
    const binary = path.join(dir, `${binaryName}.${platform}.node`);
    const relative = path.relative(root, binary);
    const manifest = path.join(dir, 'package.json');
    if (!fs.existsSync(manifest)) {
      problems.push(`${platform}: no npm/${platform}/package.json`);
      continue;
    }
    const platformPkg = JSON.parse(fs.readFileSync(manifest, 'utf8'));
    if (platformPkg.version !== pkg.version) {
      problems.push(`${platform}: npm/${platform}/package.json is at ${platformPkg.version}, not ${pkg.version}`);
    }
    if (!fs.existsSync(binary)) {
      problems.push(`${platform}: no binary (${relative}); run npm run build:targets`);
    } else if (fs.statSync(binary).mtimeMs < newest.mtime) {
      problems.push(
        `${platform}: ${relative} is older than ${path.relative(root, newest.file)}; run npm run build:targets`,
      );
    }
  }
  return problems;
}

function parseArgs(argv) {
  const options = { dryRun: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--registry') options.registry = value();
    else if (arg === '--userconfig') options.userconfig = value();
    else if (arg === '--dry-run') options.dryRun = true;
    else
      throw new Error(`unknown argument ${arg} (usage: release --registry <url> [--userconfig <npmrc>] [--dry-run])`);
  }
  if (!options.registry) throw new Error('--registry <url> is required: where to publish');
  return options;
}

/**
 * Checks, packs into `out`, publishes the platform packages, then the main
 * one. Returns what pack() made. Throws on a refusal, before publishing.
 */
function release({ registry, userconfig, dryRun = false, out, env = process.env, root = ROOT, platforms = PLATFORMS }) {
  const problems = releaseProblems(root, platforms);
  if (problems.length > 0) {
    throw new Error(`release refused, nothing published:\n  ${problems.join('\n  ')}`);
  }
  const packed = pack(out ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sse-release-')), { log: () => {} });
  const publish = (tgz) =>
    execFileSync(
      'npm',
      [
        'publish',
        tgz,
        '--registry',
        registry,
        ...(userconfig ? ['--userconfig', userconfig] : []),
        ...(dryRun ? ['--dry-run'] : []),
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' },
    );
  // The platform packages first: the main package names them.
  for (const platform of PLATFORMS) publish(packed.platforms[platform]);
  publish(packed.main);
  return packed;
}

module.exports = { release, releaseProblems, parseArgs };

if (require.main === module) {
  try {
    const options = parseArgs(process.argv.slice(2));
    const packed = release(options);
    console.log(`published ${Object.keys(packed.platforms).length} platform packages, then the main package`);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
