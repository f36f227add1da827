// The JS side of the Redis bus: `configure({ redis })`'s option, and
// keeping Node alive while a promise awaits the hub's threads. The bus's
// answers (`globalClientCount`, the flush of a drain) are native promises.

const { X509Certificate } = require('node:crypto');
const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');

const REDIS_OPTIONS = Object.freeze(['url', 'stream', 'maxLen', 'replayLimit', 'ca']);
const DEFAULT_STREAM = 'sse';
const DEFAULT_MAX_LEN = 10_000;
const DEFAULT_REPLAY_LIMIT = 1_000;

/** `options.redis` (a URL, or `{ url, stream, maxLen, replayLimit, ca }`) with its defaults filled in. */
function busOptionsOf(redis) {
  const options = typeof redis === 'string' ? { url: redis } : redis;
  if (options === null || typeof options !== 'object') {
    throw invalidType(`options.redis must be a Redis URL or an object with a url, got ${kindOf(redis)}`);
  }
  checkKeys(options, REDIS_OPTIONS, 'options.redis');
  const { url, stream = DEFAULT_STREAM, maxLen = DEFAULT_MAX_LEN, replayLimit = DEFAULT_REPLAY_LIMIT } = options;
  if (typeof url !== 'string') throw invalidType(`options.redis.url must be a string, got ${kindOf(url)}`);
  if (!/^(rediss?|redis\+sentinel):\/\//.test(url) && !url.startsWith('unix:') && !url.startsWith('redis+unix:')) {
    throw invalidValue(
      'options.redis.url must be a redis://, rediss:// or redis+sentinel://host:port[,host:port...]/<master> URL',
    );
  }
  if (typeof stream !== 'string') throw invalidType(`options.redis.stream must be a string, got ${kindOf(stream)}`);
  if (typeof maxLen !== 'number') throw invalidType(`options.redis.maxLen must be a number, got ${kindOf(maxLen)}`);
  if (typeof replayLimit !== 'number') {
    throw invalidType(`options.redis.replayLimit must be a number, got ${kindOf(replayLimit)}`);
  }
  const { ca } = options;
  if (ca !== undefined && typeof ca !== 'string' && !Buffer.isBuffer(ca)) {
    throw invalidType(`options.redis.ca must be a PEM string or Buffer, got ${kindOf(ca)}`);
  }
  if (ca !== undefined) checkCertificates(String(ca));
  return { url, stream, maxLen, replayLimit, ca: ca === undefined ? undefined : String(ca) };
}

/** Throws unless `pem` holds at least one certificate, each of which parses. */
function checkCertificates(pem) {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  try {
    if (blocks.length === 0) throw new Error('no certificate');
    for (const block of blocks) new X509Certificate(block);
  } catch {
    throw invalidValue('options.redis.ca must hold one or more PEM certificates (-----BEGIN CERTIFICATE-----)');
  }
}

/**
 * `promise`, with Node kept alive until it settles. The hub's threads (the
 * socket writer, the bus) answer through weak thread-safe functions, which
 * never keep a process alive by themselves; `native.hold()` refs them
 * until the matching `release()`, so a script whose last work is
 * `await hub.close()` does not exit before the answer comes.
 */
function keptAlive(native, promise) {
  native.hold();
  return promise.finally(() => native.release());
}

module.exports = { busOptionsOf, keptAlive, DEFAULT_STREAM, DEFAULT_MAX_LEN, DEFAULT_REPLAY_LIMIT };
