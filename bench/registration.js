// What registering one SSE connection costs on the server's event loop
// (issue 27: the loop stall of a reconnect storm): N real connections from
// a child process to an Express 5 route on 127.0.0.1, and the time spent
// inside `initResponse` and inside `addClient`, per connection, for the
// bench's JS helper and this package on either transport.
//
//   node bench/registration.js [--n 5000] [--systems js-helper,addon,addon-stream]
const { fork } = require('node:child_process');
const http = require('node:http');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i === -1 ? fallback : args[i + 1];
};

if (args[0] === '--clients') {
  // The load generator: N connections at once, then 'all' once each has its headers.
  const [port, n] = [Number(args[1]), Number(args[2])];
  const agent = new http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
  let open = 0;
  for (let i = 0; i < n; i++) {
    http
      .get({ host: '127.0.0.1', port, path: '/events', agent }, (res) => {
        res.resume();
        if (++open === n) process.send('all');
      })
      .on('error', () => {});
  }
} else if (args[0] === '--server') {
  const [system, n] = [args[1], Number(args[2])];
  const express = require('express');
  let helper;
  if (system === 'js-helper') helper = require('./systems/sseHelper.js');
  else {
    const { SseHub } = require('..');
    helper = new SseHub().configure({ heartbeatMs: 0, transport: system === 'addon-stream' ? 'stream' : 'auto' });
  }
  const spent = { init: 0n, add: 0n, count: 0 };
  const app = express();
  app.get('/events', (req, res) => {
    const t0 = process.hrtime.bigint();
    helper.initResponse(res);
    const t1 = process.hrtime.bigint();
    helper.addClient(res, { ip: req.ip });
    spent.add += process.hrtime.bigint() - t1;
    spent.init += t1 - t0;
    spent.count++;
  });
  const server = app.listen(0, '127.0.0.1', () => {
    const clients = fork(__filename, ['--clients', String(server.address().port), String(n)]);
    clients.on('message', () => {
      const us = (ns) => Number(ns / BigInt(spent.count)) / 1000;
      process.send({ system, count: spent.count, initUs: us(spent.init), addUs: us(spent.add) });
      clients.kill();
      process.exit(0);
    });
  });
} else {
  const n = Number(option('n', 5000));
  const systems = option('systems', 'js-helper,addon,addon-stream').split(',');
  (async () => {
    for (const system of systems) {
      const result = await new Promise((resolve, reject) => {
        const child = fork(__filename, ['--server', system, String(n)]);
        child.once('message', resolve);
        child.once('exit', (code) => code !== 0 && reject(new Error(`${system} exited ${code}`)));
      });
      console.log(
        `${result.system}: ${result.count} connections; per connection ${result.initUs.toFixed(1)} µs in initResponse, ` +
          `${result.addUs.toFixed(1)} µs in addClient`,
      );
    }
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
