// The JS side of the Redis bus: `configure({ redis })`'s option, and
// keeping Node alive while a promise awaits the hub's threads. The bus's
// answers (`globalClientCount`, the flush of a drain) are native promises.

const { X509Certificate } = require('node:crypto');
const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');

const REDIS_OPTIONS = Object.freeze([
  'url',
  'cluster',
  'sentinels',
  'masterName',
  'username',
  'password',
  'db',
  'tls',
  'sentinelUsername',
  'sentinelPassword',
  'stream',
  'maxLen',
  'replayLimit',
  'ca',
]);
const DEFAULT_STREAM = 'sse';
const DEFAULT_MAX_LEN = 10_000;
const DEFAULT_REPLAY_LIMIT = 1_000;

/**
 * `options.redis` (a URL, or `{ url, stream, maxLen, replayLimit, ca }`,
 * `{ cluster: [urls], ... }` or `{ sentinels: [hosts], masterName, tls, ... }`)
 * with its defaults filled in.
 */
function busOptionsOf(redis) {
  const options = typeof redis === 'string' ? { url: redis } : redis;
  if (options === null || typeof options !== 'object') {
    throw invalidType(`options.redis must be a Redis URL or an object with a url, got ${kindOf(redis)}`);
  }
  checkKeys(options, REDIS_OPTIONS, 'options.redis');
  const { stream = DEFAULT_STREAM, maxLen = DEFAULT_MAX_LEN, replayLimit = DEFAULT_REPLAY_LIMIT } = options;
  const url =
    options.sentinels !== undefined
      ? sentinelUrlOf(options)
      : options.cluster !== undefined
        ? clusterUrlOf(options)
        : urlOnly(options);
  if (typeof url !== 'string') throw invalidType(`options.redis.url must be a string, got ${kindOf(url)}`);
  if (
    !/^(rediss?|rediss?\+sentinel|rediss?\+cluster):\/\//.test(url) &&
    !url.startsWith('unix:') &&
    !url.startsWith('redis+unix:')
  ) {
    throw invalidValue(
      'options.redis.url must be a redis://, rediss:// or redis+sentinel://host:port[,host:port...]/<master> URL' +
        ' (rediss+sentinel:// for TLS; or redis+cluster://host:port[,host:port...])',
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
  refuseSentinelOptions(options, "a cluster's node URLs carry their own scheme and credentials");
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

/** The options only the `sentinels` form takes. */
const SENTINEL_ONLY = ['masterName', 'username', 'password', 'db', 'tls', 'sentinelUsername', 'sentinelPassword'];

/** Refuses `SENTINEL_ONLY` options beside a url or a cluster (`why`: what carries them there). */
function refuseSentinelOptions(options, why) {
  for (const name of SENTINEL_ONLY) {
    if (options[name] !== undefined) {
      throw invalidValue(`options.redis.${name} goes with options.redis.sentinels (${why})`);
    }
  }
}

/** `options.url`, refusing the parts of the object forms beside it. */
function urlOnly(options) {
  refuseSentinelOptions(options, 'a URL carries its own');
  return options.url;
}

/** `encodeURIComponent(value)` for `options.redis.<name>`; a lone surrogate is an ERR_INVALID_ARG_VALUE. */
function encoded(name, value) {
  try {
    return encodeURIComponent(value);
  } catch {
    throw invalidValue(`options.redis.${name} must be well-formed Unicode (it has a lone surrogate)`);
  }
}

const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$/;

/**
 * `{ sentinels: ['host:port', { host, port }, ...], masterName, username,
 * password, db, tls, sentinelUsername, sentinelPassword }` as one
 * `redis+sentinel://` URL (`rediss+sentinel://` with `tls: true`: TLS to the
 * Sentinels and to the master): the Sentinels' addresses (port 26379 when
 * left out), the master's name, the credentials and database of the master,
 * and the Sentinels' own credentials in the query.
 */
function sentinelUrlOf(options) {
  const { sentinels, masterName, username, password, db, tls = false, sentinelUsername, sentinelPassword } = options;
  if (options.url !== undefined || options.cluster !== undefined) {
    throw invalidValue('options.redis takes one of url, cluster and sentinels');
  }
  if (!Array.isArray(sentinels) || sentinels.length === 0) {
    throw invalidType(
      `options.redis.sentinels must be a non-empty array of 'host:port' strings or { host, port } objects, got ${
        Array.isArray(sentinels) ? 'an empty array' : kindOf(sentinels)
      }`,
    );
  }
  const hosts = sentinels.map((sentinel, i) => {
    const name = `options.redis.sentinels[${i}]`;
    if (typeof sentinel === 'string') {
      if (!HOST_PORT.test(sentinel)) throw invalidValue(`${name} must be 'host:port' (a host name or IP, a port)`);
      return sentinel;
    }
    if (sentinel === null || typeof sentinel !== 'object') {
      throw invalidType(`${name} must be a 'host:port' string or a { host, port } object, got ${kindOf(sentinel)}`);
    }
    checkKeys(sentinel, ['host', 'port'], name);
    const { host, port = 26379 } = sentinel;
    if (typeof host !== 'string') throw invalidType(`${name}.host must be a string, got ${kindOf(host)}`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw invalidValue(`${name}.port must be an integer from 1 to 65535, got ${String(port)}`);
    }
    const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    if (!HOST_PORT.test(bracketed)) throw invalidValue(`${name}.host must be a host name or an IP address`);
    return `${bracketed}:${port}`;
  });
  if (typeof masterName !== 'string') {
    throw invalidType(
      `options.redis.masterName must be a string (the Sentinels' name of the master), got ${kindOf(masterName)}`,
    );
  }
  if (masterName.length === 0) throw invalidValue('options.redis.masterName must not be empty');
  for (const [key, value] of [
    ['username', username],
    ['password', password],
    ['sentinelUsername', sentinelUsername],
    ['sentinelPassword', sentinelPassword],
  ]) {
    if (value !== undefined && typeof value !== 'string') {
      throw invalidType(`options.redis.${key} must be a string, got ${kindOf(value)}`);
    }
  }
  if (db !== undefined && (!Number.isInteger(db) || db < 0 || db > 65535)) {
    throw invalidValue(`options.redis.db must be an integer from 0 to 65535, got ${String(db)}`);
  }
  if (typeof tls !== 'boolean') throw invalidType(`options.redis.tls must be a boolean, got ${kindOf(tls)}`);
  if (options.ca !== undefined && !tls) {
    throw invalidValue(
      'options.redis.ca needs options.redis.tls: true with sentinels (without TLS it would be unused)',
    );
  }
  const auth =
    username !== undefined || password !== undefined
      ? `${encoded('username', username ?? '')}${password !== undefined ? `:${encoded('password', password)}` : ''}@`
      : '';
  const query = [
    ['sentinelUsername', sentinelUsername],
    ['sentinelPassword', sentinelPassword],
  ]
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${encoded(key, value)}`)
    .join('&');
  const path = `/${encoded('masterName', masterName)}${db ? `/${db}` : ''}${query ? `?${query}` : ''}`;
  return `${tls ? 'rediss' : 'redis'}+sentinel://${auth}${hosts.join(',')}${path}`;
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
