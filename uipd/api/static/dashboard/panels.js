// The side panels: live alerts, per-topic message rates, and the server's stats (GET /api/stats).

import { SEVERITY_COLORS } from './map.js';

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const clock = (iso) => {
  const d = iso ? new Date(iso) : new Date();
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour12: false });
};

/** The newest alerts first; at most `max` kept. */
export class AlertList {
  constructor(list, counter, { max = 100, onSelect } = {}) {
    this.list = list;
    this.counter = counter;
    this.max = max;
    this.total = 0;
    this.onSelect = onSelect;
  }

  add(alert) {
    const data = alert.data ?? {};
    const color = SEVERITY_COLORS[data.severity] ?? data.colorCode ?? '#f43f5e';
    const li = document.createElement('li');
    li.className = 'alert fresh';
    li.style.setProperty('--accent', color);
    li.dataset.topic = alert.topic ?? '';
    li.innerHTML =
      `<div class="alert-head"><span class="alert-topic">${escape(alert.topic ?? 'broadcast')}</span>` +
      `<time>${escape(clock(alert.timestamp))}</time></div>` +
      `<div class="alert-msg">${escape(data.message ?? data.description ?? JSON.stringify(data))}</div>`;
    if (data.location) {
      li.tabIndex = 0;
      li.title = 'Show on the map';
      li.addEventListener('click', () => this.onSelect?.(alert));
    }
    this.list.prepend(li);
    setTimeout(() => li.classList.remove('fresh'), 2500);
    while (this.list.children.length > this.max) this.list.lastElementChild.remove();
    this.total += 1;
    this.counter.textContent = String(this.total);
    this.list.closest('section')?.querySelector('.empty')?.remove();
  }
}

/** Messages per second per topic over a sliding window, with a small sparkline. */
export class RateMeter {
  #events = new Map(); // topic -> timestamps (ms) within the window
  #history = new Map(); // topic -> last N rates, for the sparkline

  constructor(table, { windowMs = 10000, points = 30 } = {}) {
    this.table = table;
    this.windowMs = windowMs;
    this.points = points;
  }

  count(topic) {
    if (!topic) return;
    let list = this.#events.get(topic);
    if (!list) this.#events.set(topic, (list = []));
    list.push(performance.now());
  }

  /** Redraw; `entities(topic)` gives the entity count shown next to the rate. */
  render(topics, entities) {
    const now = performance.now();
    const rows = [];
    const shown = [...new Set([...topics, ...this.#events.keys()])];
    for (const topic of shown) {
      const list = this.#events.get(topic) ?? [];
      while (list.length && now - list[0] > this.windowMs) list.shift();
      const rate = list.length / (this.windowMs / 1000);
      const hist = this.#history.get(topic) ?? [];
      hist.push(rate);
      if (hist.length > this.points) hist.shift();
      this.#history.set(topic, hist);
      rows.push(
        `<tr data-topic="${escape(topic)}"><th scope="row">${escape(topic)}</th>` +
          `<td class="num" data-rate="${rate.toFixed(2)}">${rate.toFixed(1)}<small>/s</small></td>` +
          `<td class="spark">${sparkline(hist)}</td>` +
          `<td class="num">${entities(topic).toLocaleString()}</td></tr>`,
      );
    }
    this.table.innerHTML = rows.join('');
  }
}

function sparkline(values) {
  const w = 80, h = 18;
  const max = Math.max(0.5, ...values);
  const step = w / Math.max(1, values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`).join(' ');
  return `<svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" aria-hidden="true"><polyline points="${pts}"/></svg>`;
}

/**
 * Polls GET /api/stats on the dashboard's own origin. With `[api] key` set the API answers 401:
 * the key can be given in the page's fragment (#key=...), which the browser never sends to a server.
 */
export class StatsPoller {
  constructor({ onStats, onProblem, intervalMs = 2000, key = '' }) {
    this.onStats = onStats;
    this.onProblem = onProblem;
    this.intervalMs = intervalMs;
    this.key = key;
  }

  start() {
    const tick = async () => {
      try {
        const res = await fetch('/api/stats', { headers: this.key ? { authorization: `Bearer ${this.key}` } : {}, cache: 'no-store' });
        if (res.status === 401) {
          this.onProblem(this.key
            ? 'The API key in the address (#key=…) was refused by /api/stats.'
            : 'Server stats need the API key ([api] key is set): open this page with #key=YOUR_KEY at the end of the address.');
        } else if (!res.ok) {
          this.onProblem(`/api/stats answered HTTP ${res.status}.`);
        } else {
          this.onStats(await res.json());
        }
      } catch {
        this.onProblem('The HTTP API is not reachable (daemon stopped?).');
      }
      this.timer = setTimeout(tick, this.intervalMs);
    };
    tick();
  }
}
