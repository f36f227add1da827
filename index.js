'use strict';

// The package: the default hub (the drop-in for sseHelper.js's module-level
// functions), the class for more hubs, and the capacity error. Everything
// else is in lib/; the native binding is loaded by lib/load-binding.js.

const { SseHub } = require('./lib/hub.js');
const { SseCapacityError } = require('./lib/errors.js');

const sseHelper = new SseHub();
Object.defineProperties(sseHelper, {
  SseHub: { value: SseHub, enumerable: true },
  SseCapacityError: { value: SseCapacityError, enumerable: true },
  default: { value: sseHelper },
});

module.exports = sseHelper;
