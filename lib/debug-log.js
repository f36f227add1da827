// The package's NODE_DEBUG section. Node's `util.debuglog` says whether it
// is on (`.enabled`) and prints `SECTION PID: message`; Bun's returns a
// function without `.enabled` that prints nothing, so there the section is
// matched against NODE_DEBUG here (names and `*` wildcards, comma or space
// separated, case-insensitive, as Node does) and printed the same way.

const util = require('node:util');

/** Whether NODE_DEBUG's list names `section`. */
function named(section, list = '') {
  return list
    .split(/[\s,]+/)
    .filter(Boolean)
    .some((pattern) => {
      const source = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
      return new RegExp(`^${source}$`, 'i').test(section);
    });
}

/** `{ debug(format, ...args), DEBUG }` for `section`. */
function debugLog(section, env = process.env) {
  const native = util.debuglog(section);
  if (typeof native.enabled === 'boolean') return { debug: native, DEBUG: native.enabled };
  const DEBUG = named(section, env.NODE_DEBUG);
  const prefix = `${section.toUpperCase()} ${process.pid}:`;
  const debug = (format, ...args) => {
    if (DEBUG) process.stderr.write(`${prefix} ${util.format(format, ...args)}\n`);
  };
  return { debug, DEBUG };
}

module.exports = { debugLog, named };
