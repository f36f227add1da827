// One benchmarked Node system in its own process: an Express 5 app on
// 127.0.0.1 serving GET /events through the system named on the command
// line (see systems/index.js), driven by the line protocol (lib/protocol.js).
//
//   node --expose-gc bench/server.js <system> [<redis URL>]
//
// A system on Redis (the scale-out section) gets the URL of the harness's
// redis-server as the second argument.
//
// Commands (replies are JSON; *Ns fields are CLOCK_MONOTONIC ns):
//   clock            -> { ns }
//   count            -> { clients }        connections the system has registered
//   info             -> what the system reports about itself (e.g. its transports),
//                       and { httpVersions }: requests on /events by HTTP version
//   sent             -> { sent }           broadcasts made so far
//   mem              -> { rss, heapUsed }  after a full GC when --expose-gc is on
//   cpu              -> { userUs, systemUs }
//   payload <json>   -> { bytes }          the object every broadcast sends
//   bcast            -> { startNs, syncNs, blockedNs, written }
//   run <hz> <count> -> { count, firstNs, lastNs, written }
//   loop             -> { activeMs, idleMs, userUs, systemUs, mainThreadNs, gcMs, gcCount }
//                       cumulative event-loop utilization, process CPU, the main thread's
//                       own CPU time (null off Linux) and GC pauses (counted from the
//                       first `loop`), for deltas around a phase
//   eld <hz> <ms>    -> { p50Ns, p99Ns, maxNs, meanNs, samples, broadcasts }
//   exit

const fs = require('node:fs');
const http = require('node:http');
const { monitorEventLoopDelay, performance, PerformanceObserver } = require('node:perf_hooks');
const express = require('express');
const { findSystem } = require('./systems/index.js');
const { serve, nowNs } = require('./lib/protocol.js');

const spec = findSystem(process.argv[2]);
if (!spec.module) throw new Error(`${spec.name} is not a Node system`);
const redisUrl = process.argv[3];
if (spec.redis && !redisUrl) throw new Error(`${spec.name} needs a Redis URL as the second argument`);
// A Redis system's options depend on where Redis runs: a function of the URL.
const options = typeof spec.options === 'function' ? spec.options({ redisUrl }) : (spec.options ?? {});
const system = require(`./systems/${spec.module}.js`).create(options);

const app = express();
/** Requests on /events by HTTP version: behind nginx's default proxy_pass, all '1.0'. */
const httpVersions = {};
app.get('/events', (req, res) => {
  httpVersions[req.httpVersion] = (httpVersions[req.httpVersion] ?? 0) + 1;
  return system.route(req, res);
});

const ELD_RESOLUTION_MS = 2;

/**
 * GC pauses seen so far. Watched only once a `loop` command asks (the
 * scale-out section), so the other figures run without the observer.
 */
const gc = { ms: 0, count: 0, observer: null };
function watchGc() {
  if (gc.observer) return;
  gc.observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.ms += entry.duration;
      gc.count++;
    }
  });
  gc.observer.observe({ entryTypes: ['gc'] });
}

/**
 * CPU time the main (JS) thread has run, in ns, from the scheduler's
 * per-thread account; null where /proc does not have it. Unlike the event
 * loop's active time it leaves out time the thread waited for a core.
 */
function mainThreadNs() {
  try {
    return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return null;
  }
}

let payload = null;
let sent = 0;

function broadcastOnce() {
  sent++;
  return system.broadcast(payload);
}

/**
 * Broadcasts `count` times on a fixed schedule of `hz` per second, starting
 * now. A broadcast that comes due late is made at once, not skipped, so a
 * system that cannot keep up shows a send rate below `hz`. Between
 * broadcasts the loop always turns at least once, so its I/O is served as in
 * a real server.
 */
function runAtRate(hz, count) {
  const periodMs = 1000 / hz;
  const t0 = performance.now();
  let i = 0;
  let firstNs = 0n;
  let lastNs = 0n;
  let written = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const wait = t0 + i * periodMs - performance.now();
      // Timers have 1 ms granularity: sleep on one for most of the wait and
      // spin on setImmediate for the rest.
      if (wait > 2) return void setTimeout(tick, Math.floor(wait - 1));
      if (wait > 0) return void setImmediate(tick);
      const start = nowNs();
      if (i === 0) firstNs = start;
      lastNs = start;
      written += broadcastOnce();
      if (++i === count) resolve({ count, firstNs, lastNs, written });
      else setImmediate(tick);
    };
    tick();
  });
}

const handlers = {
  clock: () => ({ ns: nowNs() }),
  count: () => ({ clients: system.count() }),
  info: () => ({ ...(system.info?.() ?? {}), httpVersions }),
  sent: () => ({ sent }),
  mem: () => {
    // Two passes: the first can leave work (weak callbacks, finalizers) for the second.
    global.gc?.();
    global.gc?.();
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
  },
  cpu: () => {
    const u = process.cpuUsage();
    return { userUs: u.user, systemUs: u.system };
  },
  payload: (_args, json) => {
    payload = JSON.parse(json);
    return { bytes: Buffer.byteLength(json) };
  },

  // (a) One broadcast's hold on the event loop: the synchronous call, then
  // everything Node defers to the same turn (http's chunked writes are corked
  // and flushed to the socket in a nextTick), up to the first setImmediate
  // scheduled right after the call, which runs once that turn is over.
  bcast: () => {
    const startNs = nowNs();
    const written = broadcastOnce();
    const syncEndNs = nowNs();
    return new Promise((resolve) => {
      setImmediate(() => {
        const endNs = nowNs();
        resolve({ startNs, syncNs: syncEndNs - startNs, blockedNs: endNs - startNs, written });
      });
    });
  },

  // (c) Broadcasting at an offered rate.
  run: ([hz, count]) => runAtRate(Number(hz), Number(count)),

  // Cumulative event-loop utilization (time the loop spent running
  // callbacks vs. waiting for I/O) and process CPU; the parent takes the
  // difference around a phase, so the figure comes from inside this process.
  loop: () => {
    watchGc();
    const { active, idle } = performance.eventLoopUtilization();
    const u = process.cpuUsage();
    return {
      activeMs: active,
      idleMs: idle,
      userUs: u.user,
      systemUs: u.system,
      mainThreadNs: mainThreadNs(),
      gcMs: gc.ms,
      gcCount: gc.count,
    };
  },

  // (d) Event-loop delay while broadcasting at `hz` for `ms`. The histogram
  // records each timer interval, so an idle loop reads about the resolution
  // and a broadcast that blocks for B ms shows as ~B + resolution. At 2 ms,
  // 10 broadcasts a second delay about 2 % of the samples, so p99 lands
  // among them; at 1 ms it would sit on the 1 % edge and flip between the
  // idle floor and the broadcast from run to run.
  eld: async ([hz, ms]) => {
    const histogram = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
    const before = sent;
    histogram.enable();
    const interval = setInterval(broadcastOnce, 1000 / Number(hz));
    await new Promise((resolve) => setTimeout(resolve, Number(ms)));
    clearInterval(interval);
    histogram.disable();
    return {
      p50Ns: histogram.percentile(50),
      p99Ns: histogram.percentile(99),
      maxNs: histogram.max,
      meanNs: Math.round(histogram.mean),
      samples: histogram.count,
      resolutionMs: ELD_RESOLUTION_MS,
      broadcasts: sent - before,
    };
  },
  exit: () => ({ ok: true }),
};

const server = http.createServer(app);
// A system with asynchronous setup (e.g. a Redis subscription) has ready():
// the parent sees `ready` only once it can take clients and broadcasts.
Promise.resolve(system.ready?.()).then(() => {
  server.listen({ port: 0, host: '127.0.0.1', backlog: 1024 }, () => {
    serve(handlers, { port: server.address().port, system: spec.name });
  });
});
