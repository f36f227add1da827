// Types of the ESM entry point (index.mjs), built on the CommonJS types.
import sseHelper from './index.js';

export type {
  AddClientOptions,
  BroadcastOptions,
  BusEvent,
  BusStats,
  DisconnectEvent,
  DrainOnSignalsOptions,
  DrainOptions,
  EventOptions,
  EventOptionsFor,
  HubOptions,
  HubStats,
  MetricFamily,
  MetricsOptions,
  Payload,
  RedisOptions,
  SseHubEvents,
  SseHubListener,
  SseResponse,
  SseWriterError,
  StreamFallbackReason,
} from './index.js';

/** The default registry: one `SseHub`. */
export default sseHelper;

/** A registry of Server-Sent Events connections (see `index.d.ts`). */
export declare const SseHub: typeof sseHelper.SseHub;
export type SseHub<Meta = unknown> = sseHelper.SseHub<Meta>;
/** Thrown by `addClient` past `maxClients`. */
export declare const SseCapacityError: typeof sseHelper.SseCapacityError;
export type SseCapacityError = sseHelper.SseCapacityError;
/** Thrown by `initResponse` and `addClient` past `maxClientsPerKey`. */
export declare const SseKeyCapacityError: typeof sseHelper.SseKeyCapacityError;
export type SseKeyCapacityError = sseHelper.SseKeyCapacityError;
export declare const refuse: typeof sseHelper.refuse;

export declare const formatSSEMessage: typeof sseHelper.formatSSEMessage;
export declare const initResponse: typeof sseHelper.initResponse;
export declare const addClient: typeof sseHelper.addClient;
export declare const removeClient: typeof sseHelper.removeClient;
export declare const removeClientById: typeof sseHelper.removeClientById;
export declare const sendToClient: typeof sseHelper.sendToClient;
export declare const send: typeof sseHelper.send;
export declare const broadcast: typeof sseHelper.broadcast;
export declare const broadcastAndClose: typeof sseHelper.broadcastAndClose;
export declare const getClientCount: typeof sseHelper.getClientCount;
export declare const cleanupStaleClients: typeof sseHelper.cleanupStaleClients;
export declare const configure: typeof sseHelper.configure;
export declare const getStats: typeof sseHelper.getStats;
export declare const comment: typeof sseHelper.comment;
export declare const join: typeof sseHelper.join;
export declare const leave: typeof sseHelper.leave;
export declare const publish: typeof sseHelper.publish;
export declare const close: typeof sseHelper.close;
export declare const metrics: typeof sseHelper.metrics;
export declare const ready: typeof sseHelper.ready;
export declare const drain: typeof sseHelper.drain;
export declare const globalClientCount: typeof sseHelper.globalClientCount;
export declare const drainOnSignals: typeof sseHelper.drainOnSignals;
export declare const position: typeof sseHelper.position;
export declare const observeOpenTelemetry: typeof sseHelper.observeOpenTelemetry;
