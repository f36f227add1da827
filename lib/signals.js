// Shutdown on the signals process managers send: `hub.drainOnSignals()`.
// PM2 stops a process with SIGINT (then SIGKILL after its kill timeout,
// 1.6 s by default), systemd, Docker and Kubernetes with SIGTERM, nodemon
// restarts with SIGUSR2. On the first of them the hub drains (a `retry:`
// hint, this instance's broadcasts delivered, every connection ended), at
// most `timeoutMs`; then the signal is raised again with the listener gone,
// so the process ends as it would have without it, unless the app has a
// listener of its own for that signal (then the app decides). A second
// signal meanwhile finds no listener and ends the process at once.

const { invalidType, invalidValue, kindOf } = require('./errors.js');
const { checkKeys } = require('./options.js');

const DEFAULT_SIGNALS = ['SIGTERM', 'SIGINT'];
/** Signals a hub may drain on: those process managers and terminals send to stop or restart. */
const DRAINABLE = ['SIGTERM', 'SIGINT', 'SIGUSR2', 'SIGHUP', 'SIGBREAK'];
/** Under PM2's default kill timeout (1,600 ms), with room for the exit. */
const DEFAULT_TIMEOUT_MS = 1_400;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Drains in flight in this process (every hub's), and the signals to raise again once none is. */
let inFlight = 0;
const toRaise = new Set();

function checkOptions(options) {
  checkKeys(options, ['signals', 'retryMs', 'retryJitterMs', 'timeoutMs']);
  const signals = options?.signals ?? DEFAULT_SIGNALS;
  if (!Array.isArray(signals)) throw invalidType(`options.signals must be an array, got ${kindOf(signals)}`);
  if (signals.length === 0) throw invalidValue('options.signals must name at least one signal');
  for (const signal of signals) {
    if (typeof signal !== 'string') throw invalidType(`options.signals must hold strings, got ${kindOf(signal)}`);
    if (!DRAINABLE.includes(signal)) {
      throw invalidValue(`options.signals: ${JSON.stringify(signal)} is not one of ${DRAINABLE.join(', ')}`);
    }
  }
  const timeoutMs = options?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number') throw invalidType(`options.timeoutMs must be a number, got ${kindOf(timeoutMs)}`);
  if (!(Number.isInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= MAX_TIMER_MS)) {
    throw invalidValue(`options.timeoutMs must be an integer from 0 to ${MAX_TIMER_MS}, got ${timeoutMs}`);
  }
  // The drain's own options are checked by drain()'s check, now, so a bad
  // one throws here and not at the signal.
  const drainOptions = {};
  if (options?.retryMs !== undefined) drainOptions.retryMs = options.retryMs;
  if (options?.retryJitterMs !== undefined) drainOptions.retryJitterMs = options.retryJitterMs;
  return { signals: [...new Set(signals)], drainOptions, timeoutMs };
}

/**
 * Installs the listeners; returns the function that removes them. `drain`
 * is the hub's `drain`, `validate(drainOptions)` throws as `drain` would.
 */
function drainOnSignals(drain, validate, options) {
  const { signals, drainOptions, timeoutMs } = checkOptions(options);
  validate(drainOptions);
  const retry = Object.keys(drainOptions).length > 0 ? drainOptions : undefined;
  const listeners = new Map();
  const uninstall = () => {
    for (const [signal, listener] of listeners) process.removeListener(signal, listener);
    listeners.clear();
  };
  for (const signal of signals) {
    const listener = () => {
      uninstall();
      inFlight++;
      toRaise.add(signal);
      let timer;
      const timeout = new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      });
      Promise.race([drain(retry).catch(() => {}), timeout]).finally(() => {
        clearTimeout(timer);
        if (--inFlight > 0) return;
        for (const raised of toRaise) {
          toRaise.delete(raised);
          // The app's own listener, if any, decides what this signal does.
          if (process.listenerCount(raised) === 0) process.kill(process.pid, raised);
        }
      });
    };
    listeners.set(signal, listener);
    process.on(signal, listener);
  }
  return uninstall;
}

module.exports = { drainOnSignals, DRAINABLE, DEFAULT_TIMEOUT_MS };
