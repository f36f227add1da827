// better-sse 0.16 the way its docs show for many clients: one Session per
// request, all registered on a Channel, channel.broadcast() to send.
//
// Configured for the closest it allows to `data: <json>\n\n`: no initial
// `retry:` block and no keep-alive comments (retry/keepAlive: null), and a
// short sequential event id instead of a UUID. Channel#broadcast always
// writes `event:` and `id:` lines, so each frame still carries
// `event:message\nid:<n>\n` before `data:<json>\n\n`; the load generator
// counts blank-line-terminated blocks with a data field, so the extra lines
// do not change what is counted. better-sse serializes the payload once per
// session, which is part of what is being measured.

const { createSession, createChannel } = require('better-sse');

function create() {
  const channel = createChannel();
  let eventId = 0;
  return {
    async route(req, res) {
      const session = await createSession(req, res, { retry: null, keepAlive: null });
      channel.register(session);
    },
    broadcast(payload) {
      const written = channel.sessionCount;
      channel.broadcast(payload, 'message', { eventId: String(++eventId) });
      return written;
    },
    count: () => channel.sessionCount,
  };
}

module.exports = { create };
