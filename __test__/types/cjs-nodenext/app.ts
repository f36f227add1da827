// A TypeScript CommonJS project ("type": "commonjs") that installed
// sse-helper-native and requires it: `import x = require()` is how
// TypeScript spells `const x = require()` with types. Compiled with
// "module": "nodenext" and with the classic "commonjs"/"node10" settings by
// modules.spec.js, which runs the output.
import { createServer } from 'node:http';

import sseHelper = require('sse-helper-native');

const { SseHub, broadcast, metrics } = sseHelper;
type HubStats = sseHelper.HubStats;
type MetricFamily = sseHelper.MetricFamily;

const hub: sseHelper.SseHub = new SseHub();
const server = createServer((_req, res) => {
  sseHelper.initResponse(res);
  sseHelper.addClient(res);
});

const stats: HubStats = hub.getStats();
const text: string = metrics();
const families: MetricFamily[] = hub.metrics({ format: 'json', labels: { hub: 'cjs' } });
const written: number = broadcast({ hello: 'cjs' });
hub.on('disconnect', ({ reason }) => void reason.toUpperCase());

/** Misuse the types refuse (never called: the compiled file runs). */
export function misuse(): void {
  // @ts-expect-error labels are strings
  hub.metrics({ labels: { hub: 1 } });
  // @ts-expect-error the count is a number
  const wrong: string = hub.getClientCount();
  void wrong;
}

console.log(
  JSON.stringify({
    clients: stats.clients,
    text: text.startsWith('# HELP sse_clients'),
    families: families.length,
    written,
    capacity: sseHelper.SseCapacityError.prototype instanceof Error,
  }),
);
server.close();
hub.close().then(() => sseHelper.close());
