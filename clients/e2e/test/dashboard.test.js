// The live dashboard in headless Chromium against real uipd processes: it shows the simulated
// city, an ALERT published through the API within a second, recovers after a daemon restart (and
// warns, dismissably, that alerts may have been missed meanwhile), and says clearly when /api/stats
// needs a key.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Daemon } from '../../js/test/daemon.js';
import { CuttableProxy } from '../../js/test/proxy.js';
import { dashboardUrl, launch, missingBrowser } from '../browser.js';

const skip = missingBrowser();
if (skip) console.log(`# SKIP browser tests: ${skip}`);

describe('dashboard', { skip: skip ?? false }, () => {
  let daemon, browser, page;
  const errors = [];
  before(async () => {
    [daemon, browser] = await Promise.all([Daemon.start({ topics: [], sim: { speed: 10 } }), launch()]);
    page = await browser.context.newPage();
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(dashboardUrl(daemon));
  });
  after(async () => {
    await browser?.close();
    await daemon?.close();
  });

  const count = (layer) => page.locator(`[data-layer="${layer}"]`).first().evaluate((g) => Number(g.dataset.count ?? 0));

  test('connects and draws the simulated city', async () => {
    await page.waitForSelector('#status[data-status="open"]', { timeout: 10000 });
    await page.waitForFunction(() => document.querySelector('g[data-layer="cameras"]')?.dataset.count === '700', null, { timeout: 10000 });
    assert.equal(await count('airQuality'), 700);
    assert.ok((await count('accidents')) > 0, 'accidents drawn');
    // Every camera is inside the map's frame (the projection is right).
    const outside = await page.evaluate(() => {
      const box = document.querySelector('#city').viewBox.baseVal;
      return [...document.querySelectorAll('circle.cam')].filter((c) => {
        const x = Number(c.getAttribute('cx')), y = Number(c.getAttribute('cy'));
        return !(x >= 0 && x <= box.width && y >= 0 && y <= box.height);
      }).length;
    });
    assert.equal(outside, 0);
    // Hovering a camera shows its details.
    await page.locator('circle.cam').first().hover({ force: true });
    await page.waitForSelector('#tooltip:not([hidden])');
    assert.match(await page.locator('#tooltip').innerText(), /status/);
    // Rates and server stats are filled in.
    await page.waitForFunction(() => document.querySelectorAll('#rates tbody tr').length === 6, null, { timeout: 5000 });
    await page.waitForFunction(() => Number(document.querySelector('#clients').textContent) >= 1, null, { timeout: 5000 });
    // Chromium offers permessage-deflate by itself: the city came over a compressed link (PROTOCOL.md 9).
    const stats = await daemon.stats();
    assert.ok(stats.compressedClients >= 1, `compressed clients: ${stats.compressedClients} of ${stats.clients}`);
    assert.deepEqual(errors, []);
  });

  test('shows an ALERT published through the API within a second', async () => {
    await page.waitForSelector('#status[data-status="open"]');
    const message = `Flooding on Nguyễn Hữu Cảnh ${Date.now()}`;
    const shown = page.waitForFunction(
      (text) => [...document.querySelectorAll('#alerts li')].some((li) => li.textContent.includes(text)),
      message, { timeout: 1000, polling: 'raf' },
    );
    const started = Date.now();
    await daemon.publish({ topic: 'accidents', type: 'ALERT', data: { message, severity: 'severe', location: { lat: 10.79, lng: 106.72 } } });
    await shown;
    assert.ok(Date.now() - started < 1000);
  });

  test('recovers after the daemon restarts', async () => {
    await daemon.stop('SIGKILL');
    await page.waitForSelector('#status[data-status="reconnecting"]', { timeout: 5000 });
    assert.match(await page.locator('#banner').innerText(), /Lost the connection/);
    await daemon.spawn();
    await page.waitForSelector('#status[data-status="open"]', { timeout: 10000 });
    await page.waitForSelector('#banner', { state: 'hidden' });
    // A new run of the daemon cannot replay what it never had: the dashboard says so until dismissed.
    await page.waitForSelector('#alerts-lost:not([hidden])', { timeout: 5000 });
    assert.match(await page.locator('#alerts-lost').innerText(), /Alerts may have been missed for: .*accidents/);
    await page.locator('#alerts-lost-dismiss').click();
    await page.waitForSelector('#alerts-lost', { state: 'hidden' });
    // Live again: a new alert arrives, and the city is still drawn from the new daemon's state.
    const message = `after restart ${Date.now()}`;
    const shown = page.waitForFunction((text) => document.querySelector('#alerts').textContent.includes(text), message, { timeout: 3000 });
    await daemon.publish({ topic: 'airQuality', type: 'ALERT', data: { message } });
    await shown;
    assert.equal(await count('cameras'), 700);
    assert.deepEqual(errors, []);
  });
});

describe('dashboard behind a link that drops', { skip: skip ?? false }, () => {
  let daemon, proxy, browser;
  before(async () => {
    [daemon, browser] = await Promise.all([Daemon.start({ topics: [], sim: { speed: 10 } }), launch()]);
    proxy = await new CuttableProxy(daemon.port).start();
  });
  after(async () => {
    await browser?.close();
    await proxy?.close();
    await daemon?.close();
  });

  test('recovers what it missed, also when the recovery URL is refused (a browser sees no status)', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${dashboardUrl(daemon)}?ws=${encodeURIComponent(proxy.url())}`);
    await page.waitForSelector('#status[data-status="open"]', { timeout: 10000 });
    await page.waitForFunction(() => document.querySelector('g[data-layer="cameras"]')?.dataset.count === '700', null, { timeout: 10000 });
    proxy.refuse = (line) => line.includes('since='); // HTTP 400: the browser only sees a failed handshake
    proxy.cut({ stayDown: true });
    await page.waitForSelector('#status[data-status="reconnecting"]', { timeout: 5000 });
    const message = `while away ${Date.now()}`;
    await daemon.publish({ topic: 'accidents', type: 'ALERT', data: { message } });
    proxy.restore();
    await page.waitForFunction((text) => document.querySelector('#alerts').textContent.includes(text), message, { timeout: 15000 });
    await page.waitForSelector('#status[data-status="open"]');
    assert.equal(proxy.refused, 2, 'two refused handshakes, then a plain one');
    assert.equal(await page.locator('#alerts-lost').isHidden(), true, 'nothing was lost');
    const shown = await page.evaluate((text) => [...document.querySelectorAll('#alerts li')].filter((li) => li.textContent.includes(text)).length, message);
    assert.equal(shown, 1, 'the missed ALERT is shown once');
  });
});

describe('dashboard with an API key', { skip: skip ?? false }, () => {
  let daemon, browser;
  before(async () => {
    [daemon, browser] = await Promise.all([Daemon.start({ topics: ['news'], apiKey: 's3cret' }), launch()]);
  });
  after(async () => {
    await browser?.close();
    await daemon?.close();
  });

  test('explains that /api/stats needs the key, and uses #key=', async () => {
    const page = await browser.context.newPage();
    await page.goto(dashboardUrl(daemon));
    await page.waitForSelector('#stats-problem:not([hidden])', { timeout: 5000 });
    assert.match(await page.locator('#stats-problem').innerText(), /API key/);
    await page.waitForSelector('#status[data-status="open"]', { timeout: 5000 });

    // (a new page: changing only the fragment would not reload the dashboard)
    const keyed = await browser.context.newPage();
    await keyed.goto(`${dashboardUrl(daemon)}#key=s3cret`);
    await keyed.waitForFunction(() => Number(document.querySelector('#clients').textContent) >= 1, null, { timeout: 5000 });
    assert.equal(await keyed.locator('#stats-problem').isHidden(), true);
  });
});
