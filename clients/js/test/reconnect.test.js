// Reconnects and their limits, over real sockets: a daemon killed and restarted on the same port,
// a daemon frozen with SIGSTOP, refused handshakes and close codes (a small `ws` server stands in
// for the auth-enabled daemon), and a peer that goes silent after the handshake.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { UipdClient } from '../src/index.js';
import { Daemon, next, sleep, until } from './daemon.js';

const fast = { minDelay: 50, maxDelay: 200 };

/** Record every status change of a client. */
function statuses(client) {
  const seen = [];
  client.on('status', (s) => seen.push(s));
  return seen;
}

/** A `ws` server on a free port; `onConnection(socket, request)` decides what it does. */
async function fakeServer(onConnection, options = {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
  await new Promise((resolve) => wss.once('listening', resolve));
  const connections = [];
  wss.on('connection', (socket, request) => {
    connections.push(socket);
    onConnection(socket, request);
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/`,
    connections,
    close: () => {
      for (const s of wss.clients) s.terminate();
      return new Promise((resolve) => wss.close(resolve));
    },
  };
}

const welcome = (heartbeatInterval = 10000) =>
  JSON.stringify({ type: 'connection', message: 'fake', timestamp: new Date().toISOString(), heartbeatInterval, clientId: 'fake', topics: ['news'] });

describe('reconnect against a real daemon', () => {
  const daemons = [];
  after(() => Promise.all(daemons.map((d) => d.close())));

  test('resyncs state and restores subscriptions after the daemon is killed and restarted', async () => {
    const daemon = await Daemon.start({ topics: ['news', 'traffic'] });
    daemons.push(daemon);
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 'old', speed: 1 }] });
    const client = new UipdClient(daemon.wsUrl, { WebSocket, backoff: fast, topics: ['traffic'] });
    await until(() => client.get('traffic').has('old'), { what: 'the first snapshot' });
    const firstId = client.clientId;
    const seen = statuses(client);

    await daemon.stop('SIGKILL'); // a crash: no close frame, the client sees 1006
    await until(() => seen.some((s) => s.status === 'reconnecting'), { what: 'reconnecting' });
    assert.equal(seen.find((s) => s.status === 'reconnecting').code, 1006);
    await sleep(300); // a few refused attempts while the port is closed
    assert.ok(seen.filter((s) => s.status === 'connecting').length >= 2, 'retries while the daemon is down');

    await daemon.spawn(); // same ports, empty state
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 'new', speed: 2 }] });
    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'n', title: 'not subscribed' }] });
    await until(() => client.status === 'open' && client.subscriptions?.length, { timeout: 5000, what: 'the resubscription' });
    assert.notEqual(client.clientId, firstId);
    assert.deepEqual(client.subscriptions, ['traffic'], 'subscriptions restored on the new connection');
    await until(() => client.get('traffic').has('new'), { what: 'the resync' });
    assert.equal(client.get('traffic').has('old'), false, 'state of the dead daemon is replaced');
    assert.deepEqual(client.stateTopics(), ['traffic']);

    const updates = [];
    client.on('update', (m) => updates.push(m.topic));
    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'n2' }] });
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 'new2' }] });
    await until(() => client.get('traffic').has('new2'), { what: 'an update after the reconnect' });
    assert.deepEqual(updates, ['traffic']);
    await client.close();
  });

  test('a graceful shutdown (close 1001) is retried', async () => {
    const daemon = await Daemon.start({ topics: ['news'] });
    daemons.push(daemon);
    const client = new UipdClient(daemon.wsUrl, { WebSocket, backoff: fast });
    await next(client, 'status', { filter: (s) => s.status === 'open' });
    const reconnecting = next(client, 'status', { filter: (s) => s.status === 'reconnecting' });
    await daemon.stop('SIGTERM');
    assert.equal((await reconnecting).code, 1001);
    await daemon.spawn();
    // (the client may already be back by the time spawn() has seen /readyz)
    await until(() => client.status === 'open', { what: 'the reconnect' });
    await client.close();
  });

  test('a daemon frozen by SIGSTOP is detected as a dead link and reconnected after SIGCONT', async () => {
    const daemon = await Daemon.start({ topics: ['news'], heartbeat: { interval: 0.2, timeout: 2 } });
    daemons.push(daemon);
    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'a' }] });
    const client = new UipdClient(daemon.wsUrl, { WebSocket, backoff: fast, connectTimeout: 400 });
    await until(() => client.get('news').has('a'), { what: 'the snapshot' });
    assert.equal(client.heartbeatInterval, 200, 'the advertised interval is used');

    // While healthy and idle, the client's pings keep the link alive (PONGs).
    let pongs = 0;
    let lastPong = 0;
    client.on('pong', () => { pongs++; lastPong = Date.now(); });
    await sleep(1000);
    assert.equal(client.status, 'open');
    assert.ok(pongs >= 2, `pings answered while idle (${pongs} PONGs)`);

    const seen = statuses(client);
    const frozenAt = Date.now();
    daemon.pause();
    const dead = await next(client, 'status', { filter: (s) => s.status === 'reconnecting', timeout: 3000 });
    const silence = Date.now() - lastPong;
    assert.equal(dead.reason, 'heartbeat timeout');
    // Dead = nothing for 2 intervals (400 ms) since the last sign of life, checked every interval/4.
    assert.ok(silence >= 390 && silence < 800, `dropped after ${silence} ms of silence`);
    assert.ok(Date.now() - frozenAt < 800, 'noticed soon after the freeze');
    // Attempts while frozen stall in the handshake (the kernel still accepts TCP): connectTimeout cuts them.
    await until(() => seen.some((s) => s.reason === 'connect timeout'), { timeout: 3000, what: 'a connect timeout' });

    daemon.resume();
    await until(() => client.status === 'open', { timeout: 5000, what: 'the reconnect after SIGCONT' });
    assert.ok(client.get('news').has('a'), 'state resynced from the daemon');
    await client.close();
  });
});

describe('retry policy over real sockets', () => {
  test('a handshake refused with HTTP 404 (unknown path) is not retried', async () => {
    const daemon = await Daemon.start({ topics: ['news'] });
    try {
      const client = new UipdClient(daemon.wsUrl + 'nope', { WebSocket, backoff: fast });
      const seen = statuses(client);
      const error = next(client, 'error');
      const closed = await next(client, 'close');
      assert.equal(closed.fatal, true);
      assert.equal(closed.httpStatus, 404);
      assert.equal((await error).status, 404);
      await sleep(400);
      assert.deepEqual(seen.map((s) => s.status), ['closed'], 'no further attempt');
      assert.equal(client.status, 'closed');
    } finally {
      await daemon.close();
    }
  });

  test('a handshake refused with HTTP 401 is not retried', async () => {
    const server = await fakeServer(() => {}, {
      verifyClient: (_info, done) => done(false, 401, 'Unauthorized'),
    });
    try {
      const client = new UipdClient(server.url, { WebSocket, backoff: fast, token: 'wrong' });
      const closed = await next(client, 'close');
      assert.equal(closed.httpStatus, 401);
      await sleep(300);
      assert.equal(client.status, 'closed');
    } finally {
      await server.close();
    }
  });

  for (const [code, reason, retried] of [
    [4001, 'unauthorized', false],
    [4003, 'forbidden', false],
    [1008, 'invalid token', false],
    [1008, 'rate limit exceeded', true],
    [4008, 'slow consumer', true],
    [1011, 'internal error', true],
  ]) {
    test(`close ${code} "${reason}" is ${retried ? '' : 'not '}retried`, async () => {
      const server = await fakeServer((socket) => {
        socket.send(welcome());
        setTimeout(() => socket.close(code, reason), 20);
      });
      try {
        const client = new UipdClient(server.url, { WebSocket, backoff: fast });
        if (retried) {
          await until(() => server.connections.length >= 2, { what: 'a second connection' });
          assert.notEqual(client.status, 'closed');
        } else {
          const closed = await next(client, 'close');
          assert.deepEqual([closed.code, closed.reason, closed.fatal], [code, reason, true]);
          await sleep(300);
          assert.equal(server.connections.length, 1, 'no second attempt');
        }
        await client.close();
      } finally {
        await server.close();
      }
    });
  }

  test('a peer that goes silent after the handshake is dropped after ~2 heartbeat intervals and retried', async () => {
    const pings = [];
    const server = await fakeServer((socket) => {
      socket.send(welcome(150)); // then silence: no messages, no PONG
      socket.on('message', (data) => pings.push(JSON.parse(data)));
    });
    try {
      const client = new UipdClient(server.url, { WebSocket, backoff: fast });
      await next(client, 'status', { filter: (s) => s.status === 'open' });
      const openedAt = Date.now();
      const dead = await next(client, 'status', { filter: (s) => s.status === 'reconnecting' });
      const after = Date.now() - openedAt;
      assert.equal(dead.reason, 'heartbeat timeout');
      assert.ok(after >= 280 && after < 800, `dropped after ${after} ms`);
      assert.ok(pings.length >= 1 && pings.every((p) => p.action === 'ping'), 'probed with {"action":"ping"} first');
      await until(() => server.connections.length >= 2, { what: 'the reconnect' });
      await client.close();
    } finally {
      await server.close();
    }
  });
});
