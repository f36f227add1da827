// The test harness's own port handling: a port that is free when chosen and
// taken before redis-server binds it (CI lost a Redis Cluster run that way:
// a node's cluster-bus port was bound by another process in between) costs
// a retry on fresh ports, never the suite.
const net = require('node:net');
const { cleanupsAfterEach, onFreePorts, launchRedis, findRedisServer } = require('./redis-helpers');

const cleanups = cleanupsAfterEach();

/** Holds 127.0.0.1:`port` open until the cleanup runs. */
function occupy(port) {
  return new Promise((resolve, reject) => {
    const blocker = net.createServer();
    blocker.once('error', reject);
    blocker.listen(port, '127.0.0.1', () => {
      cleanups.push(() => new Promise((done) => blocker.close(done)));
      resolve();
    });
  });
}

test('a port taken between the choice and the bind: redis-server exits, and the next try on fresh ports starts it', async () => {
  const binary = findRedisServer();
  const tries = [];
  const started = await onFreePorts(2, async (port, busPort) => {
    tries.push([port, busPort]);
    // The first try loses its cluster-bus port to another process, as in CI.
    if (tries.length === 1) await occupy(busPort);
    const server = await launchRedis(binary, port, [
      '--cluster-enabled',
      'yes',
      '--cluster-port',
      String(busPort),
      '--cluster-config-file',
      'nodes.conf',
    ]);
    return { port, ...server };
  });
  expect(tries).toHaveLength(2);
  for (const [port, busPort] of tries) expect(port).not.toBe(busPort);
  expect(started.port).toBe(tries[1][0]);
  expect(started.output()).toContain('Ready to accept connections');
});

test('any other failure is not retried', async () => {
  let calls = 0;
  await expect(
    onFreePorts(1, async () => {
      calls++;
      throw new Error('redis-server exited (1): bad config');
    }),
  ).rejects.toThrow('bad config');
  expect(calls).toBe(1);
});

test('five lost binds in a row fail with the last error', async () => {
  let calls = 0;
  await expect(
    onFreePorts(1, async (port) => {
      calls++;
      throw new Error(`bind 127.0.0.1:${port}: Address already in use`);
    }),
  ).rejects.toThrow('Address already in use');
  expect(calls).toBe(5);
});
