#!/usr/bin/env node
// Builds the addon for every platform the package ships, from this Linux
// machine, into npm/<platform>/sse-helper-native.<platform>.node: glibc
// targets against glibc 2.17, musl targets as cdylibs without static CRT,
// macOS for 10.13 (x64) and 11.0 (arm64) without an SDK, Windows x64 against
// the Universal CRT and node.exe's exports. All through
// cargo-zigbuild and zig, from PyPI in a virtual environment under
// .cache/cross (made on first use), and the Rust standard libraries from
// `rustup target add`.
//
//   node scripts/build-targets.js                 # every target
//   node scripts/build-targets.js linux-arm64-gnu # some of them
//
// Exit code 0 when every requested target was built. When the toolchain
// cannot be had (no Python venv, no network for pip or rustup), it says so
// loudly and exits 3, so CI can tell "skipped" from "broken".

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const venv = path.join(root, '.cache', 'cross');
const BINARY = 'sse-helper-native';

/** Each shipped platform: its Rust target as cargo-zigbuild takes it, and what its build needs. */
const PLATFORMS = {
  'linux-x64-gnu': { target: 'x86_64-unknown-linux-gnu', zigTarget: 'x86_64-unknown-linux-gnu.2.17', lib: 'so' },
  'linux-arm64-gnu': { target: 'aarch64-unknown-linux-gnu', zigTarget: 'aarch64-unknown-linux-gnu.2.17', lib: 'so' },
  // A cdylib on musl must link the C runtime dynamically (Node's own).
  'linux-x64-musl': { target: 'x86_64-unknown-linux-musl', lib: 'so', rustflags: '-C target-feature=-crt-static' },
  'linux-arm64-musl': { target: 'aarch64-unknown-linux-musl', lib: 'so', rustflags: '-C target-feature=-crt-static' },
  // Without MACOSX_DEPLOYMENT_TARGET zig stamps the newest macOS as the
  // minimum; a stripped zig-linked binary was killed by macOS
  // (cargo-zigbuild issue #50), so darwin builds keep their symbols.
  'darwin-x64': { target: 'x86_64-apple-darwin', lib: 'dylib', macos: '10.13', keepSymbols: true },
  'darwin-arm64': { target: 'aarch64-apple-darwin', lib: 'dylib', macos: '11.0', keepSymbols: true },
  // The official Node's package name (napi-rs calls it msvc), built as gnu:
  // zig's mingw links the Universal CRT, the official Node's C runtime, and
  // needs no Windows SDK. napi-build links `-lnode` from LIBNODE_PATH: an
  // import library of node.exe's own napi_* exports
  // (scripts/platform-runtimes.js windows-node), so the DLL imports them
  // from the process that loads it.
  // rustc's export list does not reach zig's lld (which then exports every
  // global symbol, thousands): a .def file given as an input does.
  'win32-x64-msvc': {
    target: 'x86_64-pc-windows-gnu',
    lib: 'dll',
    file: 'sse_helper_native.dll',
    libnode: true,
    rustflags: `-C link-arg=${path.join(__dirname, 'win32-exports.def')}`,
  },
};

function run(command, args, options = {}) {
  return spawnSync(command, args, { stdio: 'inherit', ...options });
}

/** cargo-zigbuild and zig on PATH, from a venv made on first use; false if they cannot be had. */
function toolchain() {
  const bin = path.join(venv, 'bin');
  if (!fs.existsSync(path.join(bin, 'cargo-zigbuild'))) {
    console.log(`build-targets: installing ziglang and cargo-zigbuild into ${path.relative(root, venv)}`);
    if (run('python3', ['-m', 'venv', venv]).status !== 0) return false;
    const pip = run(path.join(bin, 'pip'), ['install', '--quiet', 'ziglang', 'cargo-zigbuild']);
    if (pip.status !== 0) return false;
  }
  process.env.PATH = `${bin}${path.delimiter}${process.env.PATH}`;
  return true;
}

function installedTargets() {
  try {
    return execFileSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).split('\n');
  } catch {
    return [];
  }
}

function main() {
  const wanted = process.argv.slice(2);
  const names = wanted.length ? wanted : Object.keys(PLATFORMS);
  for (const name of names) if (!PLATFORMS[name]) throw new Error(`unknown platform ${name}`);
  if (!toolchain()) {
    console.error('\n!!! build-targets: SKIPPED: cargo-zigbuild/zig could not be installed from PyPI (see above)\n');
    return 3;
  }
  const missing = names.map((n) => PLATFORMS[n].target).filter((t) => !installedTargets().includes(t));
  if (missing.length && run('rustup', ['target', 'add', ...missing]).status !== 0) {
    console.error(`\n!!! build-targets: SKIPPED: rustup target add ${missing.join(' ')} was refused (see above)\n`);
    return 3;
  }
  for (const name of names) {
    const p = PLATFORMS[name];
    const env = { ...process.env };
    if (p.rustflags) env.RUSTFLAGS = p.rustflags;
    if (p.macos) env.MACOSX_DEPLOYMENT_TARGET = p.macos;
    if (p.keepSymbols) env.CARGO_PROFILE_RELEASE_STRIP = 'none';
    if (p.libnode) {
      const { runtime, Unavailable } = require('./platform-runtimes.js');
      try {
        env.LIBNODE_PATH = runtime('windows-node').libnode;
      } catch (err) {
        if (!(err instanceof Unavailable)) throw err;
        console.error(`\n!!! build-targets: SKIPPED: ${err.message}\n`);
        return 3;
      }
    }
    console.log(`\n== ${name} (${p.zigTarget ?? p.target})`);
    const build = run(
      'cargo',
      ['zigbuild', '--release', '--quiet', '-p', 'sse-helper-native', '--target', p.zigTarget ?? p.target],
      { cwd: root, env },
    );
    if (build.status !== 0) {
      console.error(`build-targets: ${name} failed`);
      return 1;
    }
    const built = path.join(root, 'target', p.target, 'release', p.file ?? `libsse_helper_native.${p.lib}`);
    const out = path.join(root, 'npm', name, `${BINARY}.${name}.node`);
    fs.copyFileSync(built, out);
    console.log(`build-targets: ${path.relative(root, out)} (${fs.statSync(out).size} bytes)`);
  }
  return 0;
}

module.exports = { PLATFORMS };
if (require.main === module) process.exitCode = main();
