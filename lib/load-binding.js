// The generated loader (binding.js) finds this platform's binary: the one
// built in this folder, else the platform package npm installed as an
// optional dependency. This wrapper turns its "cannot find" into a message
// that says what to do.

const SHIPPED = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
];

function loadBinding() {
  try {
    return require('../binding.js');
  } catch (err) {
    const platform = `${process.platform}-${process.arch}`;
    const shipped = SHIPPED.some((p) => p.startsWith(`${platform}-`) || p === platform);
    throw new Error(
      `sse-helper-native: no native binary for ${platform} (Node ${process.version}). ` +
        (shipped
          ? `A prebuilt one exists: the optional package sse-helper-native-${platform}(-gnu|-musl) was not ` +
            'installed (installed with --omit=optional, from another platform, or from a tarball without it); ' +
            'reinstall sse-helper-native on this machine. '
          : `Prebuilt binaries exist for ${SHIPPED.join(', ')}. `) +
        'To build one for this platform from source, install Rust (rustup) and run ' +
        '`npm install && npm run build` in a clone of sse-helper-native, then install that folder ' +
        '(`npm install /path/to/clone`).',
      { cause: err },
    );
  }
}

module.exports = { loadBinding };
