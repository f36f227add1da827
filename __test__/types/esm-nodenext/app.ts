// A TypeScript ESM project ("type": "module", "module": "nodenext") that
// installed sse-helper-native: the default import, named imports and the
// type names, on a bare node:http server. modules.spec.js compiles it with
// tsc and runs the output.
import { createServer } from 'node:http';
import sseHelper, {
  broadcast,
  type HubStats,
  type MetricFamily,
  metrics,
  SseCapacityError,
  SseHub,
} from 'sse-helper-native';

const hub: SseHub = new SseHub();
const server = createServer((req, res) => {
  hub.initResponse(res);
  const id: string = hub.addClient(res, { url: req.url }, { lastEventId: '1' });
  hub.join(id, 'news');
});

const stats: HubStats = sseHelper.getStats();
const text: string = metrics({ labels: { hub: 'default' } });
const families: MetricFamily[] = hub.metrics({ format: 'json' });
const written: number = broadcast({ hello: 'esm' }) + hub.publish('news', 'x', { event: 'tick' });
const capacity: boolean = new SseHub() instanceof SseHub && SseCapacityError.prototype instanceof Error;

/** Misuse the types refuse (never called: the compiled file runs). */
export function misuse(): void {
  // @ts-expect-error metrics() returns text unless format is 'json'
  const wrong: MetricFamily[] = hub.metrics();
  // @ts-expect-error format is 'text' or 'json'
  hub.metrics({ format: 'xml' });
  // @ts-expect-error a response is required
  sseHelper.addClient('only-an-id');
  void wrong;
}

console.log(
  JSON.stringify({
    clients: stats.clients,
    text: text.startsWith('# HELP sse_clients'),
    families: families.length,
    written,
    capacity,
  }),
);
server.close();
await hub.close();
