// What users build today to scale SSE out over several processes: the JS
// helper (sseHelper.js) plus Redis pub/sub through ioredis, the way the
// usual blog post does it. broadcast() PUBLISHes the JSON payload on one
// channel; every instance (this one too) has a subscriber connection that
// parses each message and hands it to its helper's broadcast(). No ids, no
// replay: a message published while an instance is disconnected is lost.
//
// Options: { redisUrl, channel }. The subscription is made asynchronously;
// ready() resolves once it is in place (bench/server.js awaits it before it
// listens), so no broadcast is published before this instance can read it.

const Redis = require('ioredis');
const { createSseHelper } = require('./sseHelper.js');

/** @param {{ redisUrl: string, channel: string }} options */
function create(options) {
  const { redisUrl, channel } = options;
  if (!redisUrl || !channel) throw new Error('helper-ioredis needs options.redisUrl and options.channel');

  const helper = createSseHelper();
  const publisher = new Redis(redisUrl);
  // A connection in subscriber mode can only (un)subscribe: a second one.
  const subscriber = new Redis(redisUrl);

  let published = 0;
  let received = 0;
  let publishErrors = 0;
  let connectionErrors = 0;

  // ioredis reconnects by itself; without a listener it logs "Unhandled error event".
  const onError = (err) => {
    connectionErrors++;
    console.error(`helper-ioredis: ${err.message}`);
  };
  publisher.on('error', onError);
  subscriber.on('error', onError);

  subscriber.on('message', (ch, message) => {
    if (ch !== channel) return;
    received++;
    helper.broadcast(JSON.parse(message));
  });
  const subscribed = subscriber.subscribe(channel);

  return {
    ready: () => subscribed,
    route(req, res) {
      helper.initResponse(res);
      helper.addClient(res, { ip: req.ip });
    },
    // The write happens when the message comes back from Redis; what is
    // returned is the local clients at call time, the clients this
    // broadcast is for on this instance (better-sse.js counts the same way).
    broadcast(payload) {
      const clients = helper.getClientCount();
      published++;
      publisher.publish(channel, JSON.stringify(payload)).catch((err) => {
        publishErrors++;
        console.error(`helper-ioredis: PUBLISH failed: ${err.message}`);
      });
      return clients;
    },
    count: () => helper.getClientCount(),
    info: () => ({ redis: { published, received, publishErrors, connectionErrors } }),
  };
}

module.exports = { create };
