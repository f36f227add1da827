import sseHelper from './index.js';

export const {
  SseHub,
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
} = sseHelper;

export default sseHelper;
