// The client rules of recovery (docs/protocol.md section 8), as pure data with no I/O so they are
// tested on their own and shared word for word with the Python client (uipd/client/positions.py).
//
// Per topic the client keeps the last position it applied (epoch + seq). A topic message is
// applied only when its seq is the next one; an older one is a duplicate (a replay overlapping what
// was already applied); a newer one means messages were lost on the way, so the client asks the
// server again with `since` (once per topic until an answer arrives). An ALERT is an event, not
// state: one that arrives past a gap is still shown at once, and remembered so that the replay or
// `missedAlerts` of that gap does not show it a second time.

/** How many shown ALERTs are remembered (per client, every topic together). */
export const ALERT_MEMORY = 1024;

export class Positions {
  /** @type {Map<string, {seq: number, epoch: string}>} */
  #last = new Map();
  /** Topics asked again with `since` whose answer has not arrived yet. */
  #asked = new Set();
  /** Shown ALERTs by `topic \n epoch \n seq`, oldest first (a Set keeps insertion order). */
  #shown = new Set();
  #memory;

  constructor({ alertMemory = ALERT_MEMORY } = {}) {
    this.#memory = alertMemory;
  }

  /** The last applied position of a topic, or undefined when the server gave none. */
  get(topic) {
    return this.#last.get(topic);
  }

  /** Topics with a known position. */
  topics() {
    return [...this.#last.keys()];
  }

  /** `{topic: {seq, epoch}}` for the topics with a position (all, or those keep(topic) accepts). */
  since(keep = () => true) {
    const out = {};
    for (const [topic, { seq, epoch }] of this.#last) if (keep(topic)) out[topic] = { seq, epoch };
    return out;
  }

  /** Forget the position of every topic for which keep(topic) is false (unsubscribed, no longer offered). */
  retain(keep) {
    for (const topic of [...this.#last.keys()]) {
      if (!keep(topic)) {
        this.#last.delete(topic);
        this.#asked.delete(topic);
      }
    }
  }

  /** A new connection: no ask of the old one will be answered. */
  newConnection() {
    this.#asked.clear();
  }

  /** An ask for these topics was sent by other means (a subscribe with since after connect). */
  asking(topics) {
    for (const topic of topics) this.#asked.add(topic);
  }

  /** An ERROR answered the ask (e.g. rate_limited): the next gap asks again. */
  askFailed(topics) {
    for (const topic of topics ?? [...this.#asked]) this.#asked.delete(topic);
  }

  /**
   * Take a SNAPSHOT's positions and recovery fields. Every section replaces its topic's position
   * (a section without a position, from a server before version 1.1, forgets it: numbering
   * against it could drop every later message as a duplicate). Returns what to tell the user:
   * the ALERTs of `missedAlerts` not shown yet (in order), and the `recovered` and `alertsLost` topics.
   */
  snapshot(msg) {
    const positions = isObject(msg.positions) ? msg.positions : {};
    const newEpoch = [];
    for (const topic of Object.keys(isObject(msg.data) ? msg.data : {})) {
      const p = positions[topic];
      const had = this.#last.get(topic);
      if (had && isPosition(p) && p.epoch !== had.epoch) newEpoch.push(topic);
      if (isPosition(p)) this.#last.set(topic, { seq: p.seq, epoch: p.epoch });
      else this.#last.delete(topic);
      this.#asked.delete(topic);
    }
    const recovered = strings(msg.recovered);
    // A section in a new epoch for a topic we had a position in: the server's history restarted
    // (another daemon run), so ALERTs may have been missed, whether or not this SNAPSHOT answers
    // a `since` (a plain connect after failed recovery URLs, or an ask refused as rate_limited).
    const alertsLost = strings(msg.alertsLost);
    for (const topic of newEpoch) if (!alertsLost.includes(topic)) alertsLost.push(topic);
    for (const topic of [...recovered, ...alertsLost]) this.#asked.delete(topic);
    const alerts = [];
    for (const [topic, list] of Object.entries(isObject(msg.missedAlerts) ? msg.missedAlerts : {})) {
      for (const alert of Array.isArray(list) ? list : []) {
        if (!isObject(alert)) continue;
        const epoch = this.#last.get(topic)?.epoch;
        if (Number.isSafeInteger(alert.seq) && epoch !== undefined && !this.#remember(topic, epoch, alert.seq)) continue;
        alerts.push(alert.topic === undefined ? { ...alert, topic } : alert);
      }
    }
    return { alerts, recovered, alertsLost };
  }

  /**
   * An UPDATE or ALERT: `apply` (state and the `update` event), `emit` (an ALERT shown to the
   * user), `ask` (send `askMessage(topic)` now: a gap opened and nobody asked yet).
   */
  message(msg) {
    const topic = msg.topic;
    const last = typeof topic === 'string' ? this.#last.get(topic) : undefined;
    const alert = msg.type === 'ALERT';
    if (!last || !Number.isSafeInteger(msg.seq)) return { apply: true, emit: alert, ask: false }; // nothing to number against
    const seq = msg.seq;
    if (seq <= last.seq) return { apply: false, emit: false, ask: false }; // a duplicate: already applied
    if (seq === last.seq + 1) {
      last.seq = seq;
      return { apply: true, emit: alert && this.#remember(topic, last.epoch, seq), ask: false };
    }
    // A gap: this message cannot be applied on top of the state, the server's answer to the ask
    // brings it (replayed, or inside a section). An ALERT is shown now all the same.
    const ask = !this.#asked.has(topic);
    if (ask) this.#asked.add(topic);
    return { apply: false, emit: alert && this.#remember(topic, last.epoch, seq), ask };
  }

  /** The `since` of an ask for one topic (null when its position is unknown). */
  sinceOf(topic) {
    const last = this.#last.get(topic);
    return last ? { [topic]: { seq: last.seq, epoch: last.epoch } } : null;
  }

  clear() {
    this.#last.clear();
    this.#asked.clear();
    this.#shown.clear();
  }

  /** Remember a shown ALERT; false when it was shown already. */
  #remember(topic, epoch, seq) {
    const key = `${topic}\n${epoch}\n${seq}`;
    if (this.#shown.has(key)) return false;
    this.#shown.add(key);
    if (this.#shown.size > this.#memory) this.#shown.delete(this.#shown.values().next().value);
    return true;
  }
}

/**
 * The handshake URL of a reconnect: `topics` (the subscription set; null keeps the server's
 * default set) and `since` as query parameters. Returns `{url, later}`: when the URL would pass
 * `maxLength`, only the first position rides on the URL and `later` is the subscribe message that
 * asks for the others right after the `connection` message.
 */
export function recoveryUrl(base, topics, since, maxLength = MAX_URL) {
  const names = Object.keys(since);
  const build = (ts, s) => {
    const url = new URL(base);
    if (ts) url.searchParams.set('topics', ts.join(','));
    if (Object.keys(s).length) url.searchParams.set('since', JSON.stringify(s));
    return url.toString();
  };
  const url = build(topics, since);
  if (url.length <= maxLength || names.length < 2) return { url, later: null };
  const [first, ...rest] = names;
  const others = Object.fromEntries(rest.map((t) => [t, since[t]]));
  // The topics= of the URL counts as the connection's first subscribe: the later one adds to it.
  return {
    url: build([first], { [first]: since[first] }),
    later: { action: 'subscribe', topics: topics ?? names, since: others, snapshot: true },
  };
}

/** Browsers and proxies refuse longer URLs; the daemon's whole request head is at most 16 KiB. */
export const MAX_URL = 8000;

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isPosition = (p) => isObject(p) && Number.isSafeInteger(p.seq) && typeof p.epoch === 'string';
const strings = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === 'string') : []);
