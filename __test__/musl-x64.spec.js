// The linux-x64-musl package run for real on a musl Node:
// the suite is musl-suite.js, one file per architecture so they run side by side.
require('./musl-suite.js').describeMusl('x64');
