// Channels and filters: join and leave by response or client id, publish to
// members, broadcast with a filter on meta or id, both together, membership
// ending with the connection, and channel name validation.

const { sseFixture } = require('./hub-fixture.js');
const { waitFor } = require('./helpers.js');

let hub;
const { serve, connect } = sseFixture((t) => {
  ({ hub } = t);
});

describe('channels and filters', () => {
  async function fourClients() {
    await serve((req, res) => hub.addClient(req.query.id, res, JSON.parse(req.query.meta ?? 'null')));
    const c = {
      alice1: await connect('/events?id=alice&meta={"role":"admin"}'),
      alice2: await connect('/events?id=alice&meta={"role":"user"}'),
      bob: await connect('/events?id=bob&meta="vip"'),
      carol: await connect('/events?id=carol'),
    };
    await waitFor(() => hub.getClientCount() === 4, 'registered');
    return c;
  }

  test('join and leave by response and by client id; publish reaches only members', async () => {
    const c = await fourClients();
    expect(hub.join('alice', 'news')).toBe(2);
    expect(hub.join(c.bob.res, 'news')).toBe(1);
    expect(hub.join(c.bob.res, 'news')).toBe(0);
    expect(hub.join('carol', 'sports')).toBe(1);
    expect(hub.join('nobody', 'news')).toBe(0);
    expect(hub.getStats().channels).toBe(2);
    expect(hub.publish('news', 'n1')).toBe(3);
    expect(hub.publish('sports', 's1', { event: 'score', id: 's-1' })).toBe(1);
    expect(hub.publish('empty', 'nobody hears')).toBe(0);
    expect(hub.leave(c.alice2.res, 'news')).toBe(1);
    expect(hub.leave(c.alice2.res, 'news')).toBe(0);
    expect(hub.publish('news', 'n2')).toBe(2);
    expect(hub.leave('bob', 'news')).toBe(1);
    expect(hub.leave('carol', 'news')).toBe(0);
    expect(hub.publish('news', 'n3')).toBe(1);
    expect(hub.broadcast('all', { channel: 'sports' })).toBe(1);
    expect(hub.getStats().channels).toBe(2);
    await c.alice1.c.waitFor((x) => x.body() === 'data: "n1"\n\ndata: "n2"\n\ndata: "n3"\n\n', 'alice1');
    await c.alice2.c.waitFor((x) => x.body() === 'data: "n1"\n\n', 'alice2');
    await c.bob.c.waitFor((x) => x.body() === 'data: "n1"\n\ndata: "n2"\n\n', 'bob');
    await c.carol.c.waitFor((x) => x.body() === 'event: score\nid: s-1\ndata: "s1"\n\ndata: "all"\n\n', 'carol');
    expect(hub.leave('alice', 'news')).toBe(1);
    expect(hub.leave(c.carol.res, 'sports')).toBe(1);
    expect(hub.getStats().channels).toBe(0);
  });

  test('broadcast with a filter on meta (primitive meta unboxed) and on the client id', async () => {
    const c = await fourClients();
    const calls = [];
    const written = hub.broadcast('admins', {
      filter: (meta, id) => {
        calls.push([meta, id]);
        return meta?.role === 'admin';
      },
    });
    expect(written).toBe(1);
    expect(calls).toEqual([
      [{ role: 'admin' }, 'alice'],
      [{ role: 'user' }, 'alice'],
      ['vip', 'bob'],
      [undefined, 'carol'],
    ]);
    expect(hub.broadcast('vip', { filter: (meta) => meta === 'vip', event: 'v' })).toBe(1);
    expect(hub.broadcast('alices', { filter: (_meta, id) => id === 'alice' })).toBe(2);
    expect(hub.broadcast('none', { filter: () => false })).toBe(0);
    // A throwing filter writes nothing to anyone.
    expect(() =>
      hub.broadcast('never', {
        filter: (meta) => {
          if (meta === 'vip') throw new RangeError('filter failed');
          return true;
        },
      }),
    ).toThrow(RangeError);
    expect(() => hub.broadcast('x', { filter: 'role' })).toThrow(/^options.filter must be a function/);
    hub.broadcast('end');
    await c.alice1.c.waitFor((x) => x.body() === 'data: "admins"\n\ndata: "alices"\n\ndata: "end"\n\n', 'alice1');
    await c.alice2.c.waitFor((x) => x.body() === 'data: "alices"\n\ndata: "end"\n\n', 'alice2');
    await c.bob.c.waitFor((x) => x.body() === 'event: v\ndata: "vip"\n\ndata: "end"\n\n', 'bob');
    await c.carol.c.waitFor((x) => x.body() === 'data: "end"\n\n', 'carol');
  });

  test('channel and filter together reach only the members that pass the filter', async () => {
    const c = await fourClients();
    hub.join('alice', 'staff');
    hub.join('bob', 'staff');
    expect(hub.broadcast('staff admins', { channel: 'staff', filter: (meta) => meta?.role === 'admin' })).toBe(1);
    expect(hub.publish('staff', 'staff vip', { filter: (meta) => meta === 'vip' })).toBe(1);
    hub.broadcast('end');
    await c.alice1.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'alice1');
    await c.alice2.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'alice2');
    await c.bob.c.waitFor((x) => x.body().endsWith('data: "end"\n\n'), 'bob');
    expect(c.alice1.c.body()).toBe('data: "staff admins"\n\ndata: "end"\n\n');
    expect(c.alice2.c.body()).toBe('data: "end"\n\n');
    expect(c.bob.c.body()).toBe('data: "staff vip"\n\ndata: "end"\n\n');
  });

  test('removing a client, or its disconnecting, takes it out of every channel', async () => {
    const c = await fourClients();
    hub.join('alice', 'a');
    hub.join('alice', 'shared');
    hub.join('bob', 'b');
    hub.join('bob', 'shared');
    hub.join('carol', 'c');
    expect(hub.getStats().channels).toBe(4);
    expect(hub.removeClient(c.alice1.res)).toBe(true);
    expect(hub.getStats().channels).toBe(4);
    expect(hub.publish('a', 'x')).toBe(1);
    expect(hub.removeClientById('alice')).toBe(true);
    expect(hub.getStats().channels).toBe(3);
    expect(hub.publish('a', 'x')).toBe(0);
    c.bob.c.destroy();
    await waitFor(() => hub.getClientCount() === 1, 'bob gone');
    expect(hub.getStats().channels).toBe(1);
    expect(hub.publish('shared', 'x')).toBe(0);
    hub.broadcastAndClose('bye');
    expect(hub.getStats().channels).toBe(0);
    // A new connection under a known id is not a member of the old one's channels.
    const again = await connect('/events?id=carol');
    await waitFor(() => hub.getClientCount() === 1, 'carol again');
    expect(hub.publish('c', 'x')).toBe(0);
    hub.send(again.res, 'hello');
    await again.c.waitFor((x) => x.body() === 'data: "hello"\n\n', 'hello');
  });

  test('bad channel names are TypeErrors', async () => {
    const c = await fourClients();
    for (const bad of ['', 'a\nb', '\r', 'tab\there', 'nul\0', 'x'.repeat(257)]) {
      expect(() => hub.join(c.bob.res, bad)).toThrow(TypeError);
      expect(() => hub.join('bob', bad)).toThrow(/^channel must/);
      expect(() => hub.leave(c.bob.res, bad)).toThrow(TypeError);
      expect(() => hub.leave('bob', bad)).toThrow(TypeError);
    }
    for (const bad of [5, null, undefined, {}]) {
      expect(() => hub.join('bob', bad)).toThrow(/^channel must be a string/);
      expect(() => hub.publish(bad, 'x')).toThrow(/^channel must be a string/);
      if (bad !== undefined) expect(() => hub.broadcast('x', { channel: bad })).toThrow(TypeError);
    }
    expect(() => hub.join({}, 'ok')).toThrow(/^target must be/);
    expect(() => hub.leave(42, 'ok')).toThrow(TypeError);
    // An id no string key can name (issue 20: it returned 0).
    expect(() => hub.join('\ud800', 'ok')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(hub.getStats().channels).toBe(0);
    expect(hub.join(c.bob.res, 'x'.repeat(256))).toBe(1);
    expect(hub.join(c.bob.res, 'room:42 é')).toBe(1);
    expect(hub.getStats().channels).toBe(2);
  });
});
