// The JS side of the Redis bus: `configure({ redis })`'s option, and
// keeping Node alive while a promise awaits the hub's threads. The bus's
// answers (`globalClientCount`, the flush of a drain) are native promises.

const { X509Certificate } = require('node:crypto');
const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');

const REDIS_OPTIONS = Object.freeze(['url', 'cluster', 'stream', 'maxLen', 'replayLimit', 'ca']);
const DEFAULT_STREAM = 'sse';
const DEFAULT_MAX_LEN = 10_000;
const DEFAULT_REPLAY_LIMIT = 1_000;

/**
 * `options.redis` (a URL, or `{ url, stream, maxLen, replayLimit, ca }`, or
 * `{ cluster: [urls], ... }`) with its defaults filled in.
 */
function busOptionsOf(redis) {
  const options = typeof redis === 'string' ? { url: redis } : redis;
  if (options === null || typeof options !== 'object') {
    throw invalidType(`options.redis must be a Redis URL or an object with a url, got ${kindOf(redis)}`);
  }
  checkKeys(options, REDIS_OPTIONS, 'options.redis');
  const { stream = DEFAULT_STREAM, maxLen = DEFAULT_MAX_LEN, replayLimit = DEFAULT_REPLAY_LIMIT } = options;
  const url = options.cluster === undefined ? options.url : clusterUrlOf(options);
  if (typeof url !== 'string') throw invalidType(`options.redis.url must be a string, got ${kindOf(url)}`);
  if (
    !/^(rediss?|redis\+sentinel|rediss?\+cluster):\/\//.test(url) &&
    !url.startsWith('unix:') &&
    !url.startsWith('redis+unix:')
  ) {
    throw invalidValue(
      'options.redis.url must be a redis://, rediss:// or redis+sentinel://host:port[,host:port...]/<master> URL' +
        ' (or redis+cluster://host:port[,host:port...])',
    );
  }
  if (typeof stream !== 'string') throw invalidType(`options.redis.stream must be a string, got ${kindOf(stream)}`);
  if (/^rediss?\+cluster:/.test(url) && !sharesOneSlot(stream)) {
    throw invalidValue(
      "options.redis.stream must have a hash tag ({tag}) on a Redis Cluster when it holds '}': " +
        'all the bus keys of a stream share its slot',
    );
  }
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

/**
 * `{ cluster: ['redis://host:port', ...] }` as one `redis+cluster://` (or
 * `rediss+cluster://`) URL: every node shares the scheme and credentials
 * (the Cluster client uses one set for all).
 */
function clusterUrlOf(options) {
  const { cluster } = options;
  if (options.url !== undefined) throw invalidValue('options.redis takes a url or a cluster, not both');
  if (!Array.isArray(cluster) || cluster.length === 0) {
    throw invalidType(`options.redis.cluster must be a non-empty array of redis:// URLs, got ${kindOf(cluster)}`);
  }
  let first;
  const hosts = cluster.map((node, i) => {
    if (typeof node !== 'string' || !/^rediss?:\/\/[^/?#]+\/?$/.test(node)) {
      throw invalidValue(`options.redis.cluster[${i}] must be a redis:// or rediss:// URL of one node (host:port)`);
    }
    let parsed;
    try {
      parsed = new URL(node);
    } catch {
      throw invalidValue(`options.redis.cluster[${i}] must be a redis:// or rediss:// URL of one node (host:port)`);
    }
    const same = { protocol: parsed.protocol, username: parsed.username, password: parsed.password };
    first ??= same;
    if (same.protocol !== first.protocol || same.username !== first.username || same.password !== first.password) {
      throw invalidValue('options.redis.cluster: every node must have the same scheme, user and password');
    }
    return parsed.host;
  });
  const scheme = first.protocol === 'rediss:' ? 'rediss+cluster' : 'redis+cluster';
  const auth =
    first.username || first.password ? `${first.username}${first.password ? `:${first.password}` : ''}@` : '';
  return `${scheme}://${auth}${hosts.join(',')}`;
}

/** Whether every bus key of `stream` lands in its hash slot (the core's `keys::shares_one_slot`). */
function sharesOneSlot(stream) {
  const open = stream.indexOf('{');
  const close = open < 0 ? -1 : stream.indexOf('}', open + 1);
  return close > open + 1 || !stream.includes('}');
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
