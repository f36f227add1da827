// The storm bench's server: one system (this package, a baseline build of
// it, the JS helper or better-sse) behind an Express 5 app on 127.0.0.1,
// driven over IPC by bench/storm/run.js. Its /events route registers each
// connection (this package: in its channel `?ch=`, replaying from its
// Last-Event-ID); `tick` starts a broadcast every `--tick` ms (and, on this
// package with channels, a publish to one room); it measures its own event
// loop (monitorEventLoopDelay) and CPU from `watch` to `stop`.
//
//   node bench/storm/server.js <system> <options JSON>

const http = require('node:http');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const express = require('express');

const [system, json] = process.argv.slice(2);
const options = JSON.parse(json);

/** Each system as { route(req, res), broadcast(n), publish(room, n), count(), stats() }. */
function addon(dir, transport) {
  const { SseHub } = require(dir);
  const hub = new SseHub().configure({
    transport,
    // Room for every event of the run: a late client must find its id kept.
    historySize: options.historySize,
    channelHistorySize: options.channels > 0 ? options.historySize : 0,
    heartbeatMs: 0,
  });
  return {
    route(req, res) {
      hub.initResponse(res);
      const ch = req.query.ch;
      hub.addClient(res, null, ch ? { channels: [String(ch)] } : undefined);
    },
    broadcast: (n) => hub.broadcast({ b: n }),
    publish: (room, n) => hub.publish(room, { c: n }),
    count: () => hub.getClientCount(),
    stats: () => {
      const s = hub.getStats();
      return {
        replays: s.replays,
        replaysShared: s.replaysShared ?? null,
        resets: s.resets,
        socketConnections: s.socketConnections,
        streamConnections: s.streamConnections,
      };
    },
    close: () => hub.close(),
  };
}

function jsHelper() {
  const helper = require('../systems/sseHelper.js').createSseHelper();
  return {
    route(_req, res) {
      helper.initResponse(res);
      helper.addClient(res);
    },
    broadcast: (n) => helper.broadcast({ b: n }),
    publish: null,
    count: () => helper.getClientCount(),
    stats: () => ({}),
    close: async () => helper.broadcastAndClose('bye'),
  };
}

function betterSse() {
  const { createSession, createChannel } = require('better-sse');
  const channel = createChannel();
  return {
    async route(req, res) {
      const session = await createSession(req, res, { retry: null, keepAlive: null });
      channel.register(session);
    },
    broadcast: (n) => channel.broadcast({ b: n }, 'message', { eventId: String(n) }),
    publish: null,
    count: () => channel.sessionCount,
    stats: () => ({}),
    close: async () => {},
  };
}

const SYSTEMS = {
  addon: () => addon(path.join(__dirname, '..', '..'), 'auto'),
  'addon-stream': () => addon(path.join(__dirname, '..', '..'), 'stream'),
  'addon-before': () => addon(path.resolve(process.env.SSE_BENCH_BASELINE_DIR), 'auto'),
  'addon-before-stream': () => addon(path.resolve(process.env.SSE_BENCH_BASELINE_DIR), 'stream'),
  'js-helper': jsHelper,
  'better-sse': betterSse,
};

const sys = SYSTEMS[system]();
const app = express();
app.get('/events', (req, res) => sys.route(req, res));
const server = http.createServer(app);
// The kernel caps the backlog at net.core.somaxconn.
server.listen({ port: 0, host: '127.0.0.1', backlog: 65_535 }, () => process.send({ port: server.address().port }));

let eld = null;
let ticker = null;
let cpu0 = null;
let n = 0;
process.on('message', (m) => {
  if (m.cmd === 'count') {
    process.send({ clients: sys.count() });
  } else if (m.cmd === 'tick') {
    // One broadcast every tick, numbered; with channels, a publish to one
    // room too (this package only: the others keep no channel history).
    ticker = setInterval(() => {
      n += 1;
      sys.broadcast(n);
      if (sys.publish && options.channels > 0) sys.publish(`room-${n % options.channels}`, n);
    }, options.tick);
    process.send({ ticking: true });
  } else if (m.cmd === 'watch') {
    eld = monitorEventLoopDelay({ resolution: 1 });
    eld.enable();
    cpu0 = process.cpuUsage();
    process.send({ watching: true, rss: process.memoryUsage().rss });
  } else if (m.cmd === 'phase') {
    // The drop's loop delay so far; the storm's is measured from here.
    const drop = { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 };
    eld.reset();
    process.send({ drop });
  } else if (m.cmd === 'stop') {
    clearInterval(ticker);
    eld.disable();
    const cpu = process.cpuUsage(cpu0);
    process.send({
      eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 },
      cpuMs: (cpu.user + cpu.system) / 1000,
      stats: sys.stats(),
      ticks: n,
    });
  } else if (m.cmd === 'exit') {
    Promise.resolve(sys.close()).finally(() => process.exit(0));
  }
});
