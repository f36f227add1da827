// How a stream-transport send reaches a response on Node's own `write`
// (issue 28): where Node's write would do nothing but put the frame's HTTP
// chunk on the socket, the hub writes that chunk to the socket itself, in
// one write; everywhere else (a wrapped write, a corked response, a socket
// past its high-water mark) it is Node's write. The bytes and their order
// with the app's own writes are the same either way. It reads Node's
// internals, so it runs on every Node major (scripts/test-node-versions.js).

const { sseFixture } = require('./hub-fixture.js');
const { rawGet, waitFor, delay } = require('./helpers.js');

let hub;
let srv;
const { startServer } = sseFixture((t) => {
  ({ hub, srv } = t);
});

/** A route that registers each response as client `a`, `b`, … and keeps it. */
function keepResponses(app, responses) {
  app.get('/events', (_req, res) => {
    hub.initResponse(res);
    hub.addClient(String.fromCharCode(97 + responses.length), res);
    responses.push(res);
  });
}

describe("stream-transport writes on Node's own write", () => {
  beforeEach(() => {
    hub.configure({ transport: 'stream' });
  });

  test("on the stream, a response on Node's own write gets each frame's HTTP chunk in one socket write; a write of the app's own still gets the string", async () => {
    const seen = { plain: [], wrapped: [], wrappedChunks: [] };
    srv = await startServer((app) =>
      app.get('/events', (req, res) => {
        hub.initResponse(res);
        const who = req.query.wrap ? 'wrapped' : 'plain';
        // Everything that reaches the socket, write by write.
        const socketWrite = res.socket.write;
        res.socket.write = function (chunk, ...rest) {
          seen[who].push(Buffer.isBuffer(chunk) ? chunk.toString('latin1') : `string:${chunk}`);
          return socketWrite.call(this, chunk, ...rest);
        };
        if (req.query.wrap) {
          const nodeWrite = res.write;
          res.write = function (chunk, ...rest) {
            seen.wrappedChunks.push(typeof chunk);
            return nodeWrite.call(this, chunk, ...rest);
          };
        }
        hub.addClient(who, res);
      }),
    );
    const plain = rawGet(srv.port, '/events');
    const wrapped = rawGet(srv.port, '/events?wrap=1');
    await waitFor(() => hub.getClientCount() === 2, 'both');
    seen.plain.length = 0;
    seen.wrapped.length = 0;
    const frame = 'data: {"t":"é✓😀"}\n\n';
    const bytes = Buffer.byteLength(frame);
    expect(hub.broadcast({ t: 'é✓😀' })).toBe(2);
    for (const c of [plain, wrapped]) await c.waitFor((x) => x.body() === frame, 'the frame');
    // The same bytes on both wires, each in one chunk of its exact length.
    for (const c of [plain, wrapped]) expect(c.chunks()).toEqual([frame]);
    // Node's own write: the whole chunk, size line to CRLF, in one write.
    expect(seen.plain).toEqual([`${bytes.toString(16)}\r\n${Buffer.from(frame).toString('latin1')}\r\n`]);
    // The app's wrapper gets the string, and Node's write makes its four.
    expect(seen.wrappedChunks).toEqual(['string']);
    expect(seen.wrapped).toEqual([`string:${bytes.toString(16)}`, '\r\n', `string:${frame}`, '\r\n']);
  });

  test("on the stream, the app's own writes and the hub's frames reach the wire in the order they were made", async () => {
    const responses = [];
    srv = await startServer((app) => keepResponses(app, responses));
    const a = rawGet(srv.port, '/events');
    await waitFor(() => hub.getClientCount() === 1, 'a');
    const [res] = responses;
    res.write(': before\n\n');
    hub.broadcast({ n: 1 });
    res.write(': between\n\n');
    hub.broadcast({ n: 2 });
    await delay(1);
    hub.broadcast({ n: 3 });
    res.write(': after\n\n');
    const expected = [
      ': before\n\n',
      'data: {"n":1}\n\n',
      ': between\n\n',
      'data: {"n":2}\n\n',
      'data: {"n":3}\n\n',
      ': after\n\n',
    ];
    // The body, not its chunks: Node 24 and later merge the writes a tick
    // makes under its cork into one chunk, Node's own and the hub's alike.
    await a.waitFor((c) => c.body().length >= expected.join('').length, 'all six');
    expect(a.body()).toBe(expected.join(''));
  });

  test("on the stream, a frame that fills the socket past its high-water mark goes through Node's write: the send counts it buffered and the response emits 'drain'", async () => {
    hub.configure({ transport: 'stream', maxBufferedBytes: 64 * 1024 * 1024 });
    const responses = [];
    srv = await startServer((app) => keepResponses(app, responses));
    const a = rawGet(srv.port, '/events');
    await waitFor(() => hub.getClientCount() === 1, 'a');
    const [res] = responses;
    const drained = new Promise((resolve) => res.once('drain', resolve));
    const big = 'x'.repeat(res.socket.writableHighWaterMark + 1024);
    expect(hub.broadcast({ big })).toBe(1);
    // Node's write returned false: the response owes its app a 'drain'.
    expect(res.writableNeedDrain).toBe(true);
    await drained;
    await a.waitFor((c) => c.body() === `data: ${JSON.stringify({ big })}\n\n`, 'the big frame');
    expect(hub.broadcast({ n: 1 })).toBe(1);
    await a.waitFor((c) => c.body().endsWith('data: {"n":1}\n\n'), 'the next frame');
  });

  test("a response the app corked gets the frame through Node's write, after what the app wrote before it", async () => {
    const responses = [];
    srv = await startServer((app) => keepResponses(app, responses));
    const a = rawGet(srv.port, '/events');
    await waitFor(() => hub.getClientCount() === 1, 'a');
    const [res] = responses;
    res.cork();
    res.write(': corked\n\n');
    expect(hub.broadcast({ n: 1 })).toBe(1);
    res.uncork();
    await a.waitFor((c) => c.body() === ': corked\n\ndata: {"n":1}\n\n', 'both, in order');
    // Uncorked, the next frame takes the one-write path again.
    expect(hub.broadcast({ n: 2 })).toBe(1);
    await a.waitFor((c) => c.body().endsWith('data: {"n":2}\n\n'), 'the next');
  });
});
