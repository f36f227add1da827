// The storm bench's server: an Express 5 app on 127.0.0.1 whose /events
// route registers each connection with its channel (?ch=) and Last-Event-ID,
// driven over IPC by bench/storm/run.js. It measures its own event loop
// (monitorEventLoopDelay) while the storm comes in.

const { monitorEventLoopDelay } = require('node:perf_hooks');
const express = require('express');
const { SseHub } = require('../..');

const [transport, history] = process.argv.slice(2);
const hub = new SseHub().configure({
  transport,
  // Room for the live broadcasts made during the storm too (one every
  // 10 ms): a client registering late must still find its id kept.
  historySize: Number(history) + 30_000,
  channelHistorySize: Number(history),
  heartbeatMs: 0,
});
const app = express();
app.get('/events', (req, res) => {
  hub.initResponse(res);
  hub.addClient(res, null, { channels: [String(req.query.ch)] });
});
const server = app.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));

let eld = null;
let live = null;
process.on('message', (m) => {
  if (m.cmd === 'history') {
    // Interleaved: broadcasts, and each channel's publishes.
    for (let i = 0; i < m.count; i++) {
      if (i % 2 === 0) hub.broadcast({ i });
      else hub.publish(`room-${i % m.channels}`, { i });
    }
    process.send({ position: m.from ?? null, after: hub.position() });
  } else if (m.cmd === 'position') {
    process.send({ position: hub.position() });
  } else if (m.cmd === 'watch') {
    eld = monitorEventLoopDelay({ resolution: 1 });
    eld.enable();
    // A live broadcast every 10 ms during the storm: replays must stay ahead of them.
    let n = 0;
    live = setInterval(() => hub.broadcast({ live: n++ }), 10);
    process.send({ watching: true });
  } else if (m.cmd === 'count') {
    process.send({ clients: hub.getClientCount(), stats: hub.getStats() });
  } else if (m.cmd === 'stop') {
    clearInterval(live);
    eld.disable();
    process.send({
      eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 },
      stats: hub.getStats(),
    });
  } else if (m.cmd === 'exit') {
    hub.close().then(() => process.exit(0));
  }
});
