// The stream transport against the JS helper on Node, Bun and Deno (issue
// 28): how long one broadcast keeps the event loop with N clients, for the
// JS helper (bench/systems/sseHelper.js: one JSON.stringify and one Buffer
// per broadcast, res.write per client) and this package on the stream
// transport (res.write per client from the native side), side by side in
// one run, each (runtime, N, system, repeat) a fresh server process, the
// systems interleaved. When the reference copy of the original helper is
// beside the repository (../shared/reference/upstream, as for
// npm run test:upstream), the original itself is a row too: it formats
// once per broadcast and writes that string to every client. On Node the default transport (the native writer)
// is a row too. The load generator is Node in its own process.
//
//   node bench/runtimes/run.js [--n 100,1000] [--repeats 3] [--runtimes node,bun,deno] [--bytes 100] [--out runtimes]

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { sampleLoad } = require('../lib/machine.js');

const ROOT = path.join(__dirname, '..', '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};
const NS = option('n', '100,1000').split(',').map(Number);
const REPEATS = Number(option('repeats', 3));
const RUNTIMES = option('runtimes', 'node,bun,deno').split(',');
const BYTES = Number(option('bytes', 100));
const OUT = option('out', 'runtimes');
const BROADCASTS = { 100: 300, 1000: 100 };
const ORIGINAL_HELPER = path.join(
  ROOT,
  '..',
  'shared',
  'reference',
  'upstream',
  'src',
  'modules',
  'sse',
  'sseHelper.js',
);
const HAVE_ORIGINAL = fs.existsSync(ORIGINAL_HELPER);

/** How each runtime runs server.mjs, and its version; null when it is not installed. */
function runtime(name) {
  const bin = (file) => path.join(ROOT, 'node_modules', '.bin', file);
  const found = {
    node: { command: process.execPath, args: [] },
    bun: { command: bin('bun'), args: ['--no-install', '--no-env-file'] },
    deno: {
      command: bin('deno'),
      args: ['run', '--allow-all', '--node-modules-dir=manual', '--no-remote', '--cached-only'],
    },
  }[name];
  if (!found) throw new Error(`unknown runtime ${name}`);
  try {
    const version = execFileSync(found.command, ['--version'], { encoding: 'utf8', timeout: 30_000 });
    return { ...found, version: version.trim().split('\n')[0] };
  } catch {
    return null;
  }
}

/** A child's stdout as JSON lines, one promise per line asked for. */
function lines(child) {
  const waiting = [];
  const ready = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let value;
    try {
      value = JSON.parse(line);
    } catch {
      return;
    }
    const next = waiting.shift();
    if (next) next(value);
    else ready.push(value);
  });
  return () => (ready.length ? Promise.resolve(ready.shift()) : new Promise((resolve) => waiting.push(resolve)));
}

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function measure(rt, system, n) {
  let stderr = '';
  const server = spawn(rt.command, [...rt.args, path.join(__dirname, 'server.mjs'), system, String(BYTES)], {
    cwd: ROOT,
    env: { ...process.env, ORIGINAL_HELPER },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  server.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const fromServer = lines(server);
  let clients;
  try {
    const { port } = await within(fromServer(), 60_000, `${system} listening (${stderr})`);
    clients = spawn(process.execPath, [path.join(__dirname, 'clients.cjs'), String(port), String(n)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await within(lines(clients)(), 60_000, 'clients connected');
    const count = BROADCASTS[n] ?? 100;
    server.stdin.write(`go ${count} ${n}\n`);
    const result = await within(fromServer(), 300_000, `${system} broadcasts (${stderr})`);
    if (result.written !== count * n) throw new Error(`${system}: wrote ${result.written}, expected ${count * n}`);
    return { medianMs: median(result.times), callMs: median(result.calls), transports: result.transports };
  } finally {
    clients?.kill();
    server.kill();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const started = new Date();
  const loadBefore = await sampleLoad(1000);
  const results = [];
  const versions = {};
  for (const name of RUNTIMES) {
    const rt = runtime(name);
    if (!rt) {
      console.error(`${name}: not installed (npm install puts bun and deno in node_modules), skipped`);
      continue;
    }
    versions[name] = rt.version;
    const systems = [
      ...(HAVE_ORIGINAL ? ['original'] : []),
      'js-helper',
      'addon-stream',
      ...(name === 'node' ? ['addon'] : []),
    ];
    for (const n of NS) {
      for (let rep = 0; rep < REPEATS; rep++) {
        const order = systems.map((_, i) => systems[(i + rep) % systems.length]);
        for (const system of order) {
          const r = await measure(rt, system, n);
          console.error(`[${name} ${system} N=${n} #${rep + 1}] ${r.medianMs.toFixed(3)} ms per broadcast`);
          results.push({ runtime: name, system, n, rep, ...r });
        }
      }
    }
  }
  const loadAfter = await sampleLoad(1000);
  const rows = [];
  for (const name of Object.keys(versions)) {
    for (const n of NS) {
      const of = (system) => results.filter((r) => r.runtime === name && r.n === n && r.system === system);
      const base = median(of('js-helper').map((r) => r.medianMs));
      const original = HAVE_ORIGINAL ? median(of('original').map((r) => r.medianMs)) : null;
      const originalCall = HAVE_ORIGINAL ? median(of('original').map((r) => r.callMs)) : null;
      for (const system of ['original', 'js-helper', 'addon-stream', 'addon']) {
        const mine = of(system);
        if (!mine.length) continue;
        const ms = mine.map((r) => r.medianMs);
        rows.push({
          runtime: name,
          n,
          system,
          median: median(ms),
          min: Math.min(...ms),
          max: Math.max(...ms),
          ratio: median(ms) / base,
          vsOriginal: original === null ? null : median(ms) / original,
          call: median(mine.map((r) => r.callMs)),
          callVsOriginal: originalCall === null ? null : median(mine.map((r) => r.callMs)) / originalCall,
          transports: mine[0].transports,
        });
      }
    }
  }
  const md = [
    '# The stream transport against the JS helper, on Node, Bun and Deno',
    '',
    `${started.toISOString()} · ${Object.entries(versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(
        ' · ',
      )} · \`node bench/runtimes/run.js --n ${NS.join(',')} --repeats ${REPEATS} --runtimes ${RUNTIMES.join(',')} --bytes ${BYTES}\``,
    '',
    `The event loop blocked per broadcast of a ${BYTES}-byte payload to N idle clients (Express 5 on 127.0.0.1; ` +
      'from just before the call until a setImmediate queued right after it runs), the median over ' +
      `${BROADCASTS[100]} broadcasts (N = 100) or ${BROADCASTS[1000]} (N = 1,000) per server process, then the ` +
      `median [range] over ${REPEATS} processes per row, systems interleaved. ×js-helper and ×original divide medians ` +
      'of one runtime and N. `original` is the helper this package replaces, unchanged (a string per broadcast, ' +
      "`res.write` per client); `js-helper` is the bench's tuned JS helper (bench/systems/sseHelper.js: one Buffer " +
      `per broadcast). Other load on the machine: ${loadBefore?.toFixed(2)} cores busy before the run, ` +
      `${loadAfter?.toFixed(2)} after. "In the call" is the part of it spent inside the broadcast call itself ` +
      "(the helper's own work and Node's `write` calls), before the socket writes Node defers to the end of the " +
      'turn, which are the same bytes for every system.',
    '',
    '| runtime | N | system | loop blocked per broadcast, ms | ×original | ×js-helper | in the call, ms | ×original | transport |',
    '|:--|--:|:--|--:|--:|--:|--:|--:|:--|',
    ...rows.map(
      (r) =>
        `| ${r.runtime} | ${r.n.toLocaleString('en-US')} | ${r.system} | ${r.median.toFixed(3)} [${r.min.toFixed(3)}–${r.max.toFixed(3)}] | ` +
        `${r.vsOriginal === null ? '–' : `${r.vsOriginal.toFixed(2)}×`} | ${r.ratio.toFixed(2)}× | ${r.call.toFixed(3)} | ` +
        `${r.callVsOriginal === null ? '–' : `${r.callVsOriginal.toFixed(2)}×`} | ${r.transports ? `socket ${r.transports.socket}, stream ${r.transports.stream}` : '–'} |`,
    ),
    '',
  ];
  const dir = path.join(__dirname, '..', 'results');
  fs.writeFileSync(path.join(dir, `${OUT}.md`), md.join('\n'));
  fs.writeFileSync(
    path.join(dir, `${OUT}.json`),
    `${JSON.stringify({ started, versions, loadBefore, loadAfter, results, rows }, null, 2)}\n`,
  );
  console.log(md.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
