// Hover details for map points: one tooltip element, driven by event delegation on the SVG, that
// reads the entity from the client's state (so it always shows the latest values).

import { FLOW_COLORS, SEVERITY_COLORS } from './map.js';

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const row = (k, v) => (v === undefined || v === null || v === '' ? '' : `<tr><th>${k}</th><td>${v}</td></tr>`);
const chip = (color, text) => `<span class="chip" style="--c:${escape(color)}">${escape(text)}</span>`;
const words = (s) => String(s ?? '').replaceAll('_', ' ');

const DETAILS = {
  cameras: (e) => [
    escape(e.name ?? e.cameraName ?? e.id),
    row('camera', escape(e.cameraNum)) + row('type', escape(e.cameraType)) +
      row('status', chip(e.status === 'online' ? '#22c55e' : '#ef4444', e.status)),
  ],
  airQuality: (e) => [
    `Air quality · AQI ${escape(e.aqi)}`,
    row('level', chip(e.colorCode, words(e.level))) + row('PM2.5', escape(e.pm25)) + row('PM10', escape(e.pm10)) +
      row('NO₂', escape(e.no2)) + row('O₃', escape(e.o3)),
  ],
  accidents: (e) => [
    escape(e.description ?? 'Accident'),
    row('severity', chip(SEVERITY_COLORS[e.severity] ?? '#fb923c', e.severity)) + row('casualties', escape(e.casualties)) +
      row('status', e.resolved ? 'resolved' : 'open') + row('since', escape(e.timestamp && new Date(e.timestamp).toLocaleTimeString([], { hour12: false }))),
  ],
  congestion: (e) => [
    e.congested ? 'Congested' : 'Clear',
    row('camera', escape(e.cameraId?.split(':').pop()?.replace('%20', ' '))) + row('since', escape(e.firstBreach && new Date(e.firstBreach).toLocaleTimeString([], { hour12: false }))),
  ],
  patterns: (e) => [
    'Traffic flow',
    row('level', chip(FLOW_COLORS[e.congestionLevel] ?? '#64748b', words(e.congestionLevel))) +
      row('avg speed', e.averageSpeed != null ? `${escape(e.averageSpeed)} km/h` : '') + row('vehicles', escape(e.vehicleCount)),
  ],
};

export function attachTooltip(svg, tip, lookup) {
  svg.addEventListener('pointermove', (event) => {
    const node = event.target.closest?.('[data-id]');
    const entity = node && lookup(node.dataset.topic, node.dataset.id);
    if (!entity) {
      tip.hidden = true;
      return;
    }
    const [title, rows] = (DETAILS[node.dataset.topic] ?? ((e) => [escape(e.id), '']))(entity);
    tip.innerHTML = `<strong>${title}</strong><table>${rows}</table>`;
    tip.hidden = false;
    const box = tip.parentElement.getBoundingClientRect();
    const x = Math.min(event.clientX - box.left + 14, box.width - tip.offsetWidth - 6);
    const y = Math.min(event.clientY - box.top + 14, box.height - tip.offsetHeight - 6);
    tip.style.transform = `translate(${Math.max(6, x)}px, ${Math.max(6, y)}px)`;
  });
  svg.addEventListener('pointerleave', () => { tip.hidden = true; });
}
