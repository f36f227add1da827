// The linux-arm64-musl package run for real on a musl Node (under qemu-aarch64-static):
// the suite is musl-suite.js, one file per architecture so they run side by side.
require('./musl-suite.js').describeMusl('arm64');
