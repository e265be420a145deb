// The live city dashboard: wires the uipd browser client (served from ../client/, the same files
// as the npm package uipd-client) to the map and the panels.
//
// WebSocket URL: the page is served by the HTTP API listener, which is not the WebSocket port, so
// it is taken from ?ws=ws://host:port/, else from what the daemon wrote into the page
// (<meta name="uipd-ws" content="ws 5000 /">: scheme, port, path), else this page's hostname on
// port 5000 (the daemon's default). An API key for /api/stats may be given as #key=... (never sent to servers).

import { UipdClient } from '../client/index.js';
import { AlertList, RateMeter, StatsPoller } from './panels.js';
import { CityMap, SEVERITY_COLORS, TOPICS_DRAWN } from './map.js';
import { attachTooltip } from './tooltip.js';

const $ = (sel) => document.querySelector(sel);

export function wsUrlFrom(loc, advertised = '') {
  const given = new URLSearchParams(loc.search).get('ws');
  if (given) return given;
  const [scheme, port, path] = advertised.trim().split(/\s+/);
  if (scheme && port) return `${scheme}://${loc.hostname || 'localhost'}:${port}${path || '/'}`;
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.hostname || 'localhost'}:5000/`;
}

const wsUrl = wsUrlFrom(location, document.querySelector('meta[name="uipd-ws"]')?.content ?? '');
const apiKey = new URLSearchParams(location.hash.slice(1)).get('key') ?? '';

const map = new CityMap($('#map'));
const client = new UipdClient(wsUrl, { backoff: { minDelay: 500, maxDelay: 5000 } });
const alerts = new AlertList($('#alerts'), $('#alert-count'), {
  onSelect: (alert) => map.pulse(alert.data.location, SEVERITY_COLORS[alert.data.severity] ?? alert.data.colorCode),
});
const rates = new RateMeter($('#rates tbody'));
window.uipd = { client, map }; // for the console and the browser tests

$('#ws-url').textContent = wsUrl;
attachTooltip(map.svg, $('#tooltip'), (topic, id) => client.get(topic).get(id));

// -- connection status -------------------------------------------------------------------------

const LABELS = { idle: 'idle', connecting: 'connecting…', open: 'live', reconnecting: 'reconnecting', closed: 'disconnected' };
let retryTimer = null;
client.on('status', (s) => {
  document.body.dataset.status = s.status;
  const pill = $('#status');
  pill.dataset.status = s.status;
  clearInterval(retryTimer);
  if (s.status === 'reconnecting') {
    const at = Date.now() + s.delay;
    const show = () => { pill.textContent = `reconnecting in ${Math.max(0, (at - Date.now()) / 1000).toFixed(1)} s`; };
    show();
    retryTimer = setInterval(show, 100);
  } else {
    pill.textContent = LABELS[s.status] ?? s.status;
  }
  if (s.status === 'open') banner('');
  else if (s.status === 'reconnecting') banner(`Lost the connection to ${wsUrl}${s.reason ? ` (${s.reason})` : ''}; the map shows the last known state.`, 'warn');
});
client.on('connection', (msg) => {
  $('#client-id').textContent = msg.clientId;
});
client.on('close', (c) => {
  if (c.fatal) banner(`The daemon refused this dashboard (${c.httpStatus ? `HTTP ${c.httpStatus}` : `close ${c.code} ${c.reason}`}). Check ?ws= and the token.`, 'error');
  else if (c.code !== 1000) banner(`Cannot connect to ${wsUrl}. Is the daemon running? Give its address as ?ws=ws://host:port/`, 'error');
});

// After a reconnect the daemon replays what was missed; when it cannot (it restarted, or the gap
// is older than its history), it says so per topic: the user is told, until they dismiss it.
const alertsLost = new Set();
client.on('alertsLost', (topics) => {
  for (const t of topics) alertsLost.add(t);
  $('#alerts-lost-text').textContent = `Alerts may have been missed for: ${[...alertsLost].join(', ')}`;
  $('#alerts-lost').hidden = false;
});
$('#alerts-lost-dismiss').addEventListener('click', () => {
  alertsLost.clear();
  $('#alerts-lost').hidden = true;
});

function banner(text, kind = 'info') {
  const node = $('#banner');
  node.textContent = text;
  node.hidden = !text;
  node.dataset.kind = kind;
}

// -- state → map (batched per animation frame: a burst of updates is drawn once) ----------------

const dirty = new Set();
let frame = 0;
client.on('change', ({ topic }) => {
  dirty.add(topic);
  frame ||= requestAnimationFrame(draw);
});
function draw() {
  frame = 0;
  for (const topic of dirty) map.sync(topic, client.get(topic));
  dirty.clear();
  summarize();
  $('#last-message').textContent = new Date().toLocaleTimeString([], { hour12: false });
}

function summarize() {
  const cams = client.get('cameras');
  let offline = 0;
  for (const c of cams.values()) if (c.status !== 'online') offline += 1;
  $('#sum-cameras').textContent = cams.size ? `${cams.size - offline} online · ${offline} offline` : '—';
  const open = client.entities('accidents').filter((a) => !a.resolved);
  const serious = open.filter((a) => a.severity === 'severe' || a.severity === 'fatal').length;
  $('#sum-accidents').textContent = `${open.length} open${serious ? ` · ${serious} serious` : ''}`;
  const aqi = client.entities('airQuality').map((a) => a.aqi).filter(Number.isFinite);
  $('#sum-air').textContent = aqi.length ? `median ${median(aqi)} · worst ${Math.max(...aqi)}` : '—';
  const jams = client.entities('congestion').filter((c) => c.congested).length;
  $('#sum-congestion').textContent = `${jams} congested`;
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// -- alerts and rates ----------------------------------------------------------------------------

client.on('alert', (alert) => {
  rates.count(alert.topic);
  alerts.add(alert);
  const d = alert.data ?? {};
  if (d.location) map.pulse(d.location, SEVERITY_COLORS[d.severity] ?? d.colorCode);
});
client.on('update', (m) => rates.count(m.topic));
setInterval(() => rates.render(client.topics, (t) => client.get(t).size), 1000);

// -- layer toggles -------------------------------------------------------------------------------

for (const input of document.querySelectorAll('input[data-layer]')) {
  const apply = () => map.setVisible(input.dataset.layer, input.checked);
  input.addEventListener('change', apply);
  apply();
}
console.assert(TOPICS_DRAWN.every((t) => document.querySelector(`input[data-layer="${t}"]`)), 'a toggle per layer');

// -- server stats --------------------------------------------------------------------------------

new StatsPoller({
  key: apiKey,
  onStats(stats) {
    $('#stats-problem').hidden = true;
    $('#clients').textContent = String(stats.clients);
    const sources = Object.entries(stats.sources ?? {});
    $('#sources').innerHTML = sources.length
      ? sources.map(([name, s]) => `<li class="${s.running && s.ready ? 'ok' : 'bad'}">${name}: ${s.running ? (s.ready ? 'ready' : 'loading') : 'stopped'}${s.restarts ? ` · ${s.restarts} restarts` : ''}</li>`).join('')
      : '<li>no sources (HTTP API only)</li>';
  },
  onProblem(text) {
    const node = $('#stats-problem');
    node.textContent = text;
    node.hidden = false;
    $('#clients').textContent = '?';
  },
}).start();
