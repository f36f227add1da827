import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';

/**
 * Anything that can carry an event stream: Node's and Express's responses,
 * HTTP/2 compatibility responses, or an object with the same three methods.
 */
export type SseResponse =
  | ServerResponse
  | Http2ServerResponse
  | {
      write(chunk: string | Uint8Array, ...rest: unknown[]): unknown;
      end(...args: unknown[]): unknown;
      on(event: string, listener: (...args: never[]) => void): unknown;
    };

/**
 * Any value. Sent as `JSON.stringify` would, except that a circular
 * reference becomes `"[Circular]"`, a BigInt its decimal string, and a
 * top-level `undefined`, function or symbol `null`.
 */
export type Payload = unknown;

/**
 * A registry of Server-Sent Events connections. The default export is one
 * instance; `new SseHub()` creates another with its own clients. Methods are
 * bound, so they can be destructured.
 */
export declare class SseHub {
  constructor();

  /**
   * Status 200 and the SSE headers (`Content-Type: text/event-stream; charset=utf-8`,
   * `Cache-Control: no-cache, no-transform`, `Connection: keep-alive` on HTTP/1.x,
   * `X-Accel-Buffering: no`), flushed at once; Nagle off.
   * @throws {Error} when the response headers were already sent.
   */
  initResponse(res: SseResponse): void;

  /**
   * Registers `res` under a new server-generated id (UUID v4) and returns it.
   * @throws {TypeError} when `res` is not a response.
   */
  addClient(res: SseResponse, meta?: unknown): string;
  /**
   * Registers `res` under `id` (1-256 characters, no control characters) and
   * returns it. A response already registered is moved to `id`, its meta
   * replaced. Several responses may share one id. A nullish `id` means
   * "generate one".
   * @throws {TypeError} on a bad `id` or `res`.
   */
  addClient(id: string | null | undefined, res: SseResponse, meta?: unknown): string;

  /** Unregisters `res` and ends it if still open. False when it was not registered. */
  removeClient(res: SseResponse): boolean;

  /** Unregisters and ends every connection under `id`. False when there was none. */
  removeClientById(id: string): boolean;

  /** Sends to every connection under `id`. False when there is none. */
  sendToClient(id: string, payload: Payload): boolean;

  /** Sends to one response, registered or not. False when it has closed. */
  send(res: SseResponse, payload: Payload): boolean;

  /** Sends to every registered connection; returns how many were written. */
  broadcast(payload: Payload): number;

  /** Broadcasts, then ends every connection; the registry is empty after. */
  broadcastAndClose(payload: Payload): number;

  /** Registered connections. */
  getClientCount(): number;

  /**
   * Removes connections that ended, errored or were destroyed, and ends and
   * removes those connected for longer than `maxAgeMs`. Returns how many.
   * @throws {TypeError} unless `maxAgeMs` is a non-negative finite number.
   */
  cleanupStaleClients(maxAgeMs: number): number;
}

/** The default registry, with the class attached for `require` users. */
declare const sseHelper: SseHub & { readonly SseHub: typeof SseHub; readonly default: SseHub };
export default sseHelper;

export declare const initResponse: SseHub['initResponse'];
export declare const addClient: SseHub['addClient'];
export declare const removeClient: SseHub['removeClient'];
export declare const removeClientById: SseHub['removeClientById'];
export declare const sendToClient: SseHub['sendToClient'];
export declare const send: SseHub['send'];
export declare const broadcast: SseHub['broadcast'];
export declare const broadcastAndClose: SseHub['broadcastAndClose'];
export declare const getClientCount: SseHub['getClientCount'];
export declare const cleanupStaleClients: SseHub['cleanupStaleClients'];
