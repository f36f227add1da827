// The load generator, in its own process: N raw TCP clients on 127.0.0.1
// speaking HTTP/1.1, decoding chunked transfer encoding and counting complete
// SSE events (blank-line-terminated blocks that carry a data field), so every
// system is measured by the same definition whatever extra lines it frames
// events with. Driven by the line protocol (lib/protocol.js):
//
//   connect <port> <n> <concurrency> [group]
//                        -> { connected, failed, ms }; the clients join
//                        `group` (default "main"), e.g. one per instance
//   arm <t1> [<t2> ...]  each target is a per-client event count (absolute,
//                        since connect); records the moment the LAST client
//                        reaches it, and the moment the last client of each
//                        group does
//   wait <timeoutMs>     -> { expected, targets: [{ target, reached, atNs,
//                        groups: { <group>: { size, reached, atNs } } }] }
//   stats                -> per-client event counts (also per group), closes, errors
//   clock | cpu | exit
//
// Receive times are taken when the data is parsed here, so they include this
// process's own cost of reading N sockets (the same for every system).

const net = require('node:net');
const { serve, nowNs } = require('./lib/protocol.js');

// Every socket reads into this one buffer: a read is parsed synchronously
// before the next one is made, so sharing it is safe and saves a Buffer per
// read per client.
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

const HEAD = 0; // reading the response head
const SIZE = 1; // reading a chunk-size line
const SIZE_EXT = 2; // skipping a chunk extension up to LF
const DATA = 3; // inside chunk data
const DATA_END = 4; // skipping the CRLF after chunk data
const RAW = 5; // body without chunked encoding: read to close
const DONE = 6; // last chunk seen

const LF = 10;
const CR = 13;
const SEMI = 59;
const LOWER_D = 100;

const clients = [];
/** Group names; a client holds its group's index. */
const groupNames = [];
let totalEvents = 0;
let protocolErrors = 0;
let closedAfterConnect = 0;
/**
 * `unreachable`: clients that closed before reaching the target; a wait ends
 * once everyone left has it instead of running into its timeout.
 * `groupSize`, `groupReached`, `groupAtNs`: the same per group (by index).
 * @type {{ target: number, reached: number, unreachable: number, atNs: bigint | null,
 *   groupSize: number[], groupReached: number[], groupAtNs: (bigint | null)[] }[]}
 */
let targets = [];
/** The targets by per-client count, so an event finds its targets without a scan (a series arms hundreds). */
let targetsByCount = new Map();
let waiter = null;

function hexValue(b) {
  if (b >= 48 && b <= 57) return b - 48;
  if (b >= 97 && b <= 102) return b - 87;
  if (b >= 65 && b <= 70) return b - 55;
  return -1;
}

class Client {
  constructor(group) {
    this.group = group;
    this.state = HEAD;
    this.head = '';
    this.size = 0;
    this.remaining = 0;
    this.inLine = false; // inside a non-empty SSE line
    this.hasData = false; // the current block has a data field
    this.events = 0;
    this.status = 0;
    this.connected = false;
    this.closed = false;
    this.onHead = null;
    this.socket = null;
  }

  /** Consumes buf[0, end): HTTP framing here, SSE lines in scan(). */
  feed(buf, end) {
    let i = 0;
    while (i < end) {
      switch (this.state) {
        case DATA: {
          const n = Math.min(this.remaining, end - i);
          this.scan(buf, i, i + n);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = DATA_END;
          break;
        }
        case DATA_END:
          if (buf[i++] === LF) this.state = SIZE;
          break;
        case SIZE:
        case SIZE_EXT: {
          const b = buf[i++];
          if (b === LF) {
            if (this.size === 0) this.state = DONE;
            else {
              this.remaining = this.size;
              this.size = 0;
              this.state = DATA;
            }
          } else if (this.state === SIZE && b !== CR) {
            if (b === SEMI) this.state = SIZE_EXT;
            else {
              const v = hexValue(b);
              if (v < 0) return this.fail();
              this.size = this.size * 16 + v;
            }
          }
          break;
        }
        case HEAD:
          i = this.readHead(buf, i, end);
          break;
        case RAW:
          this.scan(buf, i, end);
          i = end;
          break;
        default:
          i = end;
      }
    }
  }

  readHead(buf, i, end) {
    const before = this.head.length;
    this.head += buf.toString('latin1', i, end);
    const headEnd = this.head.indexOf('\r\n\r\n');
    if (headEnd < 0) {
      if (this.head.length > 64 * 1024) this.fail();
      return end;
    }
    const head = this.head.slice(0, headEnd);
    this.head = '';
    this.status = Number(head.slice(9, 12));
    this.state = /\r\ntransfer-encoding:[ \t]*chunked/i.test(head) ? SIZE : RAW;
    this.onHead?.(this.status === 200);
    return i + (headEnd + 4 - before);
  }

  /**
   * SSE line scanner over body bytes [i, end). Only what counting needs: a
   * blank line ends a block, and a block is an event when one of its lines
   * starts with `d` (a `data` field; the other fields our servers send start
   * with `e`, `i`, `r` or `:`). CR is skipped at line starts so CRLF works.
   */
  scan(buf, i, end) {
    while (i < end) {
      if (!this.inLine) {
        const b = buf[i];
        if (b === LF) {
          if (this.hasData) {
            this.hasData = false;
            this.onEvent();
          }
          i++;
          continue;
        }
        if (b === CR) {
          i++;
          continue;
        }
        if (b === LOWER_D) this.hasData = true;
        this.inLine = true;
      }
      const nl = buf.indexOf(LF, i);
      if (nl < 0 || nl >= end) return;
      i = nl + 1;
      this.inLine = false;
    }
  }

  onEvent() {
    totalEvents++;
    const count = ++this.events;
    const matching = targetsByCount.get(count);
    if (matching === undefined) return;
    for (let t = 0; t < matching.length; t++) {
      const target = matching[t];
      const g = this.group;
      if (++target.groupReached[g] === target.groupSize[g]) target.groupAtNs[g] = nowNs();
      if (++target.reached === clients.length) {
        target.atNs = target.groupAtNs[g] ?? nowNs();
        checkWaiter();
      }
    }
  }

  fail() {
    protocolErrors++;
    this.state = DONE;
    this.socket?.destroy();
  }
}

function checkWaiter() {
  if (waiter && targets.every((t) => t.atNs !== null || t.reached + t.unreachable >= clients.length)) {
    waiter.finish();
  }
}

function open(port, group, done) {
  const client = new Client(group);
  let settled = false;
  const settle = (ok) => {
    if (settled) return;
    settled = true;
    client.connected = ok;
    if (ok) clients.push(client);
    else socket.destroy();
    done(ok);
  };
  client.onHead = settle;
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    onread: { buffer: READ_BUFFER, callback: (nread, buf) => client.feed(buf, nread) },
  });
  client.socket = socket;
  socket.on('connect', () => {
    socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
  });
  socket.on('error', () => settle(false));
  socket.on('close', () => {
    if (client.connected) {
      closedAfterConnect++;
      client.closed = true;
      for (const t of targets) if (client.events < t.target) t.unreachable++;
      checkWaiter();
    }
    settle(false);
  });
}

const handlers = {
  clock: () => ({ ns: nowNs() }),
  cpu: () => {
    const u = process.cpuUsage();
    return { userUs: u.user, systemUs: u.system };
  },

  connect: ([port, n, concurrency, groupName = 'main']) => {
    const total = Number(n);
    const limit = Number(concurrency) || 256;
    let group = groupNames.indexOf(groupName);
    if (group < 0) group = groupNames.push(groupName) - 1;
    const t0 = performance.now();
    let started = 0;
    let inFlight = 0;
    let connected = 0;
    let failed = 0;
    return new Promise((resolve) => {
      // A bounded number of handshakes in flight keeps the listen backlogs
      // (Node's and the kernel's) from overflowing into SYN retries.
      const launch = () => {
        while (inFlight < limit && started < total) {
          started++;
          inFlight++;
          open(Number(port), group, (ok) => {
            inFlight--;
            if (ok) connected++;
            else failed++;
            if (connected + failed === total) resolve({ connected, failed, ms: performance.now() - t0 });
            else launch();
          });
        }
      };
      if (total === 0) resolve({ connected: 0, failed: 0, ms: 0 });
      else launch();
    });
  },

  arm: (args) => {
    const groupSize = groupNames.map(() => 0);
    for (const c of clients) groupSize[c.group]++;
    targets = args.map((a) => {
      const target = Number(a);
      const groupReached = groupNames.map(() => 0);
      let unreachable = 0;
      for (const c of clients) {
        if (c.events >= target) groupReached[c.group]++;
        else if (c.closed) unreachable++;
      }
      const reached = groupReached.reduce((sum, r) => sum + r, 0);
      // Already reached by everyone means the frame came before the arm:
      // the parent armed too late, and the time below is not a receive time.
      const now = nowNs();
      return {
        target,
        reached,
        unreachable,
        atNs: reached === clients.length ? now : null,
        groupSize,
        groupReached,
        groupAtNs: groupReached.map((r, g) => (r === groupSize[g] ? now : null)),
      };
    });
    targetsByCount = new Map();
    for (const t of targets) {
      const list = targetsByCount.get(t.target);
      if (list) list.push(t);
      else targetsByCount.set(t.target, [t]);
    }
    return { armed: targets.length, alreadyReached: targets.filter((t) => t.reached === clients.length).length };
  },

  wait: ([timeoutMs]) =>
    new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        waiter = null;
        resolve({
          expected: clients.length,
          targets: targets.map(({ target, reached, unreachable, atNs, groupSize, groupReached, groupAtNs }) => ({
            target,
            reached,
            unreachable,
            atNs,
            groups: Object.fromEntries(
              groupNames.map((name, g) => [name, { size: groupSize[g], reached: groupReached[g], atNs: groupAtNs[g] }]),
            ),
          })),
        });
      };
      const timer = setTimeout(finish, Number(timeoutMs));
      waiter = { finish };
      checkWaiter();
    }),

  stats: () => {
    let minEvents = Number.POSITIVE_INFINITY;
    let maxEvents = 0;
    const groups = groupNames.map(() => ({ clients: 0, minEvents: Number.POSITIVE_INFINITY, maxEvents: 0 }));
    for (const c of clients) {
      if (c.events < minEvents) minEvents = c.events;
      if (c.events > maxEvents) maxEvents = c.events;
      const g = groups[c.group];
      g.clients++;
      if (c.events < g.minEvents) g.minEvents = c.events;
      if (c.events > g.maxEvents) g.maxEvents = c.events;
    }
    for (const g of groups) if (g.clients === 0) g.minEvents = 0;
    return {
      clients: clients.length,
      minEvents: clients.length ? minEvents : 0,
      maxEvents,
      groups: Object.fromEntries(groupNames.map((name, g) => [name, groups[g]])),
      totalEvents,
      closedAfterConnect,
      protocolErrors,
    };
  },
  exit: () => ({ ok: true }),
};

serve(handlers, {});
