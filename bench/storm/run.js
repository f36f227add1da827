// A reconnect storm against channel history (issue 27): N clients, each a
// member of one of C channels, reconnect at once from the same Last-Event-ID
// after H events (broadcasts and channel publishes interleaved) while live
// broadcasts go on every 10 ms. Checked per client: it got exactly the
// broadcasts and its channel's messages after that id, in order, once each,
// then live ones with no gap; measured: the time until every client caught
// up, the server's event-loop delay during the storm, and its CPU.
//
//   node bench/storm/run.js [--n 2000] [--channels 20] [--history 500] [--transports auto,stream] [--out storm]

const { fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const N = Number(option('n', 2000));
const CHANNELS = Number(option('channels', 20));
const HISTORY = Number(option('history', 500));
const TRANSPORTS = option('transports', 'auto,stream').split(',');
const OUT = option('out', 'storm');

function ask(child, message, key) {
  return new Promise((resolve) => {
    const on = (reply) => {
      if (key in reply) {
        child.off('message', on);
        resolve(reply);
      }
    };
    child.on('message', on);
    child.send(message);
  });
}

/** One raw client: its `data:` payloads as parsed objects, in arrival order. */
function client(port, channel, lastEventId, events = [], tries = 0) {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d) => {
    text += d;
    let at = text.indexOf('\n\n');
    while (at !== -1) {
      const frame = text.slice(0, at);
      text = text.slice(at + 2);
      const data = /(?:^|\n)data: (.*)/.exec(frame);
      // `event: reset` carries data null: kept as {} so it counts as wrong.
      if (data) events.push(JSON.parse(data[1]) ?? { reset: true });
      at = text.indexOf('\n\n');
    }
  });
  // A connection refused in the storm (the listen backlog full) tries
  // again, as a browser would; one that got data is not retried.
  const me = { socket, events, channel };
  socket.on('error', () => {
    if (events.length === 0 && tries < 10) Object.assign(me, client(port, channel, lastEventId, events, tries + 1));
  });
  socket.write(`GET /events?ch=${channel} HTTP/1.0\r\nHost: 127.0.0.1\r\nLast-Event-ID: ${lastEventId}\r\n\r\n`);
  return me;
}

async function storm(transport) {
  const child = fork(path.join(__dirname, 'server.js'), [transport, String(HISTORY)], { stdio: 'inherit' });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  const { position: from } = await ask(child, { cmd: 'position' }, 'position');
  await ask(child, { cmd: 'history', count: HISTORY, channels: CHANNELS }, 'after');
  await ask(child, { cmd: 'watch' }, 'watching');
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const clients = Array.from({ length: N }, (_, k) => client(port, `room-${(2 * k + 1) % CHANNELS}`, from));
  // Caught up: the whole replay and at least one live event after it.
  const expected = (channel) =>
    Array.from({ length: HISTORY }, (_, i) => i).filter((i) => i % 2 === 0 || `room-${i % CHANNELS}` === channel);
  const caughtUp = (c) =>
    c.events.some((e) => e.reset) ||
    (c.events.some((e) => 'live' in e) && c.events.filter((e) => 'i' in e).length >= expected(c.channel).length);
  while (!clients.every(caughtUp)) {
    if (performance.now() - started > 120_000) {
      const none = clients.filter((c) => c.events.length === 0).length;
      const partial = clients.filter((c) => c.events.length > 0 && !caughtUp(c)).length;
      throw new Error(`the storm did not catch up in 120 s: ${none} clients got nothing, ${partial} part of it`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const catchUpMs = performance.now() - started;
  const { eld, stats } = await ask(child, { cmd: 'stop' }, 'eld');
  let wrong = 0;
  for (const c of clients) {
    const replayed = c.events.filter((e) => 'i' in e).map((e) => e.i);
    const lives = c.events.filter((e) => 'live' in e).map((e) => e.live);
    const firstLive = c.events.findIndex((e) => 'live' in e);
    const lastReplay = c.events.findLastIndex((e) => 'i' in e);
    const gapless = lives.every((n, j) => j === 0 || n === lives[j - 1] + 1);
    if (JSON.stringify(replayed) !== JSON.stringify(expected(c.channel)) || lastReplay > firstLive || !gapless)
      wrong += 1;
  }
  for (const c of clients) c.socket.destroy();
  child.send({ cmd: 'exit' });
  return {
    transport,
    n: N,
    channels: CHANNELS,
    history: HISTORY,
    catchUpMs: Math.round(catchUpMs),
    loopDelayMs: { p50: +eld.p50.toFixed(2), p99: +eld.p99.toFixed(2), max: +eld.max.toFixed(2) },
    replays: stats.replays,
    resets: stats.resets,
    socketConnections: stats.socketConnections,
    clientsWrong: wrong,
    loadGenCpuMs: Math.round((process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system) / 1000),
  };
}

(async () => {
  const rows = [];
  for (const transport of TRANSPORTS) rows.push(await storm(transport));
  const md = [
    '# Reconnect storm against channel history',
    '',
    `${new Date().toISOString()} · Node ${process.version} · ${require('node:os').cpus().length} cores · \`node bench/storm/run.js --n ${N} --channels ${CHANNELS} --history ${HISTORY}\``,
    '',
    `N clients, each in one of ${CHANNELS} channels, reconnect at once from one Last-Event-ID after ${HISTORY} events (broadcasts and publishes interleaved), while a live broadcast goes out every 10 ms. Clients are raw sockets speaking HTTP/1.0 (close-delimited bodies, which the native writer frames). Each client must get exactly the broadcasts and its channel's messages after that id, in order, once, then live ones without a gap.`,
    '',
    '| transport | N | caught up, ms | loop delay p50 / p99 / max, ms | replays | resets | clients wrong |',
    '|:--|--:|--:|--:|--:|--:|--:|',
    ...rows.map(
      (r) =>
        `| ${r.transport}${r.transport === 'auto' ? ` (${r.socketConnections} on the native writer)` : ''} | ${r.n} | ${r.catchUpMs} | ${r.loopDelayMs.p50} / ${r.loopDelayMs.p99} / ${r.loopDelayMs.max} | ${r.replays} | ${r.resets} | ${r.clientsWrong} |`,
    ),
    '',
  ].join('\n');
  const dir = path.join(__dirname, '..', 'results');
  fs.writeFileSync(path.join(dir, `${OUT}.json`), `${JSON.stringify(rows, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, `${OUT}.md`), md);
  console.log(md);
  process.exit(rows.every((r) => r.clientsWrong === 0 && r.resets === 0) ? 0 : 1);
})();
