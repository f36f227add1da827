// Where a connection's bytes go (issue 28): N idle SSE connections on each
// system, side by side in one run, each repeat a fresh server process, the
// systems interleaved so a drift of the machine spreads over all of them.
// Per connection: RSS (after a full GC), the JS heap, `external` (Buffers),
// fds, and for this package its napi references. `bare` (no helper: the
// responses kept in a Set) is what Node and Express cost by themselves;
// a system minus `bare` is the bytes that system adds, which for this
// package splits into its JS side (heap) and its native side (RSS minus heap:
// the core's state, napi references, the writer's per-connection state).
//
//   node bench/memory.js [--n 9900] [--repeats 3] [--systems bare,js-helper,addon,addon-stream,better-sse] [--out memory]

const fs = require('node:fs');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const { Child } = require('./lib/child.js');
const { FD_RESERVE, CONNECT_CONCURRENCY, serverOpenFiles, openFds } = require('./lib/common.js');
const { sampleLoad } = require('./lib/machine.js');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const N = Number(option('n', 9900));
const REPEATS = Number(option('repeats', 3));
const SYSTEMS = option('systems', 'bare,js-helper,addon,addon-stream,better-sse').split(',');
const OUT = option('out', 'memory');
const SERVER = path.join(__dirname, 'server.js');
const LOADGEN = path.join(__dirname, 'loadgen.js');

async function measure(system) {
  const server = new Child(system, [process.execPath, '--expose-gc', SERVER, system], {
    nofile: serverOpenFiles(N),
  });
  const loadgen = new Child('loadgen', [process.execPath, LOADGEN], { nofile: N + FD_RESERVE });
  try {
    const [ready] = await Promise.all([server.ready, loadgen.ready]);
    const before = await server.request('mem');
    const infoBefore = await server.request('info');
    const fdsBefore = openFds(ready.pid);
    const conn = await loadgen.request(`connect ${ready.port} ${N} ${CONNECT_CONCURRENCY}`, 300_000);
    if (conn.connected !== N) throw new Error(`${system}: ${conn.connected}/${N} clients connected`);
    for (let waited = 0; (await server.request('count')).clients < N; waited += 50) {
      if (waited > 30_000) throw new Error(`${system}: not every client registered`);
      await sleep(50);
    }
    // Idle for a moment, so nothing is in flight, then after a full GC.
    await sleep(500);
    const after = await server.request('mem');
    const info = await server.request('info');
    const per = (a, b) => (a - b) / N;
    return {
      system,
      rssB: per(after.rss, before.rss),
      heapB: per(after.heapUsed, before.heapUsed),
      externalB: per(after.external, before.external),
      fds: per(openFds(ready.pid), fdsBefore),
      napiRefs: info.nativeReferences == null ? null : per(info.nativeReferences, infoBefore.nativeReferences ?? 0),
      transports: info.stats
        ? { socket: info.stats.socketConnections, stream: info.stats.streamConnections }
        : undefined,
    };
  } finally {
    await Promise.allSettled([server.close(), loadgen.close()]);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const kb = (b) => (b / 1024).toFixed(2);

async function main() {
  const started = new Date();
  const loadBefore = await sampleLoad(1000);
  const runs = [];
  for (let rep = 0; rep < REPEATS; rep++) {
    // Rotated each repeat: no system always runs first.
    const order = SYSTEMS.map((_, i) => SYSTEMS[(i + rep) % SYSTEMS.length]);
    for (const system of order) {
      const r = await measure(system);
      console.error(
        `[${system} #${rep + 1}] RSS ${kb(r.rssB)} KB, heap ${kb(r.heapB)} KB, external ${kb(r.externalB)} KB per connection`,
      );
      runs.push({ rep, ...r });
    }
  }
  const loadAfter = await sampleLoad(1000);
  const rows = SYSTEMS.map((system) => {
    const mine = runs.filter((r) => r.system === system);
    const pick = (f) => mine.map(f).filter((x) => x != null);
    const stat = (f) => {
      const xs = pick(f);
      return xs.length ? { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) } : null;
    };
    return {
      system,
      rss: stat((r) => r.rssB),
      heap: stat((r) => r.heapB),
      external: stat((r) => r.externalB),
      fds: stat((r) => r.fds),
      napiRefs: stat((r) => r.napiRefs),
      transports: mine[0]?.transports,
    };
  });
  const byName = Object.fromEntries(rows.map((r) => [r.system, r]));
  const cell = (s) => (s ? `${kb(s.median)} [${kb(s.min)}–${kb(s.max)}]` : '–');
  const ratio = (a, b) => (a && b ? `${(a.median / b.median).toFixed(2)}×` : '–');
  const minus = (a, b) => (a && b ? kb(a.median - b.median) : '–');
  const base = byName['js-helper'];
  const bare = byName.bare;
  const lines = [
    '# Memory per idle SSE connection',
    '',
    `${started.toISOString()} · Node ${process.version} · \`node bench/memory.js --n ${N} --repeats ${REPEATS} --systems ${SYSTEMS.join(',')}\``,
    '',
    `N = ${N} idle connections per server process (a fresh one per system and repeat, systems interleaved), ` +
      'measured after a full GC once every client is registered, minus the same process before any client. ' +
      `Other load on the machine: ${loadBefore.toFixed(2)} cores busy before the run, ${loadAfter.toFixed(2)} after ` +
      '(RSS and heap do not depend on it). Medians over the repeats [range]; KB are 1,024 bytes.',
    '',
    '| system | RSS per conn, KB | JS heap per conn, KB | external per conn, KB | RSS ×js-helper | added to bare: RSS, KB | added: heap, KB | added: RSS − heap (native), KB | fds | napi refs | transport |',
    '|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|:--|',
    ...rows
      .map((r) =>
        [
          r.system,
          cell(r.rss),
          cell(r.heap),
          cell(r.external),
          ratio(r.rss, base?.rss),
          r.system === 'bare' ? '–' : minus(r.rss, bare?.rss),
          r.system === 'bare' ? '–' : minus(r.heap, bare?.heap),
          r.system === 'bare' || !bare ? '–' : kb(r.rss.median - bare.rss.median - (r.heap.median - bare.heap.median)),
          r.fds ? r.fds.median.toFixed(2) : '–',
          r.napiRefs ? r.napiRefs.median.toFixed(2) : '–',
          r.transports ? `socket ${r.transports.socket}, stream ${r.transports.stream}` : '–',
        ].join(' | '),
      )
      .map((line) => `| ${line} |`),
    '',
    '`bare` keeps each response in a Set and nothing else: what Node (socket, parser, request and response ' +
      'objects, their buffers) and Express cost per connection. The "added" columns subtract it: what each ' +
      "helper costs on top. For this package the native side (RSS − heap) holds the core's registry entry, its " +
      'napi references (the response, and on the stream transport its `write`) and, on the native writer, the ' +
      "writer thread's per-connection state and the kernel's second fd (not in RSS).",
    '',
  ];
  const dir = path.join(__dirname, 'results');
  fs.writeFileSync(path.join(dir, `${OUT}.md`), lines.join('\n'));
  fs.writeFileSync(
    path.join(dir, `${OUT}.json`),
    `${JSON.stringify({ started, n: N, repeats: REPEATS, loadBefore, loadAfter, runs, rows }, null, 2)}\n`,
  );
  console.log(lines.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
