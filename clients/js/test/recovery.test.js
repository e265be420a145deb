// The client recovers by itself (section 8 of docs/protocol.md), over real sockets: a link cut
// mid-stream (a proxy drops it, no close frame) while messages are published through the API is
// resumed with topics + since: the state equals a fresh client's and every ALERT arrived exactly
// once; another daemon behind the same address (a new epoch) is reported as `alertsLost`; a frame
// lost on a live link (a gap in seq) is asked again and replayed.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { UipdClient } from '../src/index.js';
import { Daemon, until } from './daemon.js';
import { CuttableProxy } from './proxy.js';

const fast = { minDelay: 50, maxDelay: 200 };

// permessage-deflate off: the proxy reads the server's frames to drop one.
class PlainWebSocket extends WebSocket {
  constructor(url) {
    super(url, { perMessageDeflate: false });
  }
}

/** Numbered messages through the API: an UPDATE of entity e<n % 5>, every third one an ALERT. */
class Publisher {
  n = 0;
  alerts = [];
  constructor(daemon) {
    this.daemon = daemon;
  }
  async publish(count, topics = ['news', 'traffic']) {
    for (let i = 0; i < count; i++) {
      const n = ++this.n;
      const topic = topics[n % topics.length];
      if (n % 3 === 0) {
        this.alerts.push([topic, n]);
        await this.daemon.publish({ topic, type: 'ALERT', data: { n } });
      } else {
        const body = { topic, type: 'UPDATE', data: [{ id: `e${n % 5}`, n }] };
        if (n % 7 === 0) body.removed = [`e${(n + 1) % 5}`];
        await this.daemon.publish(body);
      }
    }
  }
  published(topic, from = 0) {
    return this.alerts.slice(from).filter(([t]) => t === topic).map(([, n]) => n);
  }
}

/** Every event a client emits that the tests look at. */
function record(client) {
  const events = [];
  for (const kind of ['alert', 'snapshot', 'recovered', 'alertsLost', 'status']) client.on(kind, (payload) => events.push({ kind, payload }));
  return events;
}
const alertsOf = (events, topic) => events.filter((e) => e.kind === 'alert' && e.payload.topic === topic).map((e) => e.payload.data.n);
const asObject = (map) => Object.fromEntries([...map].sort(([a], [b]) => a.localeCompare(b)));

/** What a client connecting now gets: state and position per topic. */
async function fresh(daemon, topics) {
  const client = new UipdClient(daemon.wsUrl, { WebSocket, backoff: fast, topics });
  await until(() => topics.every((t) => client.position(t)), { what: 'a fresh snapshot' });
  const out = Object.fromEntries(topics.map((t) => [t, { state: asObject(client.get(t)), position: client.position(t) }]));
  await client.close();
  return out;
}

describe('recovery against a real daemon', () => {
  const cleanup = [];
  after(() => Promise.all(cleanup.map((f) => f())));

  test('a cut link resumes by replay: same state as a fresh client, every ALERT once', async () => {
    const daemon = await Daemon.start({ topics: ['news', 'traffic'] });
    const proxy = await new CuttableProxy(daemon.port).start();
    cleanup.push(() => proxy.close(), () => daemon.close());
    const pub = new Publisher(daemon);
    await pub.publish(4);
    const client = new UipdClient(proxy.url(), { WebSocket, backoff: fast, topics: ['news', 'traffic'] });
    cleanup.push(() => client.close());
    const events = record(client);
    await until(() => client.position('news') && client.position('traffic'), { what: 'positions' });
    const before = pub.alerts.length; // past: in no SNAPSHOT, never shown
    await pub.publish(10);
    await until(() => client.position('news').seq + client.position('traffic').seq === pub.n, { what: 'the live stream' });

    proxy.cut({ stayDown: true }); // mid-stream, no close frame
    await until(() => client.status === 'reconnecting', { what: 'the lost link' });
    await pub.publish(12); // missed while away
    proxy.restore();
    await pub.publish(12); // racing the reconnect and its recovery

    const now = await fresh(daemon, ['news', 'traffic']);
    await until(() => ['news', 'traffic'].every((t) => client.position(t)?.seq === now[t].position.seq), { what: 'the recovery' });
    for (const topic of ['news', 'traffic']) {
      assert.deepEqual(client.position(topic), now[topic].position);
      assert.deepEqual(asObject(client.get(topic)), now[topic].state, topic);
      assert.deepEqual(alertsOf(events, topic), pub.published(topic, before), `${topic}: every ALERT once, in order`);
    }
    assert.equal(proxy.connections, 2);
    const recovered = events.filter((e) => e.kind === 'recovered');
    assert.deepEqual([...recovered[0].payload].sort(), ['news', 'traffic'], 'resumed by replay');
    assert.equal(events.filter((e) => e.kind === 'alertsLost').length, 0);
    const answer = events.filter((e) => e.kind === 'snapshot').at(-1).payload;
    assert.deepEqual(answer.data, {}, 'the resumed connection got no section');
  });

  test('another daemon behind the address (a new epoch) emits alertsLost', async () => {
    const [first, second] = await Promise.all([Daemon.start({ topics: ['news'] }), Daemon.start({ topics: ['news'] })]);
    const proxy = await new CuttableProxy(first.port).start();
    cleanup.push(() => proxy.close(), () => first.close(), () => second.close());
    await new Publisher(first).publish(3, ['news']);
    const client = new UipdClient(proxy.url(), { WebSocket, backoff: fast, topics: ['news'] });
    cleanup.push(() => client.close());
    const events = record(client);
    await until(() => client.position('news'), { what: 'a position' });
    const old = client.position('news');

    proxy.cut({ stayDown: true });
    proxy.targetPort = second.port;
    await second.publish({ topic: 'news', data: [{ id: 'new' }] });
    proxy.restore();
    await until(() => events.some((e) => e.kind === 'alertsLost'), { what: 'alertsLost' });
    assert.deepEqual(events.find((e) => e.kind === 'alertsLost').payload, ['news']);
    assert.notEqual(client.position('news').epoch, old.epoch);
    assert.deepEqual(asObject(client.get('news')), { new: { id: 'new' } }, "the other daemon's state only");
  });

  test('a refused recovery URL falls back to since in a subscribe: still nothing missed', async () => {
    const daemon = await Daemon.start({ topics: ['news', 'traffic'] });
    const proxy = await new CuttableProxy(daemon.port).start();
    cleanup.push(() => proxy.close(), () => daemon.close());
    const client = new UipdClient(proxy.url(), { WebSocket, backoff: fast, topics: ['news', 'traffic'] });
    cleanup.push(() => client.close());
    const events = record(client);
    await until(() => client.position('news') && client.position('traffic'), { what: 'positions' });
    const pub = new Publisher(daemon);
    await pub.publish(6);
    await until(() => client.position('news').seq + client.position('traffic').seq === pub.n, { what: 'the live stream' });
    proxy.refuse = (line) => line.includes('since='); // something that answers topics=/since= with 400
    proxy.cut({ stayDown: true });
    await until(() => client.status === 'reconnecting', { what: 'the lost link' });
    await pub.publish(9);
    proxy.restore();
    const now = await fresh(daemon, ['news', 'traffic']);
    await until(() => ['news', 'traffic'].every((t) => client.position(t)?.seq === now[t].position.seq), { what: 'the recovery' });
    assert.equal(proxy.refused, 1, 'one refusal, then a plain handshake');
    for (const topic of ['news', 'traffic']) {
      assert.deepEqual(asObject(client.get(topic)), now[topic].state, topic);
      assert.deepEqual(alertsOf(events, topic), pub.published(topic), `${topic}: every ALERT once, in order`);
    }
    assert.ok(events.some((e) => e.kind === 'recovered' && [...e.payload].sort().join() === 'news,traffic'));
    assert.equal(client.status, 'open');
  });

  test('positions too long for the URL are asked in a subscribe after connect', async () => {
    const names = Array.from({ length: 60 }, (_, i) => `a-topic-with-a-rather-long-name-number-${String(i).padStart(2, '0')}`);
    const daemon = await Daemon.start({ topics: names });
    const lines = [];
    const look = (line) => { lines.push(line); return false; }; // every handshake passes; keep its request line
    const proxy = await new CuttableProxy(daemon.port, { refuse: look }).start();
    cleanup.push(() => proxy.close(), () => daemon.close());
    const client = new UipdClient(proxy.url(), { WebSocket, backoff: fast, topics: names });
    cleanup.push(() => client.close());
    const events = record(client);
    await until(() => names.every((t) => client.position(t)), { what: 'positions' });
    proxy.cut({ stayDown: true });
    await until(() => client.status === 'reconnecting', { what: 'the lost link' });
    const pub = new Publisher(daemon);
    await pub.publish(90, names);
    proxy.restore();
    const now = await fresh(daemon, names);
    await until(() => names.every((t) => client.position(t)?.seq === now[t].position.seq), { what: 'the recovery' });
    assert.equal(lines.length, 2);
    assert.ok(lines[1].length < 300, 'the reconnect URL carries one position');
    for (const t of names) assert.deepEqual(asObject(client.get(t)), now[t].state, t);
    const got = events.filter((e) => e.kind === 'alert').map((e) => `${e.payload.topic} ${e.payload.data.n}`).sort();
    assert.deepEqual(got, pub.alerts.map(([t, n]) => `${t} ${n}`).sort(), 'every ALERT once');
    const recovered = new Set(events.filter((e) => e.kind === 'recovered').flatMap((e) => e.payload));
    assert.equal(recovered.size, names.length);
  });

  test('a frame lost on a live link is asked again and replayed, its ALERTs shown once', async () => {
    const daemon = await Daemon.start({ topics: ['news'] });
    // news #5 (an UPDATE) never reaches the client, once: its replay must pass. #6 is an ALERT
    // that comes past the gap: shown at once, and not again when replayed.
    const proxy = await new CuttableProxy(daemon.port, {
      drop: (p) => !proxy.dropped.length && p.toString().startsWith('{"type":"UPDATE","topic":"news"') && p.toString().endsWith(',"seq":5}'),
    }).start();
    cleanup.push(() => proxy.close(), () => daemon.close());
    const client = new UipdClient(proxy.url(), { WebSocket: PlainWebSocket, backoff: fast, topics: ['news'] });
    cleanup.push(() => client.close());
    const events = record(client);
    await until(() => client.position('news'), { what: 'a position' });
    const pub = new Publisher(daemon);
    await pub.publish(12, ['news']);
    const now = await fresh(daemon, ['news']);
    await until(() => client.position('news')?.seq === now.news.position.seq, { what: 'the replay' });
    assert.equal(proxy.dropped.length, 1, 'the proxy dropped news #5');
    assert.deepEqual(asObject(client.get('news')), now.news.state);
    assert.deepEqual(alertsOf(events, 'news'), [3, 6, 9, 12]);
    assert.ok(events.some((e) => e.kind === 'recovered' && e.payload.join() === 'news'), 'answered by replay');
    assert.equal(proxy.connections, 1, 'asked on the same link');
  });
});
