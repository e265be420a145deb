// The client against a real uipd process: state from SNAPSHOT, UPDATE upserts and removals,
// subscriptions, alerts and close(), all driven deterministically through the HTTP API.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { UipdClient, connect } from '../src/index.js';
import { Daemon, next, until } from './daemon.js';

describe('uipd-client against a daemon', () => {
  let daemon;
  before(async () => {
    daemon = await Daemon.start({ topics: ['news', 'traffic', 'parking'] });
    // State that exists before any client connects: it must arrive in the first SNAPSHOT.
    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'n1', title: 'first' }, { id: 'n2', title: 'second' }] });
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 't1', speed: 30 }] });
  });
  after(() => daemon.close());

  const open = async (options = {}) => {
    const client = new UipdClient(daemon.wsUrl, { WebSocket, ...options });
    await next(client, 'status', { filter: (s) => s.status === 'open' });
    return client;
  };

  test('throws a clear error when there is no WebSocket implementation', () => {
    assert.equal(globalThis.WebSocket, undefined, 'Node 20 has no global WebSocket');
    assert.throws(() => new UipdClient(daemon.wsUrl), /options\.WebSocket/);
  });

  test('holds the state of every topic from the first SNAPSHOT', async () => {
    const client = connect(daemon.wsUrl, { WebSocket });
    const snapshot = await next(client, 'snapshot');
    assert.deepEqual(Object.keys(snapshot.data).sort(), ['news', 'parking', 'traffic']);
    assert.equal(client.status, 'open');
    assert.deepEqual(client.topics, ['news', 'traffic', 'parking']);
    assert.match(client.clientId, /\S/);
    assert.deepEqual(client.entities('news').map((e) => e.title).sort(), ['first', 'second']);
    assert.deepEqual(client.get('traffic').get('t1'), { id: 't1', speed: 30 });
    assert.equal(client.get('parking').size, 0);
    await client.close();
  });

  test('UPDATE upserts by id and deletes the removed ids', async () => {
    const client = await open();
    await until(() => client.get('news').size === 2, { what: 'the snapshot' });
    const update = next(client, 'update', { filter: (m) => m.topic === 'news' });
    const change = next(client, 'change', { filter: (c) => c.topic === 'news' });
    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'n2', title: 'second, edited' }, { id: 'n3', title: 'third' }], removed: ['n1'] });
    const msg = await update;
    assert.deepEqual(msg.removed, ['n1']);
    assert.equal(typeof msg.seq, 'number');
    assert.deepEqual(await change, { topic: 'news', reason: 'update' });
    assert.deepEqual([...client.get('news').keys()].sort(), ['n2', 'n3']);
    assert.deepEqual(client.get('news').get('n2'), { id: 'n2', title: 'second, edited' }, 'whole-entity replace');
    await client.close();
  });

  test('subscribe narrows the stream and unsubscribe stops it, with state pruned', async () => {
    const client = await open();
    const seen = [];
    client.on('update', (m) => seen.push(m.topic));
    client.subscribe(['traffic']);
    assert.deepEqual(await next(client, 'subscribed'), ['traffic']);
    assert.deepEqual(client.stateTopics(), ['traffic'], 'topics outside the set are forgotten');

    await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'x', title: 'not for us' }] });
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 't2', speed: 5 }] });
    await until(() => client.get('traffic').has('t2'), { what: 'the traffic update' });
    assert.deepEqual(seen, ['traffic'], 'no news UPDATE after subscribing to traffic only');

    // Adding a topic brings its current state (subscribe sends snapshot:true).
    client.subscribe('parking');
    await daemon.publish({ topic: 'parking', type: 'UPDATE', data: [{ id: 'p1', free: 3 }] });
    await until(() => client.get('parking').has('p1'), { what: 'the parking update' });
    assert.deepEqual(client.subscriptions, ['parking', 'traffic']);

    client.unsubscribe(['traffic']);
    assert.equal(client.get('traffic').size, 0, 'state of an unsubscribed topic is dropped at once');
    assert.deepEqual(await next(client, 'subscribed'), ['parking']);
    seen.length = 0;
    await daemon.publish({ topic: 'traffic', type: 'UPDATE', data: [{ id: 't3', speed: 1 }] });
    await daemon.publish({ topic: 'parking', type: 'UPDATE', data: [{ id: 'p2', free: 0 }] });
    await until(() => client.get('parking').has('p2'), { what: 'the parking update' });
    assert.deepEqual(seen, ['parking']);
    assert.equal(client.get('traffic').size, 0);
    await client.close();
  });

  test('the topics option subscribes on connect, and unknown topics are reported', async () => {
    const client = new UipdClient(daemon.wsUrl, { WebSocket, topics: ['news'] });
    assert.deepEqual(await next(client, 'subscribed'), ['news']);
    assert.deepEqual(client.stateTopics(), ['news']);
    client.subscribe(['nope']);
    const error = await next(client, 'error');
    assert.equal(error.code, 'unknown_topic');
    assert.equal(error.fatal, false);
    assert.equal(client.status, 'open', 'a protocol error keeps the connection');
    await client.close();
  });

  test('alerts are events and never change state', async () => {
    const client = await open();
    await until(() => client.get('news').size > 0, { what: 'the snapshot' });
    const before = [...client.get('news').keys()];
    const alert = next(client, 'alert');
    await daemon.publish({ topic: 'news', type: 'ALERT', data: { id: 'n2', message: 'breaking' } });
    const msg = await alert;
    assert.equal(msg.topic, 'news');
    assert.deepEqual(msg.data, { id: 'n2', message: 'breaking' });
    assert.deepEqual([...client.get('news').keys()], before);
    await client.close();
  });

  test('requestSnapshot replaces the state of the topics it names', async () => {
    const client = await open();
    await until(() => client.get('traffic').size > 0, { what: 'the snapshot' });
    const snap = next(client, 'snapshot');
    client.requestSnapshot(['traffic']);
    assert.deepEqual(Object.keys((await snap).data), ['traffic']);
    await client.close();
  });

  test('close() closes the socket, ends the client and sends nothing more', async () => {
    const client = await open();
    const { clients: before } = await daemon.stats();
    const statuses = [];
    client.on('status', (s) => statuses.push(s.status));
    const closed = next(client, 'close');
    await client.close();
    assert.equal((await closed).code, 1000);
    assert.equal(client.status, 'closed');
    await until(async () => (await daemon.stats()).clients === before - 1, { what: 'the server to see the close' });
    assert.equal(client.send({ action: 'ping' }), false);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(statuses, ['closed'], 'no reconnect after close()');
  });
});
