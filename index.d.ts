import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';

/**
 * Anything that can carry an event stream: Node's and Express's responses,
 * HTTP/2 compatibility responses, or an object with the same three methods.
 */
/** A client id: any value but a nullish one, compared as `Map` compares keys. */
type ClientId = string | number | bigint | boolean | symbol | object;

/** An entry of `_clients`, as the original's map holds them. */
interface ClientEntry<Meta = unknown> {
  res: SseResponse;
  meta: Meta;
  /** Registration time, in ms since the epoch. */
  createdAt: number;
}

type SseResponse =
  | ServerResponse
  | Http2ServerResponse
  | {
      write(chunk: string | Uint8Array, ...rest: unknown[]): unknown;
      end?(...args: unknown[]): unknown;
      once?(event: string, listener: (...args: never[]) => void): unknown;
    };

/**
 * Any value. Sent as `JSON.stringify` would, except that a circular
 * reference becomes `"[Circular]"`, a BigInt its decimal string, and a
 * top-level `undefined`, function or symbol `null`.
 */
type Payload = unknown;

/** Fields of one event (WHATWG HTML, "Server-sent events"). */
interface EventOptions {
  /** `event:` field, the event type. No CR, LF or NUL; at most 1024 bytes. */
  event?: string;
  /** `id:` field, the client's last event id. No CR, LF or NUL; at most 1024 bytes. */
  id?: string;
  /** `retry:` field, the reconnection delay in milliseconds (a non-negative integer). */
  retry?: number;
}

/**
 * {@link EventOptions} for a payload of type `P`, with `raw`: send a string
 * payload as-is, one `data:` line per line, instead of as JSON. `raw: true`
 * compiles only with a string payload (anything else throws at run time).
 */
type EventOptionsFor<P> = EventOptions &
  ([P] extends [string]
    ? {
        /** Send the string as-is, one `data:` line per line, instead of as JSON. */
        raw?: boolean;
      }
    : { raw?: false });

interface BroadcastOptions<Meta = unknown> extends EventOptions {
  /** Only the members of this channel. */
  channel?: string;
  /** Only the connections whose meta passes this test. */
  filter?: (meta: Meta, id: string) => boolean;
}

/** The events an `SseHub` emits, and their listeners' arguments. */
interface SseHubEvents {
  /** A connection was registered (`addClient`). */
  connect: [event: { id: string; res: SseResponse }];
  /** A connection left: it closed, was removed, failed, or was too slow. */
  disconnect: [event: DisconnectEvent];
  /** A connection fell behind by more than `maxBufferedBytes`. */
  slow: [event: { id: string }];
  /** The native writer thread died (its connections were closed). */
  error: [error: SseWriterError];
  /** The Redis bus connected, or lost Redis (and retries). */
  bus: [event: BusEvent];
}

/** A listener of the hub event `E`. */
type SseHubListener<E extends keyof SseHubEvents> = (...args: SseHubEvents[E]) => void;

interface AddClientOptions {
  /** Replay from this id instead of the request's `Last-Event-ID` header. */
  lastEventId?: string;
  /**
   * Channels the connection joins before anything is replayed to it, so a
   * reconnecting member also gets what those channels' history kept
   * (`channelHistorySize`), merged with the broadcasts in the order they
   * were sent. (With a Redis bus, channels joined in the same tick count too.)
   */
  channels?: readonly string[];
}

interface HubOptions {
  /**
   * `'auto'` (default): plain HTTP/1.1 connections on Linux and macOS are
   * written by a native thread; `'stream'`: always through `res.write`.
   * Applies to connections registered afterwards.
   */
  transport?: 'auto' | 'stream';
  /**
   * Bytes a connection may have pending before the slow-client policy
   * applies, on either transport. Also bounds a replay: a reconnecting client
   * that missed more than this gets `event: reset` instead. Default 1 MiB.
   */
  maxBufferedBytes?: number;
  /** `'disconnect'` (default) or `'drop'` (skip whole frames until it catches up). */
  slowClientPolicy?: 'disconnect' | 'drop';
  /** Broadcasts kept for replay after reconnection. Default 0 (off). */
  historySize?: number;
  /**
   * Publishes kept per channel for replay (`publish(channel, …)` and
   * `broadcast(…, { channel })`): with it on they get ids from the hub's
   * one sequence and a reconnecting member (`addClient`'s `channels`) gets
   * what it missed. An integer from 0 to 100000. Default 0 (off: channel
   * messages are live only, without an id).
   */
  channelHistorySize?: number;
  /**
   * Idle time after which a connection gets a `: heartbeat` comment: an
   * integer from 0 to 2147483647 (Node's longest timer). Default 15000; 0
   * turns it off.
   */
  heartbeatMs?: number;
  /**
   * Most connections at once; past it `addClient` throws `SseCapacityError`. Default 0 (no limit).
   * Responses `initResponse` admitted and `addClient` has not registered yet count too,
   * so `initResponse` throws it first (a 503 for `refuse`).
   */
  maxClients?: number;
  /**
   * Most connections per client key (`clientKey`; by default the remote
   * address), open or admitted by `initResponse`; past it `initResponse`
   * (or `addClient`) throws `SseKeyCapacityError` (a 429 for `refuse`).
   * Default 0 (no limit). Counts connections made while it is on.
   */
  maxClientsPerKey?: number;
  /**
   * The key `maxClientsPerKey` counts a request under: a string, or
   * `undefined`/`null` for a request that is not limited per key. Called at
   * `initResponse` (or `addClient` without it) while `maxClientsPerKey` is
   * on; `req` is `res.req`. `null` restores the default: the remote address
   * (`req.socket.remoteAddress`), or behind a trusted proxy (`trustProxy`)
   * the first address of `X-Forwarded-For`.
   */
  clientKey?: ((req: IncomingMessage | undefined, res: SseResponse) => string | undefined | null) | null;
  /**
   * Whether the default `clientKey` believes `X-Forwarded-For`: `true` (the
   * app only runs behind a proxy that sets it), or a function of the peer's
   * address returning true for the proxies to believe. Default false: any
   * client could write the header, so it is ignored.
   */
  trustProxy?: boolean | ((remoteAddress: string | undefined) => boolean);
  /**
   * The `Retry-After` a refusal carries, in ms, rounded up to whole seconds
   * (`err.retryAfter`). An integer from 0 to 86400000. Default 5000.
   */
  retryAfterMs?: number;
  /**
   * How long a native-writer connection that was removed may take to flush
   * what is queued for it before it is destroyed (a client that stopped
   * reading cannot hold it open). An integer from 1 to 2147483647. Default 30000.
   */
  endTimeoutMs?: number;
  /**
   * Native writer threads the connections are spread over (each connection
   * stays on one). An integer from 1 to 64; default: the available cores
   * but one (the JS thread keeps it), at least 1 and at most 8. Fixed once the writer has started (the first hand-off):
   * changing it then throws an `Error` with code `ERR_SSE_WRITER_RUNNING`.
   */
  writerThreads?: number;
  /**
   * One hub across processes and machines, over a Redis stream: a URL
   * (`redis://host:6379/0`, `rediss://` for TLS) or the options. Set once
   * per hub (again: `Error` with code `ERR_SSE_BUS_RUNNING`). From then on
   * `broadcast`, `publish` and `sendToClient` reach the matching clients of
   * every instance, each event's `id` is its stream entry id, and a client
   * reconnecting anywhere is replayed what it missed.
   */
  redis?: string | RedisOptions;
}

interface RedisOptions {
  /**
   * `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS;
   * `redis+sentinel://host:port[,host:port…]/<master>[/<db>]` for Sentinel
   * (`rediss+sentinel://` for TLS to the Sentinels and to the master;
   * `?sentinelUsername=…&sentinelPassword=…` for Sentinels that require a
   * password);
   * `redis+cluster://[user:password@]host:port[,host:port…]` (or
   * `rediss+cluster://`) for a Redis Cluster. Not with `cluster`.
   */
  url?: string;
  /**
   * A Redis Cluster by some of its nodes: `['redis://host:7000', …]`, every
   * one with the same scheme, user and password (instead of `url`).
   */
  cluster?: string[];
  /**
   * Redis Sentinel by its Sentinels (instead of `url` or `cluster`):
   * `['host:port', …]` or `[{ host, port }, …]` (port 26379 when left out).
   * The bus asks them for `masterName`'s address at every connect and
   * follows a failover; it never writes to a server that is not the master.
   */
  sentinels?: (string | { host: string; port?: number })[];
  /** With `sentinels`: the name the Sentinels monitor the master under. */
  masterName?: string;
  /** With `sentinels`: the master's ACL user (not the Sentinels': see `sentinelUsername`). */
  username?: string;
  /** With `sentinels`: the master's password. */
  password?: string;
  /** With `sentinels`: the database number on the master. Default 0. */
  db?: number;
  /**
   * With `sentinels`: TLS to the Sentinels and to the master they name
   * (`rediss+sentinel://`), trusting `ca` when given. Default false.
   */
  tls?: boolean;
  /** With `sentinels`: the Sentinels' own ACL user, when they require one. */
  sentinelUsername?: string;
  /** With `sentinels`: the Sentinels' own password, when they require one. */
  sentinelPassword?: string;
  /**
   * The stream key every instance shares. Default `'sse'`. On a Cluster
   * every other key of the bus carries its hash tag (`{sse}:presence:…`), so
   * they all live in the stream's slot; a name that holds `}` needs a tag of
   * its own there (`'{app}:sse'`).
   */
  stream?: string;
  /**
   * About this many entries are kept (`XADD ... MAXLEN ~`): how far back a
   * reconnecting client can be replayed. Default 10,000.
   */
  maxLen?: number;
  /**
   * Most entries one replay reads; a client that missed more gets
   * `event: reset`. Default 1,000 (also bounded by `maxBufferedBytes`).
   */
  replayLimit?: number;
  /**
   * For TLS with a private CA (`rediss://`, `rediss+cluster://`,
   * `rediss+sentinel://`, `tls: true`): the PEM certificates to trust
   * instead of the system's roots. TLS is rustls, on the Linux builds.
   */
  ca?: string | Buffer;
}

/** The Redis bus in `getStats()`. */
interface BusStats {
  /** `'connecting'`, `'connected'`, `'disconnected'` (retrying with backoff) or `'closed'`. */
  state: 'connecting' | 'connected' | 'disconnected' | 'closed';
  /** Entries this instance appended to the stream. */
  entriesWritten: number;
  /** Entries read back from the stream (every instance's). */
  entriesRead: number;
  /** Reconnections to Redis after an outage. */
  reconnects: number;
  /** Reconnecting clients replayed what they missed from the stream. */
  replays: number;
  /** Clients sent `event: reset` by the bus (their id was trimmed or unknown, or they missed too much). */
  resets: number;
  /** Entries skipped because they did not follow the encoding. */
  malformed: number;
  /** Events delivered to local clients only, without an id, because Redis was away. */
  localFallbacks: number;
}

/** The `bus` event: the Redis connection came up, or went away (the hub retries). */
type BusEvent = { state: 'connected' } | { state: 'disconnected'; error: Error & { code: 'ERR_SSE_BUS' } };

interface DrainOptions {
  /** Sent to every client as `retry:` first: how soon browsers reconnect (elsewhere). */
  retryMs?: number;
  /**
   * Spreads the reconnections: each client's `retry:` is drawn from
   * `retryMs` to `retryMs + retryJitterMs` (in at most 16 steps), so a
   * rolling restart does not bring every browser back in the same second.
   * Needs `retryMs`.
   */
  retryJitterMs?: number;
}

/** `drainOnSignals()`'s options. */
interface DrainOnSignalsOptions extends DrainOptions {
  /** Default `['SIGTERM', 'SIGINT']` (systemd, Docker, Kubernetes; PM2, Ctrl-C); add `'SIGUSR2'` for nodemon. */
  signals?: ('SIGTERM' | 'SIGINT' | 'SIGUSR2' | 'SIGHUP' | 'SIGBREAK')[];
  /** The longest the drain may take before the signal is raised again. Default 1,400 ms (PM2 kills after 1,600). */
  timeoutMs?: number;
}

/**
 * Why a connection is on the stream transport (`res.write`) instead of the
 * native socket writer, as `getStats().streamFallbacks` and the
 * `sse_stream_fallbacks_total{reason}` metric name it. `NODE_DEBUG=sse-helper-native`
 * logs the same name with each registration.
 */
type StreamFallbackReason =
  /** `configure({ transport: 'stream' })`. */
  | 'configured'
  /** No native writer on this platform (Windows). */
  | 'platform'
  /** Not an HTTP/1.x response (HTTP/2). */
  | 'notHttp1'
  /** `res.write` or `res.end` is not Node's (a wrapper such as `compression`). */
  | 'wrapped'
  /** The response is frozen, sealed or not extensible. */
  | 'notExtensible'
  /** The headers were not sent when it was registered (call `initResponse` first). */
  | 'headersNotSent'
  /** The response has no socket. */
  | 'noSocket'
  /** A TLS socket (HTTPS served by Node itself). */
  | 'tls'
  /** The socket exposes no file descriptor (Bun, Deno, a non-TCP socket). */
  | 'noFd'
  /** The response has no body (a `HEAD` request). */
  | 'noBody'
  /** A `Content-Length` was set. */
  | 'contentLength'
  /** A `Transfer-Encoding` the writer does not frame. */
  | 'transferEncoding'
  /** The body is neither chunked nor delimited by the connection's close. */
  | 'notDelimited'
  /** Writes were still pending in Node. */
  | 'pending'
  /** The socket has no TCP addresses. */
  | 'noAddresses'
  /** The fd was not the response's socket (its addresses differ). */
  | 'fdMismatch'
  /** The writer held `socketCapacity` connections. */
  | 'capacity'
  /** The native writer could not start, or stopped. */
  | 'writerDown';

interface HubStats {
  /** Registered connections, on both transports. */
  clients: number;
  /** Connections written through `res.write`. */
  streamConnections: number;
  /** Connections written by the native socket writer. */
  socketConnections: number;
  /** Frames written to connections so far (an event, a comment or a heartbeat sent to one connection is one). */
  framesSent: number;
  /** Bytes of those frames (SSE bytes, without HTTP chunk framing). */
  bytesSent: number;
  /** Frames skipped for slow clients under the `drop` policy. */
  framesDropped: number;
  /** Channels with at least one member. */
  channels: number;
  /** Reconnections that got missed events replayed. */
  replays: number;
  /**
   * Replays and resets (of `replays` and `resets`) that shared a read of
   * history another reconnection made: in a reconnect storm, clients that
   * come back from the same `Last-Event-ID` with the same channels while
   * nothing new is recorded get one replay, read once (and on the stream
   * transport written from one string or `Buffer`).
   */
  replaysShared: number;
  /** Reconnections whose last id was no longer in history (sent `event: reset`). */
  resets: number;
  /** Connections closed for falling behind by more than `maxBufferedBytes`. */
  slowDisconnects: number;
  /** Bytes waiting in the native writer's queues. */
  queuedBytes: number;
  /**
   * Most connections this hub's native writer may hold at once: about half
   * the open-files limit (`ulimit -Hn`, which Node adopts at startup), as
   * each costs a second fd. Later ones use the stream transport. 0 with
   * `transport: 'stream'`.
   */
  socketCapacity: number;
  /** Native writer threads (running, or the number the first hand-off starts). */
  writerThreads: number;
  /** Socket connections on each running writer thread (empty before the writer starts). */
  socketConnectionsByThread: number[];
  /** Connections refused for `maxClients` (503), by `initResponse` or `addClient`. */
  refusedMaxClients: number;
  /** Connections refused for `maxClientsPerKey` (429). */
  refusedMaxClientsPerKey: number;
  /** Places `initResponse` reserved that `addClient` has not taken yet. */
  pendingAdmissions: number;
  /** Client keys `maxClientsPerKey` counts now (those with a connection or a reservation). */
  admissionKeys: number;
  /**
   * Connections registered on the stream transport since the hub was made,
   * by why the native writer did not take them (every reason, zeros
   * included): `{ wrapped: 3, tls: 0, … }`.
   */
  streamFallbacks: Record<StreamFallbackReason, number>;
  /** The Redis bus; `null` without `configure({ redis })`. */
  bus: BusStats | null;
}

/** `metrics()`'s options. */
interface MetricsOptions {
  /**
   * `'text'` (default): the Prometheus text exposition format; `'json'`:
   * the metric families as objects (prom-client's shape).
   */
  format?: 'text' | 'json';
  /**
   * Constant labels added to every sample, such as `{ hub: 'chat' }` for an
   * app with several hubs. Prometheus label names; `transport`, `thread`
   * and `reason` are taken.
   */
  labels?: Record<string, string>;
}

/**
 * `observeOpenTelemetry()`'s options. The meter is typed structurally, so
 * the package's types need no `@opentelemetry/api`; an `@opentelemetry/api`
 * `Meter` fits.
 */
interface OpenTelemetryOptions {
  /**
   * The meter to register on; default: `@opentelemetry/api`'s global
   * provider's meter `sse-helper-native` (then `@opentelemetry/api` must be
   * installed).
   */
  meter?: OpenTelemetryMeter;
  /**
   * Attributes added to every point, such as `{ hub: 'chat' }`; `transport`,
   * `thread` and `reason` are taken. Each observer of one meter needs its
   * own: the same labels twice on a meter are refused.
   */
  labels?: Record<string, string>;
}

/** The batch callback `observeOpenTelemetry()` registers: it observes every instrument once. */
type OpenTelemetryBatchCallback = (result: {
  observe(instrument: object, value: number, attributes?: Record<string, string>): void;
}) => void;

/** The part of an OpenTelemetry `Meter` that `observeOpenTelemetry()` uses. */
interface OpenTelemetryMeter {
  createObservableCounter(name: string, options?: { description?: string }): object;
  createObservableGauge(name: string, options?: { description?: string }): object;
  addBatchObservableCallback(callback: OpenTelemetryBatchCallback, instruments: object[]): void;
  removeBatchObservableCallback?(callback: OpenTelemetryBatchCallback, instruments: object[]): void;
}

/**
 * One metric family of `metrics({ format: 'json' })`, in the shape
 * prom-client's registries expect from a metric's `get()`.
 */
interface MetricFamily {
  /** `sse_`-prefixed; counters end in `_total`. */
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  /** One sample per label set: `sse_connections` has one per transport (`stream`, `socket`). */
  values: { labels: Record<string, string>; value: number }[];
  /** How prom-client's cluster mode combines the workers' samples. */
  aggregator: 'sum';
}

interface DisconnectEvent {
  id: string;
  reason: 'close' | 'removed' | 'error' | 'slow';
}

/** Emitted as `error` when the native writer thread died (its connections were closed). */
interface SseWriterError extends Error {
  code: 'ERR_SSE_WRITER_DIED';
}

/**
 * Thrown by `initResponse` and `addClient` past `maxClients` (reservations
 * by `initResponse` included).
 */
declare class SseCapacityError extends Error {
  constructor(maxClients: number, retryAfter?: number);
  readonly code: 'ERR_SSE_CAPACITY';
  readonly statusCode: 503;
  /** The same as `statusCode`. */
  readonly status: 503;
  readonly maxClients: number;
  /** Seconds, for the `Retry-After` header (`retryAfterMs` rounded up). */
  readonly retryAfter: number;
  /** Answers `res` (before any SSE header): 503, `Retry-After`, a short text body. */
  respond(res: SseResponse): void;
}

/** Thrown by `initResponse` and `addClient` past `maxClientsPerKey` under the request's key. */
declare class SseKeyCapacityError extends Error {
  constructor(maxClientsPerKey: number, retryAfter?: number, key?: string);
  readonly code: 'ERR_SSE_KEY_CAPACITY';
  readonly statusCode: 429;
  /** The same as `statusCode`. */
  readonly status: 429;
  readonly maxClientsPerKey: number;
  /** The key (`clientKey(req)`) that is at its limit. */
  readonly key: string | undefined;
  /** Seconds, for the `Retry-After` header (`retryAfterMs` rounded up). */
  readonly retryAfter: number;
  /** Answers `res` (before any SSE header): 429, `Retry-After`, a short text body. */
  respond(res: SseResponse): void;
}

/**
 * A registry of Server-Sent Events connections. The default export is one
 * instance; `new SseHub()` creates another with its own clients. Methods are
 * bound, so they can be destructured. Emits `connect`, `disconnect`, `slow`
 * and `error` (the native writer died; without a listener it is a process
 * warning, never a crash). A listener that throws never undoes the hub's
 * work: its error is rethrown on the next tick.
 */
declare class SseHub<Meta = unknown> extends EventEmitter {
  /** `new SseHub<{ ip: string }>()` types every `meta` and `filter` of the hub. */
  constructor();

  // The hub's events only: a misspelt event or a listener of the wrong shape does not compile.
  on<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  once<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  off<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  addListener<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  removeListener<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  prependListener<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  prependOnceListener<E extends keyof SseHubEvents>(event: E, listener: SseHubListener<E>): this;
  emit<E extends keyof SseHubEvents>(event: E, ...args: SseHubEvents[E]): boolean;

  /**
   * Status 200 and the SSE headers (`Content-Type: text/event-stream; charset=utf-8`,
   * `Cache-Control: no-cache, no-transform`, `Connection: keep-alive` on HTTP/1.x,
   * `X-Accel-Buffering: no`), flushed at once; Nagle off. With `maxClients`
   * or `maxClientsPerKey` on, first reserves the response's place (taken by
   * `addClient`, given back when the response closes).
   * @throws {SseCapacityError} past `maxClients`, before anything is sent.
   * @throws {SseKeyCapacityError} past `maxClientsPerKey`, before anything is sent.
   * @throws {Error} when the response headers were already sent.
   */
  initResponse(res: SseResponse): void;

  /**
   * Answers a refusal `initResponse` or `addClient` threw: `err.status`,
   * `Retry-After: err.retryAfter`, a short text body. Returns true; any
   * other error is thrown again. `catch (err) { return hub.refuse(res, err); }`
   */
  refuse(res: SseResponse, err: unknown): true;

  /** The original helper's formatter: `data: <json>\n\n` (never throws; see `send`). */
  formatSSEMessage(payload: Payload): string;

  /**
   * A live view of the registry with `Map`'s interface, as the original
   * exports its map: `get(id)` gives `{ res, meta, createdAt }`; `delete` and
   * `clear` drop connections without ending them; `set` stores an entry by
   * hand, as the original's tests do. For tests and inspection.
   */
  readonly _clients: Map<unknown, ClientEntry<Meta>>;
  /** A live view of res → id with `WeakMap`'s interface, as the original exports. */
  readonly _resIndex: WeakMap<object, unknown>;

  /**
   * Registers `res` under a new server-generated id (`anon-<ms>-<hex>`) and returns it.
   * @throws {TypeError} when `res` is not a response, or is frozen, sealed or
   *   not extensible (`ERR_INVALID_ARG_VALUE`: the helper keeps its key on it).
   * @throws {SseCapacityError} past `maxClients`.
   * @throws {SseKeyCapacityError} past `maxClientsPerKey` (a response `initResponse` admitted has its place).
   * @throws {Error} with code `ERR_SSE_CLOSED` after `close()`.
   */
  addClient(res: SseResponse, meta?: Meta, options?: AddClientOptions): string;
  /**
   * Registers `res` under `id` and returns `id` as given: any value, compared
   * as a `Map` compares keys (`42` and `'42'` are two clients). A response
   * already registered is moved to `id`, its meta replaced. Several
   * responses may share one id. A nullish `id` means "generate one".
   * @throws {TypeError} when `res` is not an object.
   */
  addClient<Id extends ClientId>(id: Id, res: SseResponse, meta?: Meta, options?: AddClientOptions): Id;
  addClient(id: null | undefined, res: SseResponse, meta?: Meta, options?: AddClientOptions): string;

  /** Unregisters `res` and ends it if still open. False when it was not registered. */
  removeClient(res: unknown): boolean;

  /** Unregisters and ends every connection under `id`. False when there was none. */
  removeClientById(id: unknown): boolean;

  /**
   * Sends to every connection under `id`. False when there is none. With a
   * Redis bus: to those connections on every instance; true once handed to
   * the bus (the client may be on another instance), and `options.id` is
   * refused (`ERR_INVALID_ARG_VALUE`: the stream entry id is the id).
   */
  sendToClient<P>(id: unknown, payload: P, options?: EventOptionsFor<P>): boolean;

  /** Sends to one response, registered or not. False when it has closed. */
  send<P>(res: SseResponse | null | undefined, payload: P, options?: EventOptionsFor<P>): boolean;

  /**
   * Sends to every registered connection; returns how many were written.
   * With a Redis bus: to every instance's connections (or channel members),
   * delivered once read back from the stream; returns this instance's
   * connections targeted. A `filter` cannot travel: a filtered broadcast
   * stays on this instance, without an id.
   */
  broadcast<P>(payload: P, options?: BroadcastOptions<Meta> & EventOptionsFor<P>): number;

  /** Sends to the members of `channel` (on every instance, with a Redis bus); returns how many here. */
  publish<P>(channel: string, payload: P, options?: EventOptionsFor<P>): number;

  /** Writes a comment (`: text`) to a response, a client id's connections, or everyone (`null`). */
  comment(target: SseResponse | string | null, text: string): number;

  /** Adds a response, or every connection under a client id, to `channel`; returns how many joined. */
  join(target: SseResponse | string, channel: string): number;

  /** Takes a response, or every connection under a client id, out of `channel`. */
  leave(target: SseResponse | string, channel: string): number;

  /** Changes settings; returns the hub. */
  configure(options: HubOptions): this;

  /** Counters and gauges at this instant. */
  getStats(): HubStats;

  /**
   * `getStats()` in the Prometheus text exposition format (version 0.0.4;
   * serve it as `text/plain; version=0.0.4; charset=utf-8`): `sse_`-prefixed
   * counters and gauges with `# HELP` and `# TYPE` lines, the connection
   * gauge labelled by `transport`. Every figure is from one snapshot.
   * @throws {TypeError} on an unknown option, a bad label name or a non-string label value.
   */
  metrics(options?: MetricsOptions & { format?: 'text' }): string;
  /** The same figures as metric families, for a prom-client collector. */
  metrics(options: MetricsOptions & { format: 'json' }): MetricFamily[];

  /**
   * The figures of `metrics()` as OpenTelemetry observable instruments
   * (counters as ObservableCounter, gauges as ObservableGauge) under the
   * same names, read from one snapshot per collection. No span is ever
   * created. Returns a function that removes them; `close()` does too.
   * @throws {Error} with code `ERR_SSE_NO_OPENTELEMETRY` without `options.meter` when `@opentelemetry/api` is not installed.
   * @throws {TypeError} on an unknown option, a meter that is none, a bad
   * label, or labels another open observer of the meter already has.
   */
  observeOpenTelemetry(options?: OpenTelemetryOptions): () => void;

  /**
   * Broadcasts, then ends every connection; the registry is empty after.
   * With a Redis bus both stay on this instance (no id): it is what a
   * shutting-down instance tells its own clients.
   */
  broadcastAndClose<P>(payload: P, options?: EventOptionsFor<P>): number;

  /**
   * Resolves once the Redis bus is connected (at once without one). While
   * Redis is unreachable it waits (keeping Node alive); broadcasts meanwhile
   * are local. Rejects with `ERR_SSE_CLOSED` if the hub is closed (or
   * drained) before that.
   */
  ready(): Promise<void>;

  /**
   * A rolling restart without losing events: refuses new clients, sends
   * `retry: retryMs`, waits until this instance's broadcasts were delivered,
   * then ends every local connection and closes the hub. Browsers
   * reconnect to another instance and are replayed what they missed.
   */
  drain(options?: DrainOptions): Promise<void>;

  /**
   * Drains the hub on the first of `signals`, for at most `timeoutMs`, then
   * raises that signal again so the process ends as it would have (unless
   * the app listens for it itself, then the app decides). A second signal
   * meanwhile ends the process at once. Returns a function that removes
   * the listeners.
   * @throws {TypeError} on an unknown option, signal or a bad duration.
   */
  drainOnSignals(options?: DrainOnSignalsOptions): () => void;

  /**
   * Clients connected to every instance on the same Redis stream (each
   * instance's count lives in Redis with a 10 s expiry). Without a bus,
   * this hub's count.
   * @throws {Error} with code `ERR_SSE_BUS` (as a rejection) while Redis is unreachable.
   */
  globalClientCount(): Promise<number>;

  /** Registered connections. */
  getClientCount(): number;

  /**
   * The id a page can embed to subscribe from now on: render the page's
   * state, embed `position()`, and have the stream route pass it back as
   * `addClient(res, meta, { lastEventId })`; the client then gets exactly
   * what was broadcast after the render (or `event: reset` if that is no
   * longer kept). Without a bus, an id of this hub's history
   * (`<epoch>:<n>`); with one, a Redis stream id. `null` when nothing can be
   * replayed: history off (`historySize: 0`) without a bus, or a bus that
   * has not reached Redis yet.
   */
  position(): string | null;

  /**
   * Removes connections that ended, errored or were destroyed, and ends and
   * removes those connected for longer than `maxAgeMs` (default one hour; a
   * falsy value such as 0 means no age limit, as in the original). Returns
   * how many.
   */
  cleanupStaleClients(maxAgeMs?: number | null): number;

  /**
   * Ends every connection after what is queued for it has been written (at
   * most `endTimeoutMs`), stops the heartbeat and the native writer thread,
   * and refuses new clients. Resolves once all of that is done, keeping Node
   * alive until then: the code after `await hub.close()` always runs.
   */
  close(): Promise<void>;
  // With a Redis bus, `close()` also closes its Redis connections before it resolves.

  /** Closes the hub without waiting (`using hub = new SseHub()`). */
  [Symbol.dispose](): void;

  /** Closes the hub and waits (`await using hub = new SseHub()`). */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The default registry, with the classes attached for `require` users. */
declare const sseHelper: SseHub & {
  readonly SseHub: typeof SseHub;
  readonly SseCapacityError: typeof SseCapacityError;
  readonly SseKeyCapacityError: typeof SseKeyCapacityError;
  readonly default: SseHub;
};

// The package is CommonJS (`module.exports = sseHelper`), so its types use
// `export =`; the namespace carries the type names (TypeScript merges a
// types-only namespace with the value of the same name). `index.d.mts`
// types the ESM entry point.
declare namespace sseHelper {
  export {
    AddClientOptions,
    BroadcastOptions,
    BusEvent,
    BusStats,
    ClientEntry,
    ClientId,
    DisconnectEvent,
    DrainOnSignalsOptions,
    DrainOptions,
    EventOptions,
    EventOptionsFor,
    HubOptions,
    HubStats,
    MetricFamily,
    MetricsOptions,
    OpenTelemetryMeter,
    OpenTelemetryOptions,
    Payload,
    RedisOptions,
    SseHubEvents,
    SseHubListener,
    SseResponse,
    SseWriterError,
    StreamFallbackReason,
  };
  /** The type of a hub: `const hub: SseHub = new sseHelper.SseHub()`; `SseHub<Meta>` for a typed meta. */
  export type SseHub<Meta = unknown> = HubInstance<Meta>;
  /** The type of the error `addClient` throws past `maxClients`. */
  export type SseCapacityError = CapacityErrorInstance;
  /** The type of the error thrown past `maxClientsPerKey`. */
  export type SseKeyCapacityError = KeyCapacityErrorInstance;
}

type HubInstance<Meta = unknown> = SseHub<Meta>;
type CapacityErrorInstance = SseCapacityError;
type KeyCapacityErrorInstance = SseKeyCapacityError;

export = sseHelper;
