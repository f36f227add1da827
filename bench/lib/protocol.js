// The line protocol every benchmark child speaks (Node servers, the load
// generator and the native limit in raw-limit/): one command per stdin line,
// `name arg arg...`, answered by exactly one JSON line on stdout. Commands run
// one at a time, in order, so the parent never has two in flight per child.
// Times cross the process boundary as CLOCK_MONOTONIC nanoseconds in decimal
// strings (process.hrtime.bigint() in Node), which every process on the
// machine shares and which no wall-clock adjustment can step.

const readline = require('node:readline');

/** Current CLOCK_MONOTONIC time in ns, as the protocol's decimal string. */
const nowNs = () => process.hrtime.bigint();

/** Soft RLIMIT_NOFILE of this process, as the kernel reports it. */
function openFilesLimit() {
  try {
    const line = require('node:fs')
      .readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    return Number(line.slice('Max open files'.length).trim().split(/\s+/)[0]);
  } catch {
    return null;
  }
}

function reply(obj) {
  process.stdout.write(`${JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}

/**
 * Serves `handlers` (name -> async (args: string[], rest: string) => reply)
 * on stdin/stdout. `ready` is printed first so the parent knows the child is
 * listening. The child exits when stdin closes: a parent that died takes its
 * children with it.
 */
function serve(handlers, ready) {
  reply({ event: 'ready', pid: process.pid, nofile: openFilesLimit(), ...ready });
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      const space = line.indexOf(' ');
      const name = space < 0 ? line : line.slice(0, space);
      const rest = space < 0 ? '' : line.slice(space + 1);
      const handler = handlers[name];
      if (!handler) return reply({ error: `unknown command ${JSON.stringify(name)}` });
      try {
        reply((await handler(rest === '' ? [] : rest.split(' '), rest)) ?? { ok: true });
      } catch (err) {
        reply({ error: err?.stack ?? String(err) });
      }
      if (name === 'exit') process.exit(0);
    });
  });
  rl.on('close', () => process.exit(0));
}

module.exports = { serve, reply, nowNs, openFilesLimit };
