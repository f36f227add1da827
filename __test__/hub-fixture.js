// The per-test fixture of the feature specs: a new SseHub before each test,
// an SSE route at /events on a real Express 5 server, raw clients and
// EventSources; after each test all of it is closed and the hub's native
// references must be back to idle.
//
// Test bodies use `hub`, `srv` and `idleRefs` as plain variables of their
// file, so a spec declares them and lets the fixture assign them:
//
//   let hub;
//   let srv;
//   const { serve, connect } = sseFixture((t) => {
//     ({ hub, srv } = t);
//   });
//
// `bind` is called with { hub, idleRefs, srv } whenever one of them changes.
// Called inside a describe, the fixture applies to that describe only.

const { EventSource } = require('eventsource');
const { SseHub } = require('..');
const helpers = require('./helpers.js');

function sseFixture(bind) {
  const state = { hub: undefined, idleRefs: undefined, srv: undefined };
  /** Every server started by the current test; the last one is `srv`. */
  const servers = [];
  /** Responses the SSE route saw, in arrival order. */
  const responses = [];
  /** Responses the SSE route saw, by their `?id=` query parameter. */
  const byId = new Map();
  /** Raw clients and EventSources opened by the current test. */
  const clients = [];
  const sources = [];
  /** Extra hubs a test made, closed with the main one. */
  const extraHubs = [];

  beforeEach(() => {
    state.hub = new SseHub();
    state.idleRefs = state.hub.nativeReferenceCount;
    responses.length = 0;
    byId.clear();
    bind(state);
  });

  afterEach(async () => {
    for (const es of sources.splice(0)) es.close();
    // Clients first: a deferred end to a client that never reads only lets go
    // once its connection is gone.
    for (const c of clients.splice(0)) c.destroy();
    for (const h of [state.hub, ...extraHubs.splice(0)]) {
      try {
        h.broadcastAndClose('bye');
      } catch {
        // A test may have closed the hub already.
      }
    }
    await helpers.waitFor(() => state.hub.nativeReferenceCount === state.idleRefs, 'references released');
    for (const s of servers.splice(0)) await s.close();
    state.srv = undefined;
    bind(state);
  });

  /** helpers.startServer, as this test's `srv`: clients connect to it, and it is closed after the test. */
  async function startServer(configure) {
    const s = await helpers.startServer(configure);
    servers.push(s);
    state.srv = s;
    bind(state);
    return s;
  }

  /**
   * The SSE route at /events: initResponse, then `register(req, res)`; by
   * default addClient under the `?id=` query parameter, or a generated id.
   */
  function sseRoute(app, register = (req, res) => state.hub.addClient(req.query.id ?? null, res)) {
    app.get('/events', (req, res) => {
      state.hub.initResponse(res);
      responses.push(res);
      if (req.query.id !== undefined) byId.set(req.query.id, res);
      register(req, res);
    });
  }

  /**
   * Starts `srv` with the SSE route. `register` is a function as for
   * sseRoute, or a client id to register every connection under.
   * Resolves with `responses`.
   */
  async function serve(register) {
    const registerAs = typeof register === 'string' ? (_req, res) => state.hub.addClient(register, res) : register;
    await startServer((app) => sseRoute(app, registerAs));
    return responses;
  }

  /** Opens a raw client to `srv` (see helpers.rawGet). */
  function client(urlPath = '/events', headers = {}) {
    const c = helpers.rawGet(state.srv.port, urlPath, headers);
    clients.push(c);
    return c;
  }

  /** Opens a raw client and waits until the route has its response and sent the headers. */
  async function connect(urlPath = '/events', headers = {}) {
    const before = responses.length;
    const c = client(urlPath, headers);
    await helpers.waitFor(() => responses.length > before, 'route');
    const res = responses[before];
    await helpers.waitFor(() => res.headersSent, 'headers');
    return { c, res };
  }

  /** An EventSource on `srv`, and a promise of its first 'open'. */
  function openEventSource(urlPath = '/events') {
    const es = new EventSource(`${state.srv.url}${urlPath}`);
    sources.push(es);
    const opened = new Promise((resolve) => {
      es.addEventListener('open', resolve, { once: true });
    });
    return { es, opened };
  }

  return { startServer, sseRoute, serve, client, connect, openEventSource, responses, byId, clients, extraHubs };
}

module.exports = { sseFixture };
