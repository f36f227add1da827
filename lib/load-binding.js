// The generated loader (binding.js) finds this platform's binary: the one
// built in this folder, else the platform package npm installed as an
// optional dependency. This wrapper turns its "cannot find" into a message
// that names the package that should be there, why it may be missing and
// the fix (the generated error's own cause chain blames npm and a lockfile,
// which is rarely what happened, so it is not passed on).

const SHIPPED = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
  'win32-x64-msvc',
];

/** This machine's platform key as the packages are named: `linux-x64-gnu`, `darwin-arm64`, … */
function platformKey() {
  const base = `${process.platform}-${process.arch}`;
  // napi-rs names Windows packages by the official Node's toolchain.
  if (process.platform === 'win32') return `${base}-msvc`;
  if (process.platform !== 'linux') return base;
  // glibc reports its version here; musl (Alpine) does not.
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
  return `${base}-${glibc ? 'gnu' : 'musl'}`;
}

/** The runtime, as a message names it: `Node v20.20.2`, `Bun 1.4.5`, `Deno 2.9.6`. */
function runtimeName() {
  if (process.versions.bun) return `Bun ${process.versions.bun}`;
  if (process.versions.deno) return `Deno ${process.versions.deno}`;
  return `Node ${process.version}`;
}

/**
 * Why an installed platform package did not load, when the runtime says:
 * Deno refuses native addons without --allow-ffi, and its refusal is lost
 * in the loader's cause chain (which ends at the local file it tried first).
 */
function refusal(pkg) {
  if (!process.versions.deno) return null;
  try {
    require(pkg);
    return null;
  } catch (err) {
    const text = `${err?.name} ${err?.message}`;
    return /NotCapable|--allow-ffi/.test(text)
      ? 'Deno refused to load it: run Deno with --allow-ffi (or --allow-all)'
      : null;
  }
}

/** The installed version of `name`, `null` when it is not installed. */
function installedVersion(name) {
  try {
    return require(`${name}/package.json`).version ?? null;
  } catch {
    return null;
  }
}

function loadBinding() {
  try {
    return require('../binding.js');
  } catch (err) {
    const { name, version } = require('../package.json');
    const key = platformKey();
    const pkg = `${name}-${key}`;
    const where = `${key} (${runtimeName()})`;
    let message;
    if (!SHIPPED.includes(key)) {
      message =
        `${name}: no native binary for ${where}: prebuilt binaries exist for ${SHIPPED.join(', ')}. ` +
        fromSource(name);
    } else {
      const installed = installedVersion(pkg);
      message =
        installed === null
          ? `${name}: no native binary for ${where}. It comes in the package ${pkg}@${version}, an optional ` +
            `dependency of ${name}, and it is not installed. npm leaves it out when the install ran with ` +
            '--omit=optional (or --no-optional), when node_modules or the lockfile was made on another platform ' +
            `and copied here, or when the registry (or its mirror) lacks ${pkg}. Fix: ` +
            `\`npm install ${pkg}@${version}\` next to ${name}, or reinstall without --omit=optional on this ` +
            `machine. ${fromSource(name)}`
          : `${name}: no native binary for ${where}: ${pkg}@${installed} is installed but could not be loaded` +
            `${installed === version ? '' : ` (${name} is ${version}: install ${pkg}@${version})`}: ` +
            `${refusal(pkg) ?? firstLine(err)}. ${fromSource(name)}`;
    }
    const error = new Error(message);
    error.code = 'ERR_SSE_NO_BINARY';
    throw error;
  }
}

function fromSource(name) {
  return (
    'To build one for this platform from source, install Rust (rustup) and run ' +
    `\`npm install && npm run build\` in a clone of ${name}, then install that folder ` +
    '(`npm install /path/to/clone`).'
  );
}

/** The load error that matters: the platform package's own, not the loader's summary. */
function firstLine(err) {
  let e = err;
  while (e?.cause) e = e.cause;
  return String(e?.message ?? err).split('\n')[0];
}

module.exports = { loadBinding };
