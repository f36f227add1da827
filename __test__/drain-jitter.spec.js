// drain({ retryMs, retryJitterMs }): every client is told to wait from
// retryMs to retryMs + retryJitterMs before reconnecting, drawn per client,
// so a rolling restart spreads the browsers' return over the window. Real
// sockets, both transports; exact frames; bad options refused.

const { sseFixture } = require('./hub-fixture.js');

let hub;
const { serve, connect } = sseFixture((t) => {
  ({ hub } = t);
});

describe.each(['auto', 'stream'])('transport %s', (transport) => {
  test('each client gets one retry frame within the window, the window is used, then its body ends', async () => {
    hub.configure({ transport, heartbeatMs: 0 });
    await serve();
    const clients = [];
    for (let i = 0; i < 48; i++) clients.push((await connect()).c);
    await hub.drain({ retryMs: 1000, retryJitterMs: 4000 });
    const delays = [];
    for (const c of clients) {
      await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'the end of the body');
      const match = /^retry: (\d+)\n\n$/.exec(c.body());
      expect(match).not.toBeNull();
      delays.push(Number(match[1]));
    }
    for (const d of delays) expect(d >= 1000 && d <= 5000).toBe(true);
    // 48 draws over 16 steps: all in one step has a chance of 16^-47.
    expect(new Set(delays).size).toBeGreaterThan(1);
  });
});

test('without jitter every client gets the same delay; jitter needs retryMs and a timer-sized integer', async () => {
  await serve();
  const a = (await connect()).c;
  const b = (await connect()).c;
  await expect(hub.drain({ retryJitterMs: 5 })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_VALUE',
    message: expect.stringMatching(/^options\.retryJitterMs needs options\.retryMs/),
  });
  await expect(hub.drain({ retryMs: 5, retryJitterMs: -1 })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_VALUE',
    message: expect.stringMatching(/^options\.retryJitterMs must be an integer from 0 to 2147483647/),
  });
  await expect(hub.drain({ retryMs: 5, retryJitterMs: '1' })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_TYPE',
  });
  expect(() => hub.drainOnSignals({ retryJitterMs: 1 })).toThrow(/^options\.retryJitterMs needs options\.retryMs/);
  // Refused before anything was sent: both are still open, and get one delay.
  expect(hub.getClientCount()).toBe(2);
  await hub.drain({ retryMs: 750, retryJitterMs: 0 });
  for (const c of [a, b]) {
    await c.waitFor((x) => x.raw().endsWith('0\r\n\r\n'), 'the end of the body');
    expect(c.body()).toBe('retry: 750\n\n');
  }
});
