// The city map: an SVG with the hand-drawn base (geo.js) and one layer per topic. Each entity is
// one SVG element keyed by id and updated in place, so a tick of a few hundred changes costs a few
// hundred attribute writes, not a redraw of 2,000 points.

import { HEIGHT, LABELS, RIVERS, URBAN_CORE, CITY_OUTLINE, WIDTH, project, smoothPath } from './geo.js';

const SVG = 'http://www.w3.org/2000/svg';

export const SEVERITY_COLORS = { minor: '#facc15', moderate: '#fb923c', severe: '#ef4444', fatal: '#c026d3' };
export const FLOW_COLORS = { free_flow: '#22c55e', light: '#a3e635', moderate: '#facc15', heavy: '#f97316', severe: '#ef4444' };
const SEVERITY_SIZE = { minor: 6, moderate: 7.5, severe: 9.5, fatal: 11 };

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

function latLng(location) {
  if (!location) return null;
  const lat = location.lat ?? location.latitude;
  const lng = location.lng ?? location.longitude;
  return Number.isFinite(lat) && Number.isFinite(lng) ? project(lat, lng) : null;
}

// Puts a circle at an entity's location; false when it has none.
function placeCircle(node, location) {
  const p = latLng(location);
  if (!p) return false;
  node.setAttribute('cx', p[0]); node.setAttribute('cy', p[1]);
  return true;
}

// How each topic is drawn: create() once per entity, update() on every change of it.
const LAYERS = {
  patterns: {
    create: (g) => el('line', { class: 'flow' }, g),
    update(node, e) {
      const a = latLng(e.location?.startPoint);
      const b = latLng(e.location?.endPoint);
      if (!a || !b) return false;
      node.setAttribute('x1', a[0]); node.setAttribute('y1', a[1]);
      node.setAttribute('x2', b[0]); node.setAttribute('y2', b[1]);
      node.setAttribute('stroke', FLOW_COLORS[e.congestionLevel] ?? '#64748b');
      return true;
    },
  },
  airQuality: {
    create: (g) => el('circle', { class: 'aq' }, g),
    update(node, e) {
      if (!placeCircle(node, e.location)) return false;
      // Worse air is drawn larger so that an episode reads as a spreading stain.
      node.setAttribute('r', (5 + Math.min(300, e.aqi ?? 0) / 25).toFixed(1));
      node.setAttribute('fill', e.colorCode ?? '#64748b');
      return true;
    },
  },
  congestion: {
    create: (g) => el('circle', { class: 'jam', r: 7 }, g),
    update(node, e) {
      if (!placeCircle(node, e.location)) return false;
      node.classList.toggle('on', !!e.congested);
      return true;
    },
  },
  cameras: {
    create: (g) => el('circle', { class: 'cam', r: 2.6 }, g),
    update(node, e) {
      if (!placeCircle(node, e.location)) return false;
      node.classList.toggle('offline', e.status !== 'online');
      return true;
    },
  },
  accidents: {
    create: (g) => el('path', { class: 'acc' }, g),
    update(node, e) {
      const p = latLng(e.location);
      if (!p) return false;
      const s = SEVERITY_SIZE[e.severity] ?? 7;
      node.setAttribute('d', `M${p[0]},${p[1] - s}L${p[0] + s},${p[1]}L${p[0]},${p[1] + s}L${p[0] - s},${p[1]}Z`);
      node.setAttribute('fill', SEVERITY_COLORS[e.severity] ?? '#fb923c');
      node.classList.toggle('resolved', !!e.resolved);
      return true;
    },
  },
};

export const TOPICS_DRAWN = Object.keys(LAYERS);

export class CityMap {
  #layers = new Map(); // topic -> {group, nodes: Map<id, element>}
  #pulses;

  constructor(container) {
    this.svg = el('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': 'Map of Ho Chi Minh City', id: 'city' });
    this.#drawBase();
    for (const topic of TOPICS_DRAWN) {
      const group = el('g', { class: `layer layer-${topic}`, 'data-layer': topic }, this.svg);
      this.#layers.set(topic, { group, nodes: new Map() });
    }
    this.#pulses = el('g', { class: 'pulses' }, this.svg);
    container.append(this.svg);
  }

  #drawBase() {
    const base = el('g', { class: 'base' }, this.svg);
    el('rect', { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: 'sea' }, base);
    el('path', { d: smoothPath(CITY_OUTLINE, true), class: 'land' }, base);
    el('path', { d: smoothPath(URBAN_CORE, true), class: 'urban' }, base);
    for (const river of RIVERS) {
      const path = el('path', { d: smoothPath(river.points), class: 'river', 'stroke-width': river.width }, base);
      el('title', {}, path).textContent = river.name;
    }
    for (const label of LABELS) {
      const [x, y] = project(label.lat, label.lng);
      el('text', { x, y, class: 'label' }, base).textContent = label.text;
    }
    // A scale bar: 5 km at this latitude.
    const [x0] = project(10.66, 106.46);
    const [x1] = project(10.66, 106.46 + 5 / (111.32 * Math.cos((10.82 * Math.PI) / 180)));
    const y = HEIGHT - 18;
    el('path', { d: `M${x0},${y - 5}V${y}H${x1}V${y - 5}`, class: 'scale' }, base);
    el('text', { x: (x0 + x1) / 2, y: y - 8, class: 'scale-label' }, base).textContent = '5 km';
  }

  /** Bring a topic's layer in line with its entities (a Map id -> entity). */
  sync(topic, entities) {
    const layer = this.#layers.get(topic);
    const spec = LAYERS[topic];
    if (!layer) return;
    for (const [id, node] of layer.nodes) {
      if (!entities.has(id)) {
        node.remove();
        layer.nodes.delete(id);
      }
    }
    for (const [id, entity] of entities) {
      let node = layer.nodes.get(id);
      if (!node) {
        node = spec.create(layer.group);
        node.dataset.topic = topic;
        node.dataset.id = id;
        layer.nodes.set(id, node);
      }
      node.style.display = spec.update(node, entity) ? '' : 'none';
    }
    layer.group.dataset.count = String(layer.nodes.size);
  }

  setVisible(topic, visible) {
    this.#layers.get(topic)?.group.classList.toggle('hidden', !visible);
  }

  /** Draw attention to a place for a few seconds (a new alert). */
  pulse(location, color = '#f43f5e') {
    const p = latLng(location);
    if (!p) return;
    const ring = el('circle', { cx: p[0], cy: p[1], r: 6, class: 'pulse', stroke: color }, this.#pulses);
    setTimeout(() => ring.remove(), 4000);
  }
}
