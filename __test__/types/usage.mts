// The ESM entry point's types (index.d.mts), compiled with the CommonJS ones.
import sseHelper, {
  broadcast,
  close,
  type EventOptions,
  publish,
  type SseCapacityError,
  SseHub,
} from 'sse-helper-native';

const hub: SseHub = new SseHub();
const options: EventOptions = { event: 'tick', id: '1' };
const written: number = hub.broadcast({ a: 1 }, options) + broadcast(null) + publish('news', 'x');
const closing: Promise<void> = close();
const err: SseCapacityError | undefined = undefined;
sseHelper.configure({ endTimeoutMs: 1000 });
void [written, closing, err];

// @ts-expect-error configure takes known options only
sseHelper.configure({ maxBuffer: 1 });
