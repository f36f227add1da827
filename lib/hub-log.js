// The hub's debug log (NODE_DEBUG=sse-helper-native): registrations with the
// transport that took them (and on the stream, why the native writer did
// not), removals with their reason, slow clients, drops, the writer's death.
// Node reads NODE_DEBUG once at startup, so whether it is on is read once
// here too: with it off, every log site is one branch on a constant and
// builds no string.

const { debugLog } = require('./debug-log.js');

const { debug, DEBUG } = debugLog('sse-helper-native');

/** The log lines that read the native hub. Built only while the log is on. */
class HubLog {
  #native;
  #hooks;
  /** `framesDropped` when the log last looked, so it reports each drop once. */
  #droppedSeen = 0;

  /** `hooks.write` is what native-writer responses' `write` is: it tells the transport. */
  constructor(native, hooks) {
    this.#native = native;
    this.#hooks = hooks;
  }

  /** A registration: which transport took it and, on the stream, why the native writer did not. */
  registration(res, id, isNew, socket, transport) {
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
    if (res.write === this.#hooks.write) {
      debug('register %s: transport socket (native writer), %d client(s)', id, clients);
      return;
    }
    let why = socket;
    if (typeof socket !== 'string') {
      const { socketConnections, socketCapacity } = native.stats();
      if (transport === 'stream') why = "configure({ transport: 'stream' })";
      else if (socketConnections >= socketCapacity) why = `socketCapacity (${socketCapacity}) reached`;
      else why = 'the native writer refused it (its fd check failed, or the writer is down)';
    }
    debug('register %s: transport stream (%s), %d client(s)', id, why, clients);
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

module.exports = { HubLog, debug, DEBUG };
