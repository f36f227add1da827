// The hub's debug log (NODE_DEBUG=sse-helper-native): registrations with the
// transport that took them (and on the stream, why the native writer did
// not), removals with their reason, slow clients, drops, the writer's death.
// Node reads NODE_DEBUG once at startup, so whether it is on is read once
// here too: with it off, every log site is one branch on a constant and
// builds no string.

const { debugLog } = require('./debug-log.js');
const { loadBinding } = require('./load-binding.js');

const { debug, DEBUG } = debugLog('sse-helper-native');

/** The debug log's words for a stream reason: the core's, for this platform and runtime. */
function describeStreamReason(reason) {
  const runtime = process.versions.bun ? 'bun' : process.versions.deno ? 'deno' : 'node';
  return loadBinding().describeStreamReason(reason, process.platform, runtime) ?? reason;
}

/** The log lines that read the native hub. Built only while the log is on. */
class HubLog {
  #native;
  /** `framesDropped` when the log last looked, so it reports each drop once. */
  #droppedSeen = 0;

  constructor(native) {
    this.#native = native;
  }

  /** A registration: which transport took it and, on the stream, why the native writer did not (as the core counted it). */
  registration(res, id, isNew) {
    const native = this.#native;
    if (!native.has(res)) {
      debug('register %s: not registered (removed while registering)', id);
      return;
    }
    if (!isNew) {
      debug('register %s: already registered, now under this id with the new meta', id);
      return;
    }
    const clients = native.count();
    const reason = native.streamReason(res);
    if (reason === null || reason === undefined) {
      debug('register %s: transport socket (native writer), %d client(s)', id, clients);
      return;
    }
    let why = describeStreamReason(reason);
    if (reason === 'capacity') why = `socketCapacity (${native.stats().socketCapacity}) reached`;
    debug('register %s: transport stream (%s: %s), %d client(s)', id, reason, why, clients);
  }

  /** Lifecycle events from the native side: removals with their reason, slow clients, the writer's death. */
  lifecycle(kind, a, b) {
    if (kind === 'disconnect') {
      debug('disconnect %s: reason %s, %d client(s) left', a, b, this.#native.count());
    } else if (kind === 'slow') {
      debug('slow %s: more than maxBufferedBytes pending, disconnecting it', a);
    } else if (kind === 'error') {
      debug('error %s: %s', a, b);
    } else if (kind === 'closed') {
      debug('closed: every connection ended, the writer stopped');
    }
  }

  /**
   * Frames dropped for slow clients (the `drop` policy) since the last look.
   * The native writer drops on its own thread, so those show up at the next
   * send or heartbeat.
   */
  drops() {
    const { framesDropped } = this.#native.stats();
    if (framesDropped === this.#droppedSeen) return;
    debug(
      'drop: %d frame(s) skipped for slow clients (slowClientPolicy drop), %d in all',
      framesDropped - this.#droppedSeen,
      framesDropped,
    );
    this.#droppedSeen = framesDropped;
  }
}

module.exports = { HubLog, debug, DEBUG, describeStreamReason };
