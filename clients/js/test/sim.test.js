// A realistic run: the bundled simulated city (700 cameras, live updates and alerts).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { UipdClient } from '../src/index.js';
import { Daemon, next, until } from './daemon.js';

let daemon;
before(async () => { daemon = await Daemon.start({ topics: [], sim: { speed: 20 } }); });
after(() => daemon.close());

test('the simulated city: 700 located cameras, live updates, and state in step with the daemon', async () => {
  const client = new UipdClient(daemon.wsUrl, { WebSocket });
  await next(client, 'snapshot', { timeout: 10000 });
  assert.deepEqual([...client.topics].sort(), ['accidents', 'airQuality', 'cameras', 'congestion', 'patterns', 'weather']);
  const cameras = client.entities('cameras');
  assert.equal(cameras.length, 700);
  for (const cam of cameras) {
    assert.ok(cam.location.lat > 10.3 && cam.location.lat < 11.2 && cam.location.lng > 106.3 && cam.location.lng < 107.0, cam.id);
  }
  for (const aq of client.entities('airQuality')) assert.match(aq.colorCode, /^#[0-9a-f]{6}$/i);

  // Live: updates to several topics arrive and are applied.
  const topics = new Set();
  client.on('update', (m) => topics.add(m.topic));
  await until(() => topics.size >= 3, { timeout: 10000, what: 'updates of three topics' });

  // The client's entity counts match the daemon's own (checked on a quiet topic-by-topic basis).
  await until(async () => {
    const stats = await daemon.stats();
    return ['cameras', 'weather', 'airQuality', 'congestion'].every((t) => stats.topics[t].entities === client.get(t).size);
  }, { timeout: 5000, what: 'entity counts equal to the daemon stats' });
  await client.close();
});
