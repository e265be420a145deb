// The React hook over a real daemon, rendered with react-test-renderer (no DOM needed).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createElement } from 'react';
import TestRenderer from 'react-test-renderer';
import WebSocket from 'ws';
import { useUipd } from '../react/index.js';
import { Daemon, until } from './daemon.js';

// The daemon's messages arrive outside act(): render like an app does, not like a unit test.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;
// react-test-renderer 19 announces its deprecation on every create(); that is not a test failure.
const consoleError = console.error;
console.error = (...args) => { if (!String(args[0]).includes('react-test-renderer is deprecated')) consoleError(...args); };

let daemon;
before(async () => {
  daemon = await Daemon.start({ topics: ['news'] });
  await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'a', title: 'A' }] });
});
after(() => daemon.close());

test('useUipd renders state, status and alerts, and closes the client on unmount', async () => {
  let latest;
  function Probe() {
    latest = useUipd(daemon.wsUrl, { WebSocket, topics: ['news'] });
    return null;
  }
  const renderer = TestRenderer.create(createElement(Probe));
  await until(() => latest?.status === 'open' && latest.state.news?.length === 1, { what: 'the first state' });
  assert.equal(latest.state.news[0].title, 'A');

  await daemon.publish({ topic: 'news', type: 'UPDATE', data: [{ id: 'b', title: 'B' }] });
  await until(() => latest.state.news?.length === 2, { what: 'the update to re-render' });
  await daemon.publish({ topic: 'news', type: 'ALERT', data: { message: 'flood' } });
  await until(() => latest.alerts.length === 1, { what: 'the alert' });
  assert.equal(latest.alerts[0].data.message, 'flood');

  const client = latest.client;
  renderer.unmount();
  await until(() => client.status === 'closed', { what: 'the client to close on unmount' });
  await until(async () => (await daemon.stats()).clients === 0, { what: 'the server to see the close' });
});

test('useUipd lists the topics alerts may have been missed for after a restart, until dismissed', async () => {
  let latest;
  function Probe() {
    latest = useUipd(daemon.wsUrl, { WebSocket, topics: ['news'], backoff: { minDelay: 50, maxDelay: 200 } });
    return null;
  }
  const renderer = TestRenderer.create(createElement(Probe));
  await until(() => latest?.client?.position('news'), { what: 'a position' });
  assert.deepEqual(latest.alertsMayBeMissed, []);
  await daemon.stop('SIGKILL');
  await daemon.spawn(); // same port, a new epoch: nothing can be replayed
  await until(() => latest.alertsMayBeMissed.length === 1, { timeout: 10000, what: 'alertsMayBeMissed' });
  assert.deepEqual(latest.alertsMayBeMissed, ['news']);
  latest.dismissAlertsMayBeMissed();
  await until(() => latest.alertsMayBeMissed.length === 0, { what: 'the dismissal' });
  renderer.unmount();
});
