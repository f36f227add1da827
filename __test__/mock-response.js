// The original suite's MockResponse (test/sseHelper.test.js of sseHelper.js):
// Express's `set`, every write recorded as given, a write after end throws,
// `end` marks it ended and emits `close`. Counts its end() calls too. Shared
// by the drop-in tests (compat.spec.js) and the differential test's worker.

const { EventEmitter } = require('node:events');

class MockResponse extends EventEmitter {
  headers = {};
  writableEnded = false;
  /** Each `write` argument, as given. */
  writes = [];
  /** How many times `end` was called. */
  ends = 0;

  set(headers) {
    Object.assign(this.headers, headers);
  }

  flushHeaders() {}

  write(chunk) {
    if (this.writableEnded) throw new Error('write after end');
    this.writes.push(chunk);
    return true;
  }

  end() {
    this.ends += 1;
    this.writableEnded = true;
    this.emit('close');
  }
}

module.exports = { MockResponse };
