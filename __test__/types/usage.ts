// Compiled with `tsc --noEmit` by modules.spec.js: the documented usage must
// type-check, and misuse must not.
import express from 'express';
import sseHelper, { addClient, broadcast, cleanupStaleClients, SseHub } from 'sse-helper-native';

const app = express();
app.get('/events', (req, res) => {
  sseHelper.initResponse(res);
  const clientId: string = (req as { sessionID?: string }).sessionID || sseHelper.addClient(res);
  sseHelper.addClient(clientId, res, { ip: req.ip });
  sseHelper.send(res, { utc: new Date().toISOString() });
});

const hub = new SseHub();
const written: number = hub.broadcast({ a: 1 });
const ok: boolean = hub.sendToClient('id', 'x') && hub.removeClientById('id');
const count: number = sseHelper.getClientCount() + cleanupStaleClients(1000) + broadcast(null);
const id: string = addClient('session', {} as import('node:http').ServerResponse);
void [written, ok, count, id];

hub.configure({ historySize: 100, heartbeatMs: 0, transport: 'stream', slowClientPolicy: 'drop', endTimeoutMs: 500 });
hub.on('error', (err) => void err.code.toLowerCase());
const closing: Promise<void> = hub.close();
void closing;
hub.broadcast(
  { a: 1 },
  { event: 'tick', id: '7', retry: 1000, channel: 'news', filter: (meta, cid) => !!meta && cid !== '' },
);
hub.publish('news', 'text', { raw: true });
hub.join('session', 'news');
const position: string | null = hub.position();
void position;
hub.comment(null, 'ping');
hub.on('disconnect', ({ id: left, reason }) => void [left, reason.toUpperCase()]);
const stats = hub.getStats();
const socketCount: number = stats.socketConnections + stats.replays;
void socketCount;
const wrapped: number = stats.streamFallbacks.wrapped + stats.streamFallbacks.noFd;
void wrapped;
const reason: sseHelper.StreamFallbackReason = 'capacity';
void reason;
// @ts-expect-error not a stream fallback reason (a typo of 'wrapped')
void stats.streamFallbacks.wraped;
try {
  hub.addClient({} as import('node:http').ServerResponse, { meta: 1 }, { lastEventId: '3' });
} catch (err) {
  if (err instanceof sseHelper.SseCapacityError) void err.statusCode;
}

// @ts-expect-error transport is 'auto' or 'stream'
hub.configure({ transport: 'fast' });
// @ts-expect-error maxAgeMs is a number
cleanupStaleClients('10');
// @ts-expect-error a response is required
hub.addClient('only-an-id');
// @ts-expect-error the count is a number
const wrong: string = hub.getClientCount();
void wrong;

// Events: only the hub's, each with its listener's shape.
hub.on('connect', ({ id: joined, res }) => void [joined.length, res]);
hub.once('bus', (event) => void (event.state === 'disconnected' ? event.error.code : event.state));
hub.off('slow', ({ id: slowId }) => void slowId);
hub.emit('slow', { id: 'x' });
// @ts-expect-error not an event of the hub (a typo of 'disconnect')
hub.on('disconect', () => {});
// @ts-expect-error a disconnect listener gets { id, reason }, not a string
hub.on('disconnect', (reason: string) => void reason);
// @ts-expect-error once is typed too
hub.once('conect', () => {});

// raw: true only with a string payload.
hub.broadcast('already framed\nlines', { raw: true });
hub.send({} as import('node:http').ServerResponse, 'x', { raw: true, event: 'e' });
// @ts-expect-error raw: true with an object would throw at run time
hub.broadcast({ a: 1 }, { raw: true });
// @ts-expect-error the same for publish
hub.publish('news', 42, { raw: true });

// A hub typed over its meta.
const typed = new SseHub<{ ip: string }>();
typed.addClient({} as import('node:http').ServerResponse, { ip: '127.0.0.1' });
typed.broadcast('x', { filter: (meta) => meta.ip.startsWith('10.') });
const entryIp: string | undefined = typed._clients.get('id')?.meta.ip;
void entryIp;
// @ts-expect-error the meta of this hub has an ip
typed.addClient({} as import('node:http').ServerResponse, { ip: 1 });

// OpenTelemetry: an @opentelemetry/api Meter fits the structural type.
import { metrics as otelMetrics } from '@opentelemetry/api';

const stopOtel: () => void = hub.observeOpenTelemetry({ meter: otelMetrics.getMeter('app'), labels: { hub: 'a' } });
stopOtel();
// @ts-expect-error labels are strings
hub.observeOpenTelemetry({ labels: { hub: 1 } });
// @ts-expect-error a meter must be a Meter
hub.observeOpenTelemetry({ meter: {} });

// Admission control: per-key caps, the refusal errors and the one-line answer.
hub.configure({
  maxClients: 1000,
  maxClientsPerKey: 5,
  clientKey: (req) => req?.headers['x-user-id']?.toString(),
  trustProxy: (address) => address === '10.0.0.1',
  retryAfterMs: 10_000,
});
hub.configure({ clientKey: null, trustProxy: true });
app.get('/limited', (_req, res) => {
  try {
    hub.initResponse(res);
  } catch (err) {
    return hub.refuse(res, err);
  }
  hub.addClient(res);
});
const refusal = new sseHelper.SseKeyCapacityError(5, 10, '1.2.3.4');
const status: 429 = refusal.status;
const retryAfter: number = refusal.retryAfter + new sseHelper.SseCapacityError(3).retryAfter;
const refusals: number = stats.refusedMaxClients + stats.refusedMaxClientsPerKey + stats.pendingAdmissions;
void [status, retryAfter, refusals];
// @ts-expect-error trustProxy is a boolean or a function
hub.configure({ trustProxy: 'yes' });
