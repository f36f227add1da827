// No helper at all: the route sends the same headers as the others and
// keeps the response open in a Set ('close' deletes it); a broadcast writes
// one Buffer to each. What Node and Express themselves cost per open SSE
// connection: the floor the memory bench (bench/memory.js) subtracts to
// find the bytes a helper adds.

// The same headers and socket setting as every other system.
const { initResponse } = require('./sseHelper.js');

function create() {
  const open = new Set();
  return {
    route(_req, res) {
      initResponse(res);
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
