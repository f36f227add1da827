// Clients for the Redis bus specs (bus-outage, bus-drain, bus-cluster):
// plain HTTP requests on a connection of their own, `eventsource` clients
// that record what they were dispatched, the frames of a raw client's body,
// stream-id comparison, and a TCP proxy to Redis that can be cut and healed.

const http = require('node:http');
const net = require('node:net');
const { EventSource } = require('eventsource');
const { framesOf, rawGet, waitFor } = require('./helpers.js');

/**
 * One HTTP request to 127.0.0.1 on a fresh connection (`agent: false`, so
 * `Connection: close`: a cluster primary hands each one to the next worker).
 * Resolves with { status, body } (body parsed as JSON when it is).
 */
function request(port, path, { method = 'GET', body, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        agent: false,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
        timeout: timeoutMs,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // Not JSON: keep the text.
          }
          resolve({ status: res.statusCode, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} on port ${port}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** POST /broadcast to an instance; resolves with the body ({result}); rejects on a non-200. */
async function broadcastVia(port, body) {
  const res = await request(port, '/broadcast', { method: 'POST', body });
  if (res.status !== 200) throw new Error(`POST /broadcast on ${port}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** GET /stats of an instance: its hub.getStats(). */
async function statsOf(port) {
  const res = await request(port, '/stats');
  if (res.status !== 200) throw new Error(`GET /stats on ${port}: ${res.status}`);
  return res.body;
}

/**
 * An `eventsource` client: records every dispatched message as
 * { type, id: e.lastEventId, data } (data parsed as JSON), how often it
 * opened, and its errors. `types` are event names to listen for besides
 * 'message'.
 */
function openSource(url, { types = [] } = {}) {
  const es = new EventSource(url);
  const messages = [];
  const errors = [];
  let opens = 0;
  const record = (type) => (e) => {
    let data = e.data;
    try {
      data = JSON.parse(e.data);
    } catch {
      // Not JSON: keep the text.
    }
    messages.push({ type, id: e.lastEventId, data });
  };
  es.onmessage = record('message');
  for (const t of types) es.addEventListener(t, record(t));
  es.onopen = () => {
    opens++;
  };
  es.onerror = (e) => errors.push(e);
  return {
    es,
    messages,
    errors,
    get opens() {
      return opens;
    },
    /** The data of the 'message' events. */
    data: () => messages.filter((m) => m.type === 'message').map((m) => m.data),
    close: () => es.close(),
  };
}

/**
 * The events of a raw SSE body as objects: { id (or undefined), event, data
 * (parsed JSON, or the text), retry, comment, raw (the frame's text) }.
 */
function parseFrames(body) {
  return framesOf(body).map((raw) => {
    const frame = { raw };
    const data = [];
    for (const line of raw.split('\n')) {
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === '') frame.comment = value;
      else if (field === 'data') data.push(value);
      else frame[field] = value;
    }
    if (data.length > 0) {
      const text = data.join('\n');
      try {
        frame.data = JSON.parse(text);
      } catch {
        frame.data = text;
      }
    }
    return frame;
  });
}

/** A stream id `<ms>-<seq>` as a comparable BigInt key. */
function idKey(id) {
  const m = /^(\d+)-(\d+)$/.exec(id);
  if (!m) throw new Error(`not a stream id: ${JSON.stringify(id)}`);
  return (BigInt(m[1]) << 64n) | BigInt(m[2]);
}

/** The ids (in order) that are not strictly greater than the id before them. */
function outOfOrder(ids) {
  const bad = [];
  for (let i = 1; i < ids.length; i++) if (idKey(ids[i]) <= idKey(ids[i - 1])) bad.push([ids[i - 1], ids[i]]);
  return bad;
}

/** The values that occur more than once. */
function duplicates(values) {
  const seen = new Set();
  const dup = new Set();
  for (const v of values) {
    const key = JSON.stringify(v);
    if (seen.has(key)) dup.add(key);
    seen.add(key);
  }
  return [...dup];
}

/**
 * Listens on a free loopback port. Resolves with { port, url (as a Redis
 * URL), close() }: close() stops listening and destroys `sockets`.
 */
async function listenOnLoopback(server, sockets) {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 (free port) to 127.0.0.1:`targetPort` that can
 * be cut (every proxied connection destroyed, new ones closed at once,
 * so a client sees its Redis gone) and healed, or hold new connections
 * (accepted, paused, not forwarded: a slow first connect) until release().
 * Resolves with { port, url, cut(), heal(), hold(), waiting(), release(), close() }.
 */
async function cuttableProxy(targetPort) {
  let up = true;
  let holding = false;
  const held = [];
  const sockets = new Set();
  const keep = (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const forward = (client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    keep(upstream);
    upstream.once('close', () => client.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    keep(client);
    if (!up) client.destroy();
    else if (holding) held.push(client);
    else forward(client);
  });
  const { port, url, close } = await listenOnLoopback(server, sockets);
  return {
    port,
    url,
    close,
    cut() {
      up = false;
      for (const s of sockets) s.destroy();
    },
    heal() {
      up = true;
    },
    hold() {
      holding = true;
    },
    /** Connections held so far. */
    waiting: () => held.length,
    release() {
      holding = false;
      for (const client of held.splice(0)) forward(client);
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 (free port) to 127.0.0.1:`targetPort` whose
 * replies (target to client) flow at `bytesPerSecond`, in slices every
 * 50 ms: a slow link. Requests pass at once.
 * Resolves with { port, url, close() }.
 */
async function throttledProxy(targetPort, bytesPerSecond) {
  const sockets = new Set();
  const timers = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    upstream.once('close', () => client.destroy());
    client.once('close', () => upstream.destroy());
    client.pipe(upstream);
    const queue = [];
    upstream.on('data', (chunk) => queue.push(chunk));
    const slice = Math.max(1, Math.floor(bytesPerSecond / 20));
    const timer = setInterval(() => {
      let budget = slice;
      while (budget > 0 && queue.length > 0) {
        const head = queue[0];
        const part = head.subarray(0, budget);
        if (part.length === head.length) queue.shift();
        else queue[0] = head.subarray(part.length);
        budget -= part.length;
        client.write(part);
      }
    }, 50);
    timers.add(timer);
    client.once('close', () => {
      clearInterval(timer);
      timers.delete(timer);
    });
  });
  const { port, url, close } = await listenOnLoopback(server, sockets);
  return {
    port,
    url,
    async close() {
      for (const t of timers) clearInterval(t);
      await close();
    },
  };
}

/** Polls the async `predicate` until it resolves truthy; rejects after `timeoutMs`. */
async function waitUntil(predicate, what = 'condition', timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      if (await predicate()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Broadcasts continuously: POST /broadcast {payload: payloadOf(n)} to
 * ports[n % ports.length], n = 0, 1, ..., one at a time, `pauseMs` apart.
 * `sent` holds the n of every request answered 200 (`results`: n -> its
 * {result}), `failures` the others.
 * stop() resolves once the request in flight has been answered.
 */
function broadcastLoop(ports, payloadOf, { pauseMs = 10 } = {}) {
  let stopping = false;
  const sent = [];
  const results = new Map();
  const failures = [];
  const done = (async () => {
    for (let n = 0; !stopping; n++) {
      try {
        const { result } = await broadcastVia(ports[n % ports.length], { payload: payloadOf(n) });
        sent.push(n);
        results.set(n, result);
      } catch (err) {
        failures.push({ n, error: err.message });
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    sent,
    results,
    failures,
    async stop() {
      stopping = true;
      await done;
    },
  };
}

/**
 * A spec file's in-process instances (hubs behind servers of their own) and
 * the raw clients of them, kept in `hubs`, `servers` and `clients` for
 * `closeAll()` after each test. `connect(instance, path, headers)` opens a
 * raw GET on `instance.srv` and resolves once `instance.hub` has registered
 * it (within `timeoutMs`).
 */
function inProcessInstances(timeoutMs) {
  const hubs = [];
  const servers = [];
  const clients = [];
  return {
    hubs,
    servers,
    clients,
    async connect({ hub, srv }, path, headers) {
      const before = hub.getClientCount();
      const client = rawGet(srv.port, path, headers);
      clients.push(client);
      await waitFor(() => hub.getClientCount() > before, 'registered', timeoutMs);
      return client;
    },
    /** Destroys the clients, then closes the hubs, then the servers. */
    async closeAll() {
      for (const c of clients.splice(0)) c.destroy();
      for (const h of hubs.splice(0)) await h.close();
      for (const s of servers.splice(0)) await s.close();
    },
  };
}

module.exports = {
  inProcessInstances,
  waitUntil,
  broadcastLoop,
  request,
  broadcastVia,
  statsOf,
  openSource,
  parseFrames,
  idKey,
  outOfOrder,
  duplicates,
  cuttableProxy,
  throttledProxy,
};
