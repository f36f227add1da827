#!/usr/bin/env node
// Packs what gets published: one package per platform (npm/<platform>/,
// carrying its one `.node`) and the main package without any binary, whose
// `optionalDependencies` name every platform package at the same version,
// so npm installs only the one matching the machine (by `os`, `cpu` and
// `libc`). The main package is packed from a staging copy, so the
// repository's package.json (which has no optionalDependencies: they do
// not exist on a registry until published) stays as it is.
//
//   node scripts/pack.js [<out dir>]      # default: .cache/packages
//
// Prints { main, platforms: { <platform>: <tarball> } } as JSON. Platforms
// whose binary has not been built (scripts/build-targets.js) are left out,
// and said so on stderr.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const BINARY = pkg.napi.binaryName;
const PLATFORMS = fs.readdirSync(path.join(root, 'npm')).sort();

/**
 * Packs every directory in `dirs` into `out` with one `npm pack` (one npm
 * process instead of one per package); a Map from package name to tarball.
 */
function npmPack(dirs, out) {
  const json = execFileSync('npm', ['pack', '--json', '--pack-destination', out, ...dirs], {
    cwd: root,
    encoding: 'utf8',
  });
  const infos = JSON.parse(json.slice(json.indexOf('[')));
  if (infos.length !== dirs.length)
    throw new Error(`npm pack made ${infos.length} tarballs for ${dirs.length} packages`);
  return new Map(infos.map((info) => [info.name, path.join(out, info.filename)]));
}

/**
 * Packs the main package and every platform package that has a binary into
 * `out`. Returns { main, platforms: { platform: tgz }, leftOut: [platform] };
 * `log` gets one line per platform left out (the tests collect them).
 */
function pack(out = path.join(root, '.cache', 'packages'), { log = console.error } = {}) {
  fs.mkdirSync(out, { recursive: true });
  const staged = []; // [platform or undefined for the main package, staging dir]
  const leftOut = [];
  try {
    for (const platform of PLATFORMS) {
      const dir = path.join(root, 'npm', platform);
      // The cross-built binary, or else, for this machine's own platform, the
      // host build (`npm run build`), so the install path can be tried
      // anywhere. Each package is packed from a staging copy: nothing is
      // written into npm/, so a stand-in never outlives the call.
      const cross = path.join(dir, `${BINARY}.${platform}.node`);
      const host = path.join(root, `${BINARY}.${platform}.node`);
      const binary = [cross, host].find((f) => fs.existsSync(f));
      if (!binary) {
        log(`pack: no binary for ${platform} (run scripts/build-targets.js); left out`);
        leftOut.push(platform);
        continue;
      }
      const platformPkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
      if (platformPkg.version !== pkg.version) {
        throw new Error(`${platform} is at ${platformPkg.version}, not ${pkg.version}`);
      }
      const stage = fs.mkdtempSync(path.join(out, `${platform}-`));
      staged.push([platform, stage]);
      for (const file of ['package.json', 'README.md']) fs.copyFileSync(path.join(dir, file), path.join(stage, file));
      fs.copyFileSync(path.join(root, 'LICENSE'), path.join(stage, 'LICENSE'));
      fs.copyFileSync(binary, path.join(stage, `${BINARY}.${platform}.node`));
    }

    const staging = fs.mkdtempSync(path.join(out, 'main-'));
    staged.push([undefined, staging]);
    const files = pkg.files.filter((f) => !f.endsWith('.node'));
    for (const entry of files) fs.cpSync(path.join(root, entry), path.join(staging, entry), { recursive: true });
    const { devDependencies: _dev, scripts: _scripts, allowScripts: _allow, ...published } = pkg;
    published.files = files;
    published.optionalDependencies = Object.fromEntries(PLATFORMS.map((p) => [`${pkg.name}-${p}`, pkg.version]));
    fs.writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);

    const tarballs = npmPack(
      staged.map(([, dir]) => dir),
      out,
    );
    const platforms = Object.fromEntries(
      staged.filter(([p]) => p !== undefined).map(([p]) => [p, tarballs.get(`${pkg.name}-${p}`)]),
    );
    return { main: tarballs.get(pkg.name), platforms, leftOut };
  } finally {
    for (const [, dir] of staged) fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { pack, PLATFORMS };
if (require.main === module)
  console.log(JSON.stringify(pack(process.argv[2] && path.resolve(process.argv[2])), null, 2));
