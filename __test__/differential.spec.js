// Differential test against the original helper: thousands of random call
// sequences (addClient in its three forms, removals, sends, broadcasts,
// pruning, disconnects, failing writes, `_clients` / `_resIndex` reads,
// payloads of every shape, ids of every kind) run step by step on the
// original sseHelper.js and on this package, comparing after every call what
// each returned or threw, what every mock response received (each write and
// its type, end, headers), the client count and the registry.
//
// The original is read at test time from ../shared/reference/upstream (it is
// never copied into the package). It is ESM and imports its winston logger,
// so the comparison runs in a child process, fixtures/differential.mjs, which
// loads a scratch copy of it next to a silent logger stub. A divergence is
// printed with its seed, sequence and op index, the op list, both sides'
// records and a shrunk op list; replay it with
//   node __test__/fixtures/differential.mjs --seed <seed> --only <sequence>
// or the `--ops '…'` line of the report. SSE_DIFFERENTIAL_SEED picks another
// seed.

const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const WORKER = path.join(__dirname, 'fixtures', 'differential.mjs');
const ORIGINAL = path.join(
  __dirname,
  '..',
  '..',
  'shared',
  'reference',
  'upstream',
  'src',
  'modules',
  'sse',
  'sseHelper.js',
);
const SEQUENCES = 2000;
const SEED = Number(process.env.SSE_DIFFERENTIAL_SEED ?? 20251202);
const TIMEOUT_MS = 90_000;

/**
 * The differences from the original that the comparison allows: each `id`
 * is what the worker applies (`--allow`), `readme` the line the README's
 * "What differs from sseHelper.js" section has for it, `reason` why it is
 * allowed and how the comparison treats it. Nothing else may differ.
 *
 * Not a difference: a response whose own `once` throws gets no close
 * listener on either side, so after its `end()` it is still counted by both.
 */
const ALLOWED_DIFFERENCES = [
  {
    id: 'return-values',
    readme:
      '`removeClient`, `removeClientById` and `send` return a boolean, and `broadcast`, `broadcastAndClose` and `cleanupStaleClients` a count, where the original returns `undefined`.',
    reason:
      'Code written for the original ignores the undefined it gets. Where the original returned undefined, ours is not compared, only its type (boolean or number).',
  },
  {
    id: 'nullish-id',
    readme:
      '`addClient(null, res)` and `addClient(undefined, res)` register the response under a generated id and return it; the original registers it under the key `null` or `undefined` itself, so all such clients share one entry (each replaces the last) that `removeClient(res)` cannot remove.',
    reason:
      "The original's own route calls `addClient(req.sessionID || undefined, res)`: one shared key would lose every client but the last. The id ours generates for a nullish id is compared as that nullish key; nullish ids are used only in addClient.",
  },
  {
    id: 'shared-id',
    readme:
      'Several responses can be registered under one id (two tabs of one session): all are counted, all get `broadcast` and `sendToClient`, each is removed on its own close. The original keeps only the last one; the earlier response stays open and gets nothing, and its close later ends the newer one.',
    reason:
      'Excluded rather than modelled: an `addClient(id, res)` while `id` holds another response is run on neither side (counted in the summary as skipped).',
  },
  {
    id: 'meta',
    readme:
      '`_clients.get(id).meta` is the meta as it was passed; the original stores `{ ip, userId, userAgent }` taken from it (null when missing).',
    reason: 'Meta is not compared (nor createdAt); the response an entry holds is.',
  },
  {
    id: 'generated-ids',
    readme: "Generated ids have the original's shape, `anon-<milliseconds>-<hex>`, with 32 hex digits instead of 6.",
    reason:
      'Random on both sides: both must match /^anon-\\d+-[0-9a-f]+$/, and they are compared by order of generation.',
  },
  {
    id: 'close-listeners',
    readme:
      "A registered response has exactly one `close` listener, removed with the client (a destroyed one keeps it until its `close`, which ends it as the original's does); the original adds a `once('close')` per `addClient` and leaves it.",
    reason:
      "The original's extra listeners find nothing to remove when they fire. Listener counts are not compared; ours is checked instead: 1 on a registered MockResponse, 0 once removed, never more.",
  },
  {
    id: 'registered-twice',
    readme:
      '`addClient(res)` of a response that is already registered moves it to the new id; the original adds a second entry for the same response (counted twice, written twice by `broadcast`) and keeps the first until it is pruned.',
    reason:
      'Modelled: before such a call the original is made to drop the earlier entry (what ours does), then both are compared.',
  },
  {
    id: 'falsy-ids',
    readme:
      "A client under a falsy id (`0`, `-0`, `''`, or a nullish id) is removed by `removeClient(res)`, by its response's `close` and by a failed `send`, and moved by re-registering its response, as under any other id; the original's `if (clientId)` and `existing &&` checks skip falsy ids, so there such a client stays registered, counted and broadcast to after its response has gone.",
    reason:
      'Modelled: for such a call the original does what it does for a truthy id (removeClientById(id) instead of or after it, or dropping the old entry before re-registering), then both are compared.',
  },
  {
    id: 'stale-index',
    readme:
      "`_resIndex` maps a response to an id only while it is registered under it; the original's WeakMap keeps its entry when `broadcastAndClose` clears the map (for a response whose `end()` emits no `close`, or that had already ended), and a later `removeClient(res)`, `close` or `addClient(id, res)` of that response then ends or drops whichever client holds that id by then.",
    reason:
      "Modelled: before each call, such entries in the original's `_resIndex` are removed (or pointed at the response's actual id).",
  },
  {
    id: 'repeated-end',
    readme:
      'A response without `writableEnded` (a plain `{ write, end }` object) is ended once; the original calls its `end()` again where it checks `writableEnded` to know (a failed `send` ends it, then `removeClient` ends it again).',
    reason: 'For such a response whether it was ended is compared, not how many times.',
  },
  {
    id: 'ended-not-registered',
    readme:
      '`addClient` of a response that has already ended (`writableEnded`, `destroyed` or `closed`) returns its id but registers nothing, since no `close` would come to remove it; the original registers it, and it is counted until a `broadcast`, `sendToClient` or `cleanupStaleClients` prunes it.',
    reason:
      'Nothing is ever written to such a response on either side. Modelled: after such a call the original drops the entry it made, then both are compared.',
  },
  {
    id: 'send-prunes-ended',
    readme:
      "`send(res, payload)` to a registered response that has ended removes it, as `broadcast` and `sendToClient` do in both; the original's `send` returns early and leaves it registered until one of those prunes it.",
    reason:
      'Nothing is written to the response on either side. Modelled: after such a call the original removes the client (removeClientById, which does not end an ended response), then both are compared.',
  },
];

const haveOriginal = fs.existsSync(ORIGINAL);
if (!haveOriginal) {
  console.warn(`differential.spec.js: the original helper is not at ${ORIGINAL}; the differential test is skipped`);
}
const testWithOriginal = haveOriginal ? test : test.skip;

function runWorker(args) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [WORKER, ...args],
      { timeout: TIMEOUT_MS - 5_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? err.signal) : 0, stdout, stderr }),
    );
  });
}

test('the list of allowed differences has an id, a README line and a reason for each', () => {
  const ids = ALLOWED_DIFFERENCES.map((d) => d.id);
  expect(new Set(ids).size).toBe(ids.length);
  for (const d of ALLOWED_DIFFERENCES) {
    expect({ id: d.id, readme: typeof d.readme, reason: typeof d.reason }).toEqual({
      id: d.id,
      readme: 'string',
      reason: 'string',
    });
  }
});

testWithOriginal(
  `${SEQUENCES} random call sequences behave as on the original helper, but for the allowed differences`,
  async () => {
    const allow = ALLOWED_DIFFERENCES.map((d) => d.id).join(',');
    const { code, stdout, stderr } = await runWorker([
      '--sequences',
      String(SEQUENCES),
      '--seed',
      String(SEED),
      '--allow',
      allow,
    ]);
    expect({ code, error: code === 0 ? undefined : stderr }).toEqual({ code: 0, error: undefined });
    const summary = JSON.parse(stdout.trim().split('\n').pop());
    expect(summary.sequences).toBe(SEQUENCES);
    // On failure: how many sequences diverged, each kind of divergence with
    // the replay arguments of its first case, and that case in full.
    expect({
      divergences: summary.divergences,
      kinds: summary.kinds,
      first: summary.first?.split('\n') ?? null,
    }).toEqual({ divergences: 0, kinds: {}, first: null });
  },
  TIMEOUT_MS,
);
