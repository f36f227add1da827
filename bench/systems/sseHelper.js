// The pure-JS baseline: the documented sseHelper.js (same API, same
// registry design), written the way a careful JS developer would, so the
// benchmark compares the addon against a competent implementation rather
// than a straw man.
//
// - Map<clientId, { res, meta, createdAt }> holds the connections;
//   WeakMap<res, clientId> finds a response's id without a scan.
// - crypto.randomUUID() makes the ids.
// - broadcast() serializes and frames once, encodes once into a Buffer and
//   hands that same Buffer to every res.write(): per client only the write
//   itself is left (a string would be re-encoded by every write).
// - A response that has ended is skipped and dropped; 'close' removes it.

const { randomUUID } = require('node:crypto');

/** Same headers and socket setting as the addon's initResponse (lib/response.js). */
function initResponse(res) {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  res.socket?.setNoDelay?.(true);
  res.flushHeaders();
}

function frame(payload) {
  return Buffer.from(`data: ${JSON.stringify(payload) ?? 'null'}\n\n`);
}

function createSseHelper() {
  const clients = new Map();
  const idsByRes = new WeakMap();

  /** Forgets `res` (on 'close' or removal); does not touch the socket. */
  function forget(res) {
    const id = idsByRes.get(res);
    if (id === undefined) return false;
    idsByRes.delete(res);
    if (clients.get(id)?.res === res) clients.delete(id);
    return true;
  }

  function end(res) {
    if (!res.writableEnded) res.end();
  }

  /** Writes one frame unless the response is over; false if it could not. */
  function write(res, data) {
    if (res.writableEnded || res.destroyed) return false;
    try {
      res.write(data);
      return true;
    } catch {
      return false;
    }
  }

  return {
    initResponse,

    /** addClient(res, meta?) or addClient(id, res, meta?); returns the id. */
    addClient(idOrRes, resOrMeta, maybeMeta) {
      const byId = typeof idOrRes === 'string';
      const res = byId ? resOrMeta : idOrRes;
      const meta = byId ? maybeMeta : resOrMeta;
      const id = byId ? idOrRes : randomUUID();
      const previous = idsByRes.get(res);
      if (previous === undefined) {
        res.on('close', () => forget(res));
      } else if (previous !== id && clients.get(previous)?.res === res) {
        clients.delete(previous);
      }
      clients.set(id, { res, meta, createdAt: Date.now() });
      idsByRes.set(res, id);
      return id;
    },

    removeClient(res) {
      const removed = forget(res);
      if (removed) end(res);
      return removed;
    },

    removeClientById(id) {
      const client = clients.get(id);
      if (!client) return false;
      forget(client.res);
      end(client.res);
      return true;
    },

    sendToClient(id, payload) {
      const client = clients.get(id);
      return client !== undefined && write(client.res, frame(payload));
    },

    send(res, payload) {
      return write(res, frame(payload));
    },

    broadcast(payload) {
      const data = frame(payload);
      let written = 0;
      for (const [id, client] of clients) {
        if (write(client.res, data)) {
          written++;
        } else {
          // Deleting the current entry while iterating a Map is safe.
          clients.delete(id);
          idsByRes.delete(client.res);
        }
      }
      return written;
    },

    broadcastAndClose(payload) {
      const written = this.broadcast(payload);
      for (const { res } of clients.values()) end(res);
      clients.clear();
      return written;
    },

    getClientCount() {
      return clients.size;
    },

    cleanupStaleClients(maxAgeMs) {
      const cutoff = Date.now() - maxAgeMs;
      let removed = 0;
      for (const [id, { res, createdAt }] of clients) {
        if (res.writableEnded || res.destroyed || createdAt < cutoff) {
          clients.delete(id);
          idsByRes.delete(res);
          end(res);
          removed++;
        }
      }
      return removed;
    },
  };
}

const sseHelper = createSseHelper();
// Bound like the original's exports, so `const { broadcast } = sseHelper` works.
for (const [name, fn] of Object.entries(sseHelper)) sseHelper[name] = fn.bind(sseHelper);

module.exports = sseHelper;
module.exports.createSseHelper = createSseHelper;
