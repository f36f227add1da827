// The heartbeat: one unref'd timer per hub, running only while it has
// clients. It holds the hub weakly (through `tick`), so a dropped hub is
// still collected, and it never keeps Node alive by itself.

/** Node's timers take at most 2^31 - 1 ms; past that they fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const DEFAULT_HEARTBEAT_MS = 15_000;

class Heartbeat {
  #idleMs = DEFAULT_HEARTBEAT_MS;
  #timer = null;
  #tick;

  /**
   * `tick(idleMs)` runs every `idleMs / 2` while the timer runs; it returns
   * false when there is nothing left to beat for, which stops the timer.
   * It must reach the hub only weakly.
   */
  constructor(tick) {
    this.#tick = tick;
  }

  get idleMs() {
    return this.#idleMs;
  }

  /** A new interval (0 turns heartbeats off); true when it changed. */
  setIdleMs(idleMs) {
    if (idleMs === this.#idleMs) return false;
    this.#idleMs = idleMs;
    this.stop();
    return true;
  }

  /** Starts the timer unless it runs or heartbeats are off. */
  start() {
    if (this.#timer || this.#idleMs === 0) return;
    const idleMs = this.#idleMs;
    const tick = this.#tick;
    const timer = setInterval(
      () => {
        if (!tick(idleMs)) {
          clearInterval(timer);
          if (this.#timer === timer) this.#timer = null;
        }
      },
      Math.max(1, Math.floor(idleMs / 2)),
    );
    timer.unref();
    this.#timer = timer;
  }

  stop() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}

module.exports = { Heartbeat, MAX_TIMER_MS, DEFAULT_HEARTBEAT_MS };
