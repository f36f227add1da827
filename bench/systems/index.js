// The systems the benchmark compares, in report order. A Node system names a
// module in this folder exporting create(options) -> { route(req, res),
// broadcast(payload) -> clients written, count(), info?() }; bench/server.js
// mounts route() on GET /events of an Express 5 app. A native system is an
// executable speaking the same line protocol.
//
// Adding a row is one entry. `hub` options go to
// `new SseHub().configure(...)`, so e.g. a history or channels variant is
//   { name: 'addon-history', module: 'helper', options: { impl: 'addon', hub: { transport: 'auto', ... } } },
// and `--systems a,b` picks rows by name.
//
// Rows with `scaleOut: true` belong to the scale-out section only (two
// instances on one Redis; see lib/scaleout.js): `redis: true` means the
// server gets the harness's redis-server URL, and `options` is then a
// function of { redisUrl }.
//
// Rows with `via: 'nginx'` are another row (`direct`) with its clients
// behind a real nginx that the harness starts in front of the server for
// each repeat: the default proxy_pass (HTTP/1.0 to the upstream), buffering
// left on (every system here sends X-Accel-Buffering: no). They are
// compared with each other and with their direct rows, in a section of
// their own.

const path = require('node:path');

const BASELINE = 'js-helper';
const LIMIT = 'limit';
/** The baseline of the behind-nginx rows: the JS helper behind the same nginx. */
const NGINX_BASELINE = 'js-helper-nginx';

const SYSTEMS = [
  { name: 'js-helper', module: 'helper', options: { impl: 'js' } },
  // No helper: the responses held open in a Set (the memory bench's floor).
  { name: 'bare', module: 'bare', options: {}, onlyWhenNamed: true },
  { name: 'better-sse', module: 'better-sse', options: {} },
  // The package's default export, as a drop-in user gets it: its default
  // transport ('auto': the native socket writer where the connection allows).
  { name: 'addon', module: 'helper', options: { impl: 'addon' } },
  // The same package held to the stream transport (res.write per client).
  { name: 'addon-stream', module: 'helper', options: { impl: 'addon', hub: { transport: 'stream' } } },
  // Every broadcast also recorded in a replay ring of 1000 frames.
  { name: 'addon-history', module: 'helper', options: { impl: 'addon', hub: { historySize: 1000 } } },
  // The writer threads set explicitly (the default is the available cores
  // but one, at most 8): one, and two.
  { name: 'addon-1thread', module: 'helper', options: { impl: 'addon', hub: { writerThreads: 1 } } },
  { name: 'addon-2threads', module: 'helper', options: { impl: 'addon', hub: { writerThreads: 2 } } },
  // Every client joins channel 'all' in the route; the broadcast is publish('all', payload).
  { name: 'addon-channel', module: 'helper', options: { impl: 'addon', channel: 'all' } },
  // The same three rows on another build (SSE_BENCH_BASELINE_DIR), for a
  // before/after comparison measured side by side. Only run when named.
  { name: 'addon-before', module: 'helper', options: { impl: 'addon-baseline' }, onlyWhenNamed: true },
  {
    name: 'addon-before-history',
    module: 'helper',
    options: { impl: 'addon-baseline', hub: { historySize: 1000 } },
    onlyWhenNamed: true,
  },
  {
    name: 'addon-before-channel',
    module: 'helper',
    options: { impl: 'addon-baseline', channel: 'all' },
    onlyWhenNamed: true,
  },
  // The JS helper, better-sse and the package with their clients behind
  // nginx. `quick`: the one row the CI smoke run (--quick) keeps.
  { name: NGINX_BASELINE, module: 'helper', options: { impl: 'js' }, via: 'nginx', direct: 'js-helper' },
  { name: 'better-sse-nginx', module: 'better-sse', options: {}, via: 'nginx', direct: 'better-sse' },
  { name: 'addon-nginx', module: 'helper', options: { impl: 'addon' }, via: 'nginx', direct: 'addon', quick: true },
  // Scale-out: this package on the Redis bus (broadcast goes through a
  // Redis stream; every instance reads it back and delivers it).
  {
    name: 'addon-bus',
    module: 'helper',
    scaleOut: true,
    redis: true,
    options: ({ redisUrl }) => ({ impl: 'addon', hub: { redis: { url: redisUrl, stream: 'sse-bench' } } }),
  },
  // The same on another build (SSE_BENCH_BASELINE_DIR): a before/after
  // row of the scale-out section, when that variable is set.
  {
    name: 'addon-bus-before',
    module: 'helper',
    scaleOut: true,
    redis: true,
    onlyWhenNamed: true,
    options: ({ redisUrl }) => ({ impl: 'addon-baseline', hub: { redis: { url: redisUrl, stream: 'sse-bench' } } }),
  },
  // Scale-out: what users build today, the JS helper plus ioredis pub/sub
  // re-broadcasting on every instance.
  {
    name: 'helper-ioredis',
    module: 'helper-ioredis',
    scaleOut: true,
    redis: true,
    options: ({ redisUrl }) => ({ redisUrl, channel: 'sse-bench' }),
  },
  {
    name: LIMIT,
    native: {
      manifest: path.join(__dirname, '..', 'raw-limit', 'Cargo.toml'),
      binary: path.join(__dirname, '..', 'raw-limit', 'target', 'release', 'raw-limit'),
    },
  },
  // The same floor with each broadcast's writes split over two threads.
  {
    name: 'limit-2threads',
    native: {
      manifest: path.join(__dirname, '..', 'raw-limit', 'Cargo.toml'),
      binary: path.join(__dirname, '..', 'raw-limit', 'target', 'release', 'raw-limit'),
      args: ['--threads', '2'],
    },
  },
];

function findSystem(name) {
  const system = SYSTEMS.find((s) => s.name === name);
  if (!system)
    throw new Error(`unknown system ${JSON.stringify(name)}; known: ${SYSTEMS.map((s) => s.name).join(', ')}`);
  return system;
}

module.exports = { SYSTEMS, BASELINE, LIMIT, NGINX_BASELINE, findSystem };
