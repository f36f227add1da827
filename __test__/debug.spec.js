// NODE_DEBUG=sse-helper-native: the debug log through util.debuglog, in a
// child process (Node reads NODE_DEBUG once, at startup). The fixture walks
// a hub through registrations, removals, a slow client and drops.

const { execFile } = require('node:child_process');
const path = require('node:path');

const FIXTURE = path.join(__dirname, 'fixtures', 'debug-log.js');

/**
 * Stands in for Bun's `util.debuglog`: a function without `.enabled` that
 * prints nothing (the package must then read NODE_DEBUG itself).
 */
const BUN_LIKE_DEBUGLOG = path.join(__dirname, 'fixtures', 'bun-like-debuglog.js');

/**
 * Runs the fixture with `NODE_DEBUG` set to `debug` (or unset), with Bun's
 * kind of debuglog when `bunLike`; resolves with its output.
 */
function runFixture(debug, { bunLike = false } = {}) {
  const env = { ...process.env };
  delete env.NODE_DEBUG;
  if (debug !== undefined) env.NODE_DEBUG = debug;
  const args = bunLike ? ['-r', BUN_LIKE_DEBUGLOG, FIXTURE] : [FIXTURE];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

test.each([
  ['Node', 'sse-helper-native', false],
  // Bun's debuglog prints nothing and has no `.enabled` (issue 28); a wildcard as Node allows.
  ["a runtime whose debuglog prints nothing (Bun's)", 'other,SSE-HELPER-*', true],
])(
  'NODE_DEBUG logs registrations, transports, removals, slow clients and drops (%s)',
  async (_name, section, bunLike) => {
    const { stdout, stderr } = await runFixture(section, { bunLike });
    expect(stdout).toBe('done\n');
    // util.debuglog's format: the section in capitals, the pid, the message.
    const lines = stderr
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        expect(line).toMatch(/^SSE-HELPER-NATIVE \d+: /);
        return line.replace(/^SSE-HELPER-NATIVE \d+: /, '');
      });
    const expected = [
      'register native: transport socket (native writer), 1 client(s)',
      "register wrapped: transport stream (wrapped: res.write or res.end is not Node's (a wrapper such as compression)), 2 client(s)",
      "register forced: transport stream (configured: configure({ transport: 'stream' })), 3 client(s)",
      'disconnect forced: reason removed, 2 client(s) left',
      'disconnect native: reason removed, 1 client(s) left',
      'disconnect wrapped: reason close, 0 client(s) left',
      'register stuck: transport socket (native writer), 1 client(s)',
      'slow stuck: more than maxBufferedBytes pending, disconnecting it',
      'disconnect stuck: reason slow, 0 client(s) left',
      'register dropper: transport socket (native writer), 1 client(s)',
      'close: ending 1 connection(s)',
      'closed: every connection ended, the writer stopped',
    ];
    // In this order, with other lines (configure, drops) between them.
    let at = -1;
    for (const line of expected) {
      const next = lines.indexOf(line, at + 1);
      expect({ line, found: next > at }).toEqual({ line, found: true });
      at = next;
    }
    expect(lines).toContain('configure {"transport":"stream"}');
    expect(
      lines.some((l) =>
        /^drop: \d+ frame\(s\) skipped for slow clients \(slowClientPolicy drop\), \d+ in all$/.test(l),
      ),
    ).toBe(true);
  },
);

test('without NODE_DEBUG (or with another section) nothing is logged', async () => {
  for (const bunLike of [false, true]) {
    for (const debug of [undefined, 'http,net']) {
      const { stdout, stderr } = await runFixture(debug, { bunLike });
      expect(stdout).toBe('done\n');
      expect(stderr).not.toMatch(/SSE-HELPER-NATIVE/);
    }
  }
});
