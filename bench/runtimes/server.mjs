// One server of the runtimes bench (run.js): an Express 5 app on 127.0.0.1
// serving GET /events through the JS helper (bench/systems/sseHelper.js) or
// this package on the stream transport, under whichever runtime runs it
// (Node, Bun, Deno). It prints {"port"} once listening; on "go <count>" on
// stdin it makes <count> broadcasts 5 ms apart, timing each from just
// before the call until a setImmediate queued right after it runs (the
// loop blocked, the socket writes Node defers to the end of the turn
// included), and prints the times, with the time inside the call alone
// (the helper's own work and Node's write calls, before the socket writes
// Node defers).
//
//   <runtime> bench/runtimes/server.mjs <original|js-helper|addon-stream|addon> <payload bytes>
//
// `original` is the helper this package replaces, unchanged, read from the
// reference copy beside the repository (ORIGINAL_HELPER, see run.js) with
// only its logger import swapped for a silent one (its logger needs
// winston and the app's config; it logs only on failures, which a run
// that counts every write has none of).

import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import express from 'express';

const require = createRequire(import.meta.url);
const [system, bytesArg] = process.argv.slice(2);
const payload = { text: 'x'.repeat(Math.max(0, Number(bytesArg) - 11)) };

async function loadOriginal(file) {
  const source = fs.readFileSync(file, 'utf8');
  const loggerImport = /^import logger from ["'][^"']+["'];$/m;
  if (!loggerImport.test(source)) throw new Error(`${file}: its logger import was not found`);
  const silent = 'const logger = { warn() {}, info() {}, debug() {}, error() {} };';
  const copy = path.join(os.tmpdir(), `sse-original-helper-${process.pid}.mjs`);
  fs.writeFileSync(copy, source.replace(loggerImport, silent));
  try {
    return (await import(pathToFileURL(copy).href)).default;
  } finally {
    fs.rmSync(copy, { force: true });
  }
}

let helper;
if (system === 'original') {
  helper = await loadOriginal(process.env.ORIGINAL_HELPER);
} else if (system === 'js-helper') {
  helper = require('../systems/sseHelper.js');
} else {
  const { SseHub } = require('../../index.js');
  helper = new SseHub().configure({ transport: system === 'addon-stream' ? 'stream' : 'auto', heartbeatMs: 0 });
}

const app = express();
app.get('/events', (req, res) => {
  helper.initResponse(res);
  // The original reads addClient(x, y) as (clientId, res): its one-argument form.
  if (system === 'original') helper.addClient(res);
  else helper.addClient(res, { ip: req.ip });
});
const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const turn = () => new Promise((resolve) => setImmediate(resolve));

async function run(count, clients) {
  while (helper.getClientCount() < clients) await sleep(20);
  const times = [];
  const calls = [];
  let written = 0;
  for (let i = 0; i < count; i++) {
    await sleep(5);
    const t0 = performance.now();
    written += helper.broadcast(payload) ?? clients;
    calls.push(performance.now() - t0);
    await turn();
    times.push(performance.now() - t0);
  }
  const stats = typeof helper.getStats === 'function' ? helper.getStats() : undefined;
  process.stdout.write(
    `${JSON.stringify({ times, calls, written, transports: stats && { socket: stats.socketConnections, stream: stats.streamConnections } })}\n`,
  );
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  input += chunk;
  const at = input.indexOf('\n');
  if (at === -1) return;
  const [command, count, clients] = input.slice(0, at).split(' ');
  input = input.slice(at + 1);
  if (command === 'go') run(Number(count), Number(clients)).then(() => process.exit(0));
});
