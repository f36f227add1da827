// The demo: a live dashboard of the hub serving it. `npm start`; PORT picks
// the port (default 3000, or a free one when 3000 is taken).
//
// Once a second the hub broadcasts one `tick` event: the UTC clock and its
// own figures (clients per transport, frames and bytes per second from
// getStats() deltas, queued bytes, drops, slow disconnects, replays). The
// page's form broadcasts a message or publishes it to a channel the tab
// joined. History is on, channels' too, so a tab that reloads gets what it
// missed, its channels' messages included.
//
// The position handoff: the page is rendered with the recent messages
// already in it and the hub's position() at that instant; a new tab
// subscribes from that position, so a message sent between the render and
// the subscription is replayed, not lost (and none is shown twice).
//
// With REDIS_URL set (REDIS_URL=redis://127.0.0.1:6379 PORT=3001 npm start,
// and again with PORT=3002), the instances share one hub over a Redis
// stream: a message sent on either page shows on both, and a page that
// reconnects to the other instance is replayed what it missed from the
// stream. Ctrl+C drains: the pages move to the other instance.

const fs = require('node:fs');
const { STATUS_CODES } = require('node:http');
const path = require('node:path');
const express = require('express');
const sseHelper = require('sse-helper-native');

const REDIS_URL = process.env.REDIS_URL;
if (REDIS_URL) {
  sseHelper.configure({ redis: { url: REDIS_URL, stream: process.env.SSE_STREAM ?? 'sse-demo' } });
  sseHelper.on('bus', (e) => console.log(`redis bus ${e.state}${e.error ? `: ${e.error.message}` : ''}`));
} else {
  // 200 broadcasts: a little over three minutes of ticks and messages; and
  // each channel's last 50 messages.
  sseHelper.configure({ historySize: 200, channelHistorySize: 50 });
}
/** A replayable id: the history's `<epoch>:<n>`, or a Redis stream entry id. */
const EVENT_ID = /^(?:[a-z][a-z0-9]{7}:\d{1,16}|\d{1,16}-\d{1,20})$/;

const app = express();
app.use(express.json({ limit: '4kb' }));

/** The last messages to everyone, newest last: what a new page shows at once. */
const recent = [];
const RECENT = 20;
const PAGE = fs.readFileSync(path.join(__dirname, 'index.html'), 'utf8');
const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

/**
 * The page, rendered with the recent messages and the position it was
 * rendered at (both read in one go: nothing is broadcast in between). The
 * page subscribes from that position.
 */
app.get('/', (_req, res) => {
  const position = sseHelper.position() ?? '';
  const items = recent
    .map(
      (m) =>
        `<li data-rendered><time>${new Date(m.at).toISOString().slice(11, 19)}</time>` +
        `<span class="from">${escapeHtml(m.from)}</span><span>${escapeHtml(m.text)}</span></li>`,
    )
    .reverse()
    .join('');
  res
    .type('html')
    .send(
      PAGE.replace('<body>', `<body data-position="${escapeHtml(position)}">`).replace(
        '<ul id="log"></ul>',
        `<ul id="log">${items}</ul>`,
      ),
    );
});

app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  // EventSource sends Last-Event-ID itself when it reconnects; a reloaded
  // page cannot, so it passes the last id it saw in the query. The header
  // wins: on a reconnect the query still holds the id from the page load.
  const { lastEventId } = req.query;
  const options =
    req.get('last-event-id') === undefined && typeof lastEventId === 'string' && EVENT_ID.test(lastEventId)
      ? { lastEventId }
      : undefined;
  // Missed events are replayed inside addClient, before the greeting: the
  // page counts whatever arrives before `hello` as missed.
  // The tab's channels, rejoined before the replay so it includes theirs.
  const channels = typeof req.query.channels === 'string' ? req.query.channels.split(',').slice(0, 10) : [];
  const clientId = sseHelper.addClient(
    res,
    { ip: req.ip },
    { ...options, channels: channels.filter((c) => CHANNEL.test(c)) },
  );
  sseHelper.send(res, { clientId }, { event: 'hello' });
});

const CHANNEL = /^[a-z0-9-]{1,24}$/;
/**
 * JSON may escape half of a surrogate pair (`"\ud800"`): the hub refuses such
 * a string as an id, and a page would show it as U+FFFD.
 */
const LONE_SURROGATE = /\p{Cs}/u;
const NOT_WELL_FORMED = 'strings must be well-formed Unicode (no lone surrogates)';

/** POST /join { clientId, channel }: the tab's connection joins a channel. */
app.post('/join', (req, res) => {
  const { clientId, channel } = req.body ?? {};
  if (typeof clientId !== 'string' || typeof channel !== 'string' || !CHANNEL.test(channel)) {
    return res.status(400).json({ error: 'clientId and channel (a-z, 0-9, -; at most 24) are required' });
  }
  if (LONE_SURROGATE.test(clientId)) return res.status(400).json({ error: NOT_WELL_FORMED });
  const joined = sseHelper.join(clientId, channel);
  // 0: no connection under that id (the tab's stream is gone).
  res.status(joined > 0 ? 200 : 404).json({ joined });
});

/** POST /message { text, from, channel? }: broadcast, or publish to `channel`'s members. */
app.post('/message', (req, res) => {
  const { text, from, channel } = req.body ?? {};
  if (typeof text !== 'string' || text.trim() === '' || text.length > 280) {
    return res.status(400).json({ error: 'text: 1 to 280 characters' });
  }
  // The page sends a string; String() on anything else could throw
  // ({"toString":1}) or make up a name.
  if (from != null && typeof from !== 'string') {
    return res.status(400).json({ error: 'from: a string' });
  }
  if (channel !== undefined && (typeof channel !== 'string' || !CHANNEL.test(channel))) {
    return res.status(400).json({ error: 'channel: a-z, 0-9, -; at most 24' });
  }
  if (LONE_SURROGATE.test(text) || LONE_SURROGATE.test(from ?? '')) {
    return res.status(400).json({ error: NOT_WELL_FORMED });
  }
  // Cut at 24 UTF-16 units, dropping half a pair the cut would leave behind.
  const name = (from ?? 'anonymous').slice(0, 24).replace(LONE_SURROGATE, '');
  const message = { text: text.trim(), from: name, channel, at: Date.now() };
  // Both go into the history (a channel's publishes into its own).
  if (!channel) {
    recent.push(message);
    if (recent.length > RECENT) recent.shift();
  }
  const sent = channel
    ? sseHelper.publish(channel, message, { event: 'message' })
    : sseHelper.broadcast(message, { event: 'message' });
  res.json({ sent });
});

/** The same figures for Prometheus. */
app.get('/metrics', (_req, res) => {
  res.type('text/plain; version=0.0.4; charset=utf-8').send(sseHelper.metrics());
});

// Express's own answers are HTML pages, and for an error they hold its stack
// and this machine's paths: every refusal and failure is a short JSON reason.
app.use((_req, res) => res.status(404).json({ error: 'not found' }));

/** Why express.json refused a body (its error's `type`). */
const REFUSED = {
  'entity.parse.failed': 'body: not a JSON object',
  'entity.too.large': 'body: larger than 4 kB',
  'charset.unsupported': 'unsupported charset',
  'encoding.unsupported': 'unsupported content encoding',
};
app.use((err, _req, res, next) => {
  // Mid-response (an event stream) there is no status left to send: Express
  // ends the connection.
  if (res.headersSent) return next(err);
  const status = err.status ?? err.statusCode;
  // A 4xx is the request's fault (a body express.json refused, e.g. bad
  // gzip); the client hears why, not the error's own message.
  if (Number.isInteger(status) && status >= 400 && status < 500) {
    const reason = REFUSED[err.type] ?? (STATUS_CODES[status] ?? 'bad request').toLowerCase();
    return res.status(status).json({ error: reason });
  }
  console.error(err);
  res.status(500).json({ error: 'internal error' });
});

// The figures: rates from the difference between two getStats() snapshots.
let last = { stats: sseHelper.getStats(), at: performance.now() };
/** Clients of every instance, refreshed once a tick (with the Redis bus). */
let globalClients = null;
function tick() {
  if (REDIS_URL) {
    sseHelper.globalClientCount().then(
      (n) => {
        globalClients = n;
      },
      () => {
        globalClients = null;
      },
    );
  }
  const stats = sseHelper.getStats();
  const at = performance.now();
  const before = last;
  const seconds = (at - before.at) / 1000 || 1;
  const rate = (field) => Math.round((stats[field] - before.stats[field]) / seconds);
  last = { stats, at };
  sseHelper.broadcast(
    {
      utc: new Date().toISOString(),
      clients: stats.clients,
      stream: stats.streamConnections,
      socket: stats.socketConnections,
      framesPerSecond: rate('framesSent'),
      bytesPerSecond: rate('bytesSent'),
      framesSent: stats.framesSent,
      queuedBytes: stats.queuedBytes,
      framesDropped: stats.framesDropped,
      slowDisconnects: stats.slowDisconnects,
      replays: stats.replays + (stats.bus?.replays ?? 0),
      channels: stats.channels,
      instance: `127.0.0.1:${server?.address()?.port}`,
      bus: stats.bus?.state ?? 'off',
      globalClients,
    },
    // Each instance's own figures for its own pages: with the Redis bus a
    // filtered broadcast stays on this instance (and out of the stream).
    REDIS_URL ? { event: 'tick', filter: () => true } : { event: 'tick' },
  );
}
const ticker = setInterval(tick, 1000);

let server;
function listen(port) {
  server = app.listen(port, '127.0.0.1', () => {
    console.log(`sse-helper-native demo: http://127.0.0.1:${server.address().port}/ (Ctrl+C to stop)`);
  });
  server.on('error', (err) => {
    if (err.code === 'EADDRINUSE' && !process.env.PORT) return listen(0);
    throw err;
  });
}
listen(Number(process.env.PORT ?? 3000));

async function shutdown() {
  clearInterval(ticker);
  if (REDIS_URL) {
    // A rolling restart: pages reconnect to another instance in a second
    // and are replayed what they missed there.
    await sseHelper.drain({ retryMs: 1000 });
  } else {
    sseHelper.broadcastAndClose({ bye: true }, { event: 'bye' });
  }
  server.close(() => process.exit(0));
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
