// Parent side of the line protocol (lib/protocol.js): spawns a child with a
// raised open-files limit, waits for its `ready` line and sends it one
// command at a time.

const { spawn, spawnSync } = require('node:child_process');
const readline = require('node:readline');

/** Children still running, so an interrupted run does not leave them behind. */
const live = new Set();
function killAll() {
  for (const child of live) child.kill();
}
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

// A process cannot raise its own RLIMIT_NOFILE from JS, so every child goes
// through bash: try the wanted limit, else take the hard limit (raising the
// hard limit needs CAP_SYS_RESOURCE, which containers often lack).
const RAISE = 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; shift; exec "$@"';

/**
 * The open-files limit children will actually get when `want` is asked for,
 * and whether that is all of it.
 */
function probeOpenFiles(want) {
  const r = spawnSync('bash', ['-c', `${RAISE}`, 'probe', String(want), 'bash', '-c', 'ulimit -n; ulimit -Hn'], {
    encoding: 'utf8',
  });
  const [soft, hard] = r.stdout.trim().split('\n').map(Number);
  return { soft, hard, raised: soft >= want };
}

class Child {
  /**
   * @param {string} name for messages
   * @param {string[]} argv executable and arguments
   * @param {{ nofile: number }} options
   */
  constructor(name, argv, { nofile }) {
    this.name = name;
    this.proc = spawn('bash', ['-c', RAISE, name, String(nofile), ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.pending = [];
    this.stderr = '';
    this.exited = false;
    live.add(this);
    this.proc.stdin.on('error', () => {});
    this.proc.stderr.on('data', (d) => {
      // Keep the tail for error messages; forward it when asked to.
      this.stderr = (this.stderr + d).slice(-8192);
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${d}`);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => this.onLine(line));
    this.proc.on('exit', (code, signal) => {
      this.exited = true;
      live.delete(this);
      const err = new Error(`${name} exited (${signal ?? code})${this.stderr ? `:\n${this.stderr}` : ''}`);
      for (const p of this.pending.splice(0)) p.reject(err);
    });
    this.ready = this.next(30_000, 'ready');
  }

  onLine(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      process.stderr.write(`[${this.name}] ${line}\n`);
      return;
    }
    const p = this.pending.shift();
    if (!p) return;
    if (msg.error) p.reject(new Error(`${this.name}: ${msg.error}`));
    else p.resolve(msg);
  }

  next(timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no reply to ${what} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.pending.push({
        resolve(v) {
          clearTimeout(timer);
          resolve(v);
        },
        reject(e) {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Sends one command line and resolves with its JSON reply. */
  request(line, timeoutMs = 60_000) {
    if (this.exited) return Promise.reject(new Error(`${this.name} is not running`));
    const reply = this.next(timeoutMs, line.length > 40 ? `${line.slice(0, 40)}...` : line);
    this.proc.stdin.write(`${line}\n`);
    return reply;
  }

  /** Asks the child to exit, then makes sure it has. */
  async close() {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    this.request('exit', 5000).catch(() => {});
    const timer = setTimeout(() => this.kill(), 5000);
    await gone;
    clearTimeout(timer);
  }

  kill() {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

module.exports = { Child, probeOpenFiles };
