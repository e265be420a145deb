// Regenerate docs/dashboard.png: node screenshot.js (needs /usr/bin/chromium and the venv).

import { fileURLToPath } from 'node:url';
import { Daemon, sleep } from '../js/test/daemon.js';
import { dashboardUrl, launch } from './browser.js';

const out = fileURLToPath(new URL('../../docs/dashboard.png', import.meta.url));
const daemon = await Daemon.start({ topics: [], sim: { speed: 20 } });
const browser = await launch();
try {
  const page = await browser.context.newPage();
  await page.goto(dashboardUrl(daemon));
  await page.waitForSelector('#status[data-status="open"]', { timeout: 10000 });
  await sleep(6000); // let rates, sparklines and a few alerts build up
  await daemon.publish({ topic: 'accidents', type: 'ALERT', data: { message: 'Severe accident: truck overturned on Võ Văn Kiệt', severity: 'severe', location: { lat: 10.752, lng: 106.67 } } });
  await sleep(1500);
  await page.locator('circle.cam').nth(40).hover({ force: true });
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await daemon.close();
}
