// The generated loader (binding.js) knows every platform napi-rs builds for;
// this wrapper turns its "cannot find" into a message that says what to do.
function loadBinding() {
  try {
    return require('../binding.js');
  } catch (err) {
    const platform = `${process.platform}-${process.arch}`;
    throw new Error(
      `sse-helper-native: no native binary for ${platform} (Node ${process.version}). ` +
        'This package ships a prebuilt binary for linux-x64-gnu only. ' +
        'To build one for this platform from source, install Rust (rustup) and run ' +
        '`npm install && npm run build` in a clone of sse-helper-native, then install that folder ' +
        'or the tarball `npm pack` makes from it.',
      { cause: err },
    );
  }
}

module.exports = { loadBinding };
