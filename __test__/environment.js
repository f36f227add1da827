// The test environment of every spec: Jest's node environment, plus a check
// when a file is done that it left no server listening. With one worker (two
// cores) Jest runs the files in its own process, so one server a failed test
// never closed keeps that process alive after the run: `npm test` would hang
// instead of failing. Servers left over are closed, and the file fails,
// naming their addresses.

const { TestEnvironment } = require('jest-environment-node');

/** Node's live handles (undocumented, present on every Node the package claims). */
const handles = () => (typeof process._getActiveHandles === 'function' ? process._getActiveHandles() : []);

/** A net.Server (http, https, http2, a bare TCP server) that is listening. */
const isListening = (h) => h !== null && typeof h === 'object' && h.listening === true && typeof h.close === 'function';

class LeakCheckingEnvironment extends TestEnvironment {
  #before = new Set();

  async setup() {
    await super.setup();
    this.#before = new Set(handles().filter(isListening));
  }

  async teardown() {
    const left = handles().filter((h) => isListening(h) && !this.#before.has(h));
    const addresses = left.map((server) => {
      const address = server.address();
      server.closeAllConnections?.();
      server.close();
      const where =
        typeof address === 'object' && address !== null ? `${address.address}:${address.port}` : String(address);
      return server.startedBy ? `${where} (started by "${server.startedBy}")` : where;
    });
    await super.teardown();
    if (left.length > 0) {
      throw new Error(`this test file left ${left.length} server(s) listening (now closed): ${addresses.join(', ')}`);
    }
  }
}

module.exports = LeakCheckingEnvironment;
