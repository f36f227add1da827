// No helper at all: the route sends the same headers as the others and
// keeps the response open in a Set ('close' deletes it); a broadcast writes
// one Buffer to each. What Node and Express themselves cost per open SSE
// connection: the floor the memory bench (bench/memory.js) subtracts to
// find the bytes a helper adds.

function create() {
  const open = new Set();
  return {
    route(_req, res) {
      res.statusCode = 200;
      res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
      res.setHeader('Cache-Control', 'no-cache, no-transform');
      res.setHeader('Connection', 'keep-alive');
      res.setHeader('X-Accel-Buffering', 'no');
      res.socket?.setNoDelay?.(true);
      res.flushHeaders();
      open.add(res);
      res.once('close', () => open.delete(res));
    },
    broadcast(payload) {
      const frame = Buffer.from(`data: ${JSON.stringify(payload) ?? 'null'}\n\n`);
      for (const res of open) res.write(frame);
      return open.size;
    },
    count: () => open.size,
  };
}

module.exports = { create };
