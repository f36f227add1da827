// The runtimes bench's load generator (Node): N raw HTTP/1.1 clients on
// 127.0.0.1 that read and discard; prints {"open"} once all are connected.
//   node bench/runtimes/clients.cjs <port> <n>
const net = require('node:net');
const [port, n] = process.argv.slice(2).map(Number);
let open = 0;
for (let i = 0; i < n; i++) {
  const socket = net.connect(port, '127.0.0.1', () => {
    socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    if (++open === n) process.stdout.write(`${JSON.stringify({ open })}\n`);
  });
  socket.on('data', () => {});
  socket.on('error', () => {});
}
