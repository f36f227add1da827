import sseHelper from './index.js';

export const {
  SseHub,
  SseCapacityError,
  formatSSEMessage,
  initResponse,
  addClient,
  removeClient,
  removeClientById,
  sendToClient,
  send,
  broadcast,
  broadcastAndClose,
  getClientCount,
  cleanupStaleClients,
  configure,
  getStats,
  comment,
  join,
  leave,
  publish,
  close,
  metrics,
  ready,
  drain,
  globalClientCount,
  position,
  drainOnSignals,
  observeOpenTelemetry,
} = sseHelper;

export default sseHelper;
