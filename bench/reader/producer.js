// The paced producer of bench/reader.js: XADDs of `bytes`-byte broadcasts
// (the bus's encoding) to STREAM, trimmed to MAX_LEN, at RATE entries/s for
// SECONDS, written as raw RESP on one connection every 2 ms (the command's
// bytes are made once, so the producer costs little CPU next to the
// instance it feeds). Prints {"sent", "seconds", "lastId"} once every reply
// came back.

const net = require('node:net');

function command(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''));
}

async function main() {
  const [url, stream, maxLen, rate, seconds, bytes] = process.argv.slice(2);
  const { hostname, port } = new URL(url);
  const data = JSON.stringify('x'.repeat(Math.max(0, Number(bytes) - 2)));
  const one = command(['XADD', stream, 'MAXLEN', '~', maxLen, '*', 'kind', 'broadcast', 'data', data]);
  const total = Math.round(Number(rate) * Number(seconds));
  const socket = net.connect(Number(port), hostname);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.setNoDelay(true);
  // Replies: one bulk string (the id) each; counted by their "$" lines.
  let replies = 0;
  let lastId = null;
  let tail = '';
  const done = new Promise((resolve, reject) => {
    socket.on('data', (chunk) => {
      const text = tail + chunk.toString('latin1');
      const lines = text.split('\r\n');
      tail = lines.pop();
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i];
        if (line[0] === '$') {
          replies++;
          lastId = lines[i + 1] ?? null;
          if (lastId === null) {
            // The id comes with the next chunk.
            tail = `${line}\r\n${tail}`;
            replies--;
            break;
          }
          i++;
        } else if (line[0] === '-') reject(new Error(line));
      }
      if (replies === total) resolve();
    });
  });
  const started = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.round(((performance.now() - started) / 1000) * Number(rate)));
    if (due > sent) {
      const n = due - sent;
      const buf = Buffer.allocUnsafe(one.length * n);
      for (let i = 0; i < n; i++) one.copy(buf, i * one.length);
      socket.write(buf);
      sent = due;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  await done;
  const took = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ sent, seconds: took, lastId })}\n`);
  socket.end();
}

main().catch((err) => {
  console.error('reader producer:', err);
  process.exit(1);
});
