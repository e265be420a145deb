// UipdClient: one logical connection to a uipd daemon that survives reconnects. It owns the
// socket lifecycle (connect, liveness, backoff, retry policy) and keeps the topic state and the
// subscription set across sockets; the pieces it composes each do one job (state.js, backoff.js,
// policy.js, liveness.js). Protocol: docs/protocol.md in the uipd repository.

import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { Liveness } from './liveness.js';
import { handshakeStatus, shouldRetry } from './policy.js';
import { Positions, recoveryUrl } from './positions.js';
import { TopicState } from './state.js';

const OPEN = 1;
const ALL = 'all';

export class UipdClient extends Emitter {
  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' */
  status = 'idle';
  /** The server's id for the current connection (from its `connection` message). */
  clientId = null;
  /** Every topic the server offers (from its `connection` message). */
  topics = [];
  /** The subscription set the server confirmed last (SUBSCRIBED), or null before any. */
  subscriptions = null;
  /** The server's heartbeat interval in ms (advertised in its `connection` message). */
  heartbeatInterval;

  #url;
  #options;
  #WebSocket;
  #state = new TopicState();
  #positions = new Positions();
  #backoff;
  #liveness = new Liveness();
  #socket = null;
  #retryTimer = null;
  #connectTimer = null;
  #closedByUser = false;
  #closeWaiters = [];
  // What the user asked for; null = the server's default set. Re-sent after every reconnect.
  #wanted = null;
  // How this socket was opened: with topics/since on its URL (the server restores the set and
  // recovers), and the subscribe to send once it is open when not every position fit on the URL.
  #recovering = false;
  #later = null;
  // A server that refused topics=/since= (HTTP 400 or 403; a browser's WebSocket does not tell,
  // so there: two failed handshakes in a row) gets a plain handshake next, and `since` in a subscribe once open:
  // the connect SNAPSHOT's sections of those topics are skipped, the answer to it brings them.
  #plainNext = false;
  #failedRecoveries = 0;
  #gotConnection = false; // the current socket's `connection` message arrived
  #sinceAfterOpen = null;
  #skipSections = null;
  /** The fallback's subscribe with since, sent when the connect SNAPSHOT has been handled. */
  #askAfterSnapshot = null;
  #urlTopics = null;

  /**
   * @param {string} url ws://host:port/ of the daemon
   * @param {object} [options] see index.d.ts
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#options = {
      reconnect: true,
      connectTimeout: 10000,
      heartbeatInterval: 10000,
      deadAfter: 2,
      ...options,
    };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('no WebSocket implementation: pass one as options.WebSocket (e.g. the `ws` package in Node 20)');
    }
    this.#backoff = new Backoff(options.backoff);
    this.heartbeatInterval = this.#options.heartbeatInterval;
    if (options.topics) this.#wanted = new Set(options.topics);
    if (options.autoConnect !== false) this.connect();
  }

  // -- public API ------------------------------------------------------------------------------

  /** Open the connection (done by the constructor unless autoConnect is false). */
  connect() {
    if (this.#socket || this.#retryTimer) return this;
    this.#closedByUser = false;
    this.#backoff.reset();
    this.#open();
    return this;
  }

  /** The entities of a topic by id (a read-only view; empty for a topic without state). */
  get(topic) {
    return this.#state.get(topic);
  }

  /** The entities of a topic as an array. */
  entities(topic) {
    return [...this.#state.get(topic).values()];
  }

  /** The topics the client holds state for. */
  stateTopics() {
    return this.#state.topics();
  }

  /** The last position applied for a topic (`{seq, epoch}`), or undefined when the server sent none. */
  position(topic) {
    const p = this.#positions.get(topic);
    return p ? { ...p } : undefined;
  }

  /** Add topics to the subscription set (the first call replaces the server's default set). */
  subscribe(topics) {
    topics = list(topics);
    if (this.#wanted === null) this.#wanted = new Set();
    for (const t of topics) this.#wanted.add(t);
    this.#prune(); // leaving the default set `all` drops the topics not named
    this.#send({ action: 'subscribe', topics, snapshot: true });
    return this;
  }

  /** Remove topics from the subscription set; their state is forgotten at once. */
  unsubscribe(topics) {
    topics = list(topics);
    const wanted = this.#wanted ?? new Set([ALL]);
    // Mirror the server: dropping a concrete topic while holding `all` turns `all` into every
    // current topic but the dropped ones.
    if (wanted.has(ALL) && topics.some((t) => t !== ALL)) {
      wanted.delete(ALL);
      for (const t of this.topics) wanted.add(t);
    }
    for (const t of topics) wanted.delete(t);
    this.#wanted = wanted;
    this.#prune();
    this.#send({ action: 'unsubscribe', topics });
    return this;
  }

  /** Ask the server for the current state of some topics again (all subscribed ones by default). */
  requestSnapshot(topics) {
    this.#send(topics ? { action: 'snapshot', topics: list(topics) } : { action: 'snapshot' });
  }

  /** Send a raw protocol message; returns false when not connected. */
  send(message) {
    return this.#send(message);
  }

  /** Close for good (no reconnect). Resolves once the socket is closed. */
  close(code = 1000, reason = 'client closing') {
    this.#closedByUser = true;
    this.#clearTimers();
    const socket = this.#socket;
    const done = new Promise((resolve) => {
      if (!socket) return resolve();
      this.#closeWaiters.push(resolve);
      // A dead peer never answers the close frame: do not wait for it forever.
      setTimeout(() => this.#abandon(socket), 2000).unref?.();
    });
    this.#socket = null; // a later connect() opens a new socket at once
    if (socket) {
      socket.onmessage = null;
      socket.onerror = () => {};
      try {
        socket.close(code, reason);
      } catch {
        this.#abandon(socket);
      }
    }
    if (this.status !== 'closed') this.#finish({ code, reason });
    return done;
  }

  // -- socket lifecycle ------------------------------------------------------------------------

  #open() {
    this.#retryTimer = null;
    this.#setStatus('connecting', { attempt: this.#backoff.attempt });
    let socket;
    try {
      socket = new this.#WebSocket(this.#openUrl());
    } catch (err) {
      // A malformed URL can never work.
      this.emit('error', { code: 'bad_url', message: String(err?.message ?? err), fatal: true });
      this.#finish({ code: 1006, reason: String(err?.message ?? err), fatal: true });
      return;
    }
    this.#socket = socket;
    this.#gotConnection = false;
    this.#positions.newConnection();
    this.#askAfterSnapshot = null; // an ask of the old connection is not sent on this one
    let httpStatus;
    // Until the server's `connection` message arrives we do not know its heartbeat: a handshake
    // that stalls (frozen daemon, black-holed port) is cut by connectTimeout instead.
    this.#connectTimer = setTimeout(() => this.#drop(socket, 'connect timeout'), this.#options.connectTimeout);
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#onMessage(event.data);
    };
    socket.onerror = (event) => {
      httpStatus ??= handshakeStatus(event);
    };
    socket.onclose = (event) => {
      this.#resolveClosed(socket);
      if (socket === this.#socket) this.#onClosed({ code: event.code, reason: event.reason ?? '', httpStatus });
    };
  }

  #onMessage(data) {
    this.#liveness.seen();
    let msg;
    try {
      msg = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch {
      return; // the protocol only sends JSON objects; ignore anything else
    }
    switch (msg?.type) {
      case 'connection':
        return this.#onConnection(msg);
      case 'SNAPSHOT':
        return this.#onSnapshot(msg);
      case 'UPDATE': {
        const { apply, ask } = this.#positions.message(msg);
        if (apply) {
          this.#state.applyUpdate(msg.topic, msg.data, msg.removed);
          this.emit('update', msg);
          this.emit('change', { topic: msg.topic, reason: 'update' });
        }
        if (ask) this.#askAgain(msg.topic);
        return;
      }
      case 'ALERT': {
        const { emit, ask } = this.#positions.message(msg);
        if (emit) this.emit('alert', msg);
        if (ask) this.#askAgain(msg.topic);
        return;
      }
      case 'SUBSCRIBED':
        this.subscriptions = msg.topics;
        return this.emit('subscribed', msg.topics);
      case 'PONG':
        return this.emit('pong', msg);
      case 'ERROR': {
        const error = msg.error ?? {};
        // A subscribe naming an unknown topic changed nothing on the server: forget it here too,
        // or it would be re-sent after every reconnect.
        if (error.code === 'unknown_topic' && Array.isArray(error.topics) && this.#wanted) {
          for (const t of error.topics) this.#wanted.delete(t);
        }
        // An ask that was refused (rate_limited, ...) is not coming: the next gap asks again.
        this.#positions.askFailed(error.topics);
        return this.emit('error', { ...error, fatal: false });
      }
      default:
        return this.emit('message', msg);
    }
  }

  #onSnapshot(msg) {
    const skip = this.#skipSections;
    if (skip) {
      this.#skipSections = null;
      msg = { ...msg, data: without(msg.data, skip), positions: without(msg.positions, skip) };
    }
    const { alerts, recovered, alertsLost } = this.#positions.snapshot(msg);
    const changed = this.#state.applySnapshot(msg.data);
    if (this.#recovering && this.#wanted !== null && !('positions' in msg)) {
      // A server before version 1.1 ignored topics= on the URL: restore the set as it expects.
      this.#recovering = false;
      this.#restoreSubscriptions();
    }
    // A section for a topic we no longer want (a request raced an unsubscribe) is not kept.
    this.#prune();
    this.emit('snapshot', msg);
    for (const topic of changed) if (this.#state.has(topic)) this.emit('change', { topic, reason: msg.resync ? 'resync' : 'snapshot' });
    if (this.#urlTopics && this.#recovering) {
      // The set named on the URL is in force (the connect SNAPSHOT is its answer): said once, as
      // a SUBSCRIBED reply would have said it.
      this.#urlTopics = null;
      this.emit('subscribed', this.subscriptions);
    }
    for (const alert of alerts) this.emit('alert', alert);
    if (recovered.length) this.emit('recovered', recovered);
    if (alertsLost.length) this.emit('alertsLost', alertsLost);
    const ask = this.#askAfterSnapshot;
    if (ask) {
      this.#askAfterSnapshot = null;
      this.#send(ask);
    }
  }

  /** Messages of a topic were lost on the way: ask the server for them (section 8). */
  #askAgain(topic) {
    const since = this.#positions.sinceOf(topic);
    if (!since) return;
    // The first subscribe of a connection replaces the server's default set: a client that never
    // chose a set names the one the server gave it, so the ask adds nothing and drops nothing.
    const topics = this.#wanted === null ? this.#positions.topics() : this.#wanted.has(ALL) ? [ALL] : [topic];
    this.#send({ action: 'subscribe', topics, since });
  }

  /** The plain-handshake fallback: the subscribe that restores the set and asks for the positions. */
  #recoverAfterOpen(since) {
    const offered = (t) => this.topics.includes(t);
    since = Object.fromEntries(Object.entries(since).filter(([t]) => offered(t)));
    const names = Object.keys(since);
    const topics = this.#wanted === null ? names : [...this.#wanted].filter((t) => t === ALL || offered(t));
    if (!names.length || !topics.length) {
      if (this.#wanted !== null) this.#restoreSubscriptions();
      return;
    }
    this.#skipSections = new Set(names);
    this.#positions.asking(names);
    // Sent once the connect SNAPSHOT is in: while it is still on its way the server refuses a
    // request for another (ERROR rate_limited, one SNAPSHOT in flight at a time), and its sections
    // for these topics are skipped, so the refused ask would leave them stale and a restart untold.
    this.#askAfterSnapshot = { action: 'subscribe', topics, since, snapshot: true };
  }

  #restoreSubscriptions() {
    // The first subscribe of a connection replaces the default set; snapshot:true brings the
    // state of topics the default set did not cover.
    const topics = [...this.#wanted].filter((t) => t === ALL || this.topics.includes(t));
    this.#send({ action: 'subscribe', topics, snapshot: true });
  }

  #onConnection(msg) {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    this.#backoff.reset();
    this.clientId = msg.clientId ?? null;
    this.topics = Array.isArray(msg.topics) ? msg.topics : [];
    // topics= on the URL is the connection's first subscribe; no SUBSCRIBED confirms it.
    this.subscriptions = this.#urlTopics ? [...new Set(this.#urlTopics)].sort() : null;
    if (Number.isFinite(msg.heartbeatInterval) && msg.heartbeatInterval > 0) this.heartbeatInterval = msg.heartbeatInterval;
    const socket = this.#socket;
    this.#liveness.start(
      this.heartbeatInterval,
      () => this.#send({ action: 'ping' }),
      () => this.#drop(socket, 'heartbeat timeout'),
      { deadAfter: this.#options.deadAfter },
    );
    // Topics the (possibly restarted) server no longer offers cannot be kept up to date.
    this.#state.retain((t) => this.topics.includes(t)).forEach((topic) => this.emit('change', { topic, reason: 'removed' }));
    this.#positions.retain((t) => this.topics.includes(t));
    this.#gotConnection = true;
    this.#failedRecoveries = 0;
    if (this.#later) this.#send(this.#later);
    else if (this.#sinceAfterOpen) this.#recoverAfterOpen(this.#sinceAfterOpen);
    else if (this.#wanted !== null && !this.#recovering) this.#restoreSubscriptions();
    this.#later = this.#sinceAfterOpen = null;
    this.#setStatus('open', { clientId: this.clientId });
    this.emit('connection', msg);
  }

  #onClosed({ code, reason, httpStatus }) {
    this.#socket = null;
    this.#clearTimers();
    if (this.#closedByUser) return;
    if (this.#recovering && !this.#gotConnection) {
      // Refused our topics=/since= (a topic gone after a restart, `all` outside a JWT claim)?
      // Once more without them; a refusal of the client itself comes again and is final then.
      this.#failedRecoveries += 1;
      // The native WebSocket hides every HTTP status: there two failures in a row count as one.
      const hidden = httpStatus === undefined && this.#WebSocket === globalThis.WebSocket;
      if (httpStatus === 400 || httpStatus === 403 || (hidden && this.#failedRecoveries >= 2)) {
        this.#plainNext = true;
        this.#failedRecoveries = 0;
        httpStatus = undefined;
      }
    }
    const retry = this.#options.reconnect !== false && shouldRetry({ code, reason, httpStatus });
    if (!retry) {
      const fatal = !shouldRetry({ code, reason, httpStatus });
      if (fatal) {
        const message = httpStatus ? `handshake refused with HTTP ${httpStatus}` : `connection refused: ${code} ${reason}`.trim();
        this.emit('error', { code: 'refused', message, status: httpStatus, closeCode: code, fatal: true });
      }
      this.#finish({ code, reason, httpStatus, fatal });
      return;
    }
    const delay = this.#backoff.next();
    this.#setStatus('reconnecting', { code, reason, httpStatus, attempt: this.#backoff.attempt, delay });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  /** Give up on a socket that stalled or went silent, and go through the normal close path. */
  #drop(socket, reason) {
    if (socket !== this.#socket) return;
    this.#abandon(socket);
    this.#onClosed({ code: 4000, reason });
  }

  /** Stop listening to a socket and tear it down without waiting for the peer. */
  #abandon(socket) {
    // Keep a no-op error listener: Node's `ws` throws an 'error' nobody listens to (it emits one
    // when a socket still in its handshake is torn down).
    socket.onmessage = null;
    socket.onerror = () => {};
    socket.onclose = () => this.#resolveClosed(socket);
    try {
      if (typeof socket.terminate === 'function') socket.terminate(); // Node's `ws`: no closing handshake
      else socket.close(4000, 'dead link');
    } catch {
      /* already closed */
    }
    this.#resolveClosed(socket);
  }

  #resolveClosed(socket) {
    if (socket === this.#socket) return; // close() detaches its socket first
    for (const resolve of this.#closeWaiters.splice(0)) resolve();
  }

  #finish(detail) {
    this.#clearTimers();
    this.#setStatus('closed', detail);
    this.emit('close', detail);
  }

  #clearTimers() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#connectTimer);
    this.#retryTimer = this.#connectTimer = null;
    this.#liveness.stop();
  }

  // -- helpers ---------------------------------------------------------------------------------

  #setStatus(status, detail = {}) {
    this.status = status;
    this.emit('status', { status, ...detail });
  }

  #send(message) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(message));
    return true;
  }

  #prune() {
    const wanted = this.#wanted;
    if (wanted === null || wanted.has(ALL)) return;
    this.#positions.retain((t) => wanted.has(t));
    this.#state.retain((t) => wanted.has(t)).forEach((topic) => this.emit('change', { topic, reason: 'unsubscribed' }));
  }

  #connectUrl() {
    const token = this.#options.token;
    if (!token) return this.#url;
    const url = new URL(this.#url);
    url.searchParams.set('token', token);
    return url.toString();
  }

  /** The URL of the next handshake: with the set, and the positions to recover once we have some. */
  #openUrl() {
    const since = this.#positions.since((t) => this.#wanted === null || this.#wanted.has(ALL) || this.#wanted.has(t));
    const topics = this.#wanted === null ? null : [...this.#wanted].filter((t) => t === ALL || !this.topics.length || this.topics.includes(t));
    this.#later = null;
    // Also the first connection names its set on the URL: one SNAPSHOT of those topics, rather
    // than one of the server's default set and then one of ours.
    const positioned = (Object.keys(since).length > 0 || topics !== null) && (topics === null || topics.length > 0);
    this.#recovering = positioned && !this.#plainNext;
    this.#sinceAfterOpen = positioned && this.#plainNext ? since : null;
    this.#plainNext = false;
    this.#urlTopics = this.#recovering ? topics : null;
    if (!this.#recovering) return this.#connectUrl();
    const { url, later } = recoveryUrl(this.#connectUrl(), topics, since);
    this.#later = later;
    return url;
  }
}

/** An object without the keys in `skip` (undefined stays undefined). */
function without(obj, skip) {
  if (!obj || typeof obj !== 'object') return obj;
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !skip.has(k)));
}

function list(topics) {
  return typeof topics === 'string' ? [topics] : [...topics];
}
