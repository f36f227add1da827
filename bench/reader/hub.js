// One instance for bench/reader.js: a hub of the package at argv[2] on the
// bus (REDIS_URL, STREAM, MAX_LEN), serving GET /events on node:http. A
// request with ?t=stream gets a wrapped res.write, so it takes the stream
// transport; the others take the native socket writer. GET /stats answers
// getStats().bus and this process's CPU time. Prints {"port"} when ready.

const http = require('node:http');
const path = require('node:path');

const { SseHub } = require(path.resolve(process.argv[2]));

async function main() {
  const hub = new SseHub();
  hub.configure({
    redis: { url: process.env.REDIS_URL, stream: process.env.STREAM, maxLen: Number(process.env.MAX_LEN) },
    heartbeatMs: 0,
    // The bench's clients read as fast as they can, but a 1 MiB bound would
    // disconnect them in a burst the reader is being measured on.
    maxBufferedBytes: 1 << 30,
  });
  await hub.ready();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/stats') {
      const cpu = process.cpuUsage();
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({ bus: hub.getStats().bus, cpuMs: (cpu.user + cpu.system) / 1000 }, (_k, v) =>
          typeof v === 'bigint' ? Number(v) : v,
        ),
      );
      return;
    }
    if (url.searchParams.get('t') === 'stream') {
      const write = res.write;
      res.write = function wrapped(...args) {
        return write.apply(this, args);
      };
    }
    hub.initResponse(res);
    hub.addClient(null, res);
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
  });
  process.on('SIGTERM', async () => {
    await hub.close();
    process.exit(0);
  });
}

main().catch((err) => {
  console.error('reader hub:', err);
  process.exit(1);
});
