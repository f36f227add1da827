// Serves any implementation of the sseHelper API (the JS baseline or this
// package) the way the documented usage does: initResponse, then addClient
// with a little meta; broadcast() is the call under test. With `channel`,
// every client also joins that channel and the broadcast is publish(channel).

const path = require('node:path');

const IMPLEMENTATIONS = {
  js: () => require('./sseHelper.js'),
  addon: () => require(path.join(__dirname, '..', '..')),
  // Another build of this package (a checkout of an earlier commit with its
  // addon built), for before/after rows in one run: SSE_BENCH_BASELINE_DIR.
  'addon-baseline': () => {
    const dir = process.env.SSE_BENCH_BASELINE_DIR;
    if (!dir) throw new Error('the addon-before rows need SSE_BENCH_BASELINE_DIR (a built checkout of this package)');
    return require(path.resolve(dir));
  },
};

/**
 * @param {{ impl: 'js' | 'addon' | 'addon-baseline', hub?: object, channel?: string }} options `hub` is passed to
 *   `new SseHub().configure(hub)` (transport, history...); `channel` makes
 *   route() join it and broadcast() publish to it (the channel fan-out path).
 */
function create(options) {
  let helper = IMPLEMENTATIONS[options.impl]();
  if (options.hub) {
    // Options mean a fresh hub, configured before its first client. A build
    // without configure() must fail loudly, not silently measure the default.
    helper = new helper.SseHub();
    if (typeof helper.configure !== 'function') {
      throw new Error(
        `this build of ${options.impl} has no SseHub#configure; cannot apply ${JSON.stringify(options.hub)}`,
      );
    }
    helper.configure(options.hub);
  }
  const { channel } = options;
  if (channel != null && (typeof helper.join !== 'function' || typeof helper.publish !== 'function')) {
    throw new Error(
      `this build of ${options.impl} has no join/publish; cannot serve channel ${JSON.stringify(channel)}`,
    );
  }
  return {
    // A hub on the Redis bus takes part once its bus is connected.
    ready: typeof helper.ready === 'function' ? () => helper.ready() : undefined,
    route(req, res) {
      helper.initResponse(res);
      helper.addClient(res, { ip: req.ip });
      if (channel != null) helper.join(res, channel);
    },
    broadcast: channel == null ? (payload) => helper.broadcast(payload) : (payload) => helper.publish(channel, payload),
    count: () => helper.getClientCount(),
    // Which transport the connections really got, where the build can say.
    info: () =>
      typeof helper.getStats === 'function'
        ? { stats: helper.getStats(), nativeReferences: helper.nativeReferenceCount }
        : {},
  };
}

module.exports = { create };
