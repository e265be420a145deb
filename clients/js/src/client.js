// UipdClient: one logical connection to a uipd daemon that survives reconnects. It owns the
// socket lifecycle (connect, liveness, backoff, retry policy) and keeps the topic state and the
// subscription set across sockets; the pieces it composes each do one job (state.js, backoff.js,
// policy.js, liveness.js). Protocol: docs/protocol.md in the uipd repository.

import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { Liveness } from './liveness.js';
import { handshakeStatus, shouldRetry } from './policy.js';
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
  #backoff;
  #liveness = new Liveness();
  #socket = null;
  #retryTimer = null;
  #connectTimer = null;
  #closedByUser = false;
  #closeWaiters = [];
  // What the user asked for; null = the server's default set. Re-sent after every reconnect.
  #wanted = null;

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
      socket = new this.#WebSocket(this.#connectUrl());
    } catch (err) {
      // A malformed URL can never work.
      this.emit('error', { code: 'bad_url', message: String(err?.message ?? err), fatal: true });
      this.#finish({ code: 1006, reason: String(err?.message ?? err), fatal: true });
      return;
    }
    this.#socket = socket;
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
      case 'SNAPSHOT': {
        const changed = this.#state.applySnapshot(msg.data);
        // A section for a topic we no longer want (a request raced an unsubscribe) is not kept.
        this.#prune();
        this.emit('snapshot', msg);
        for (const topic of changed) if (this.#state.has(topic)) this.emit('change', { topic, reason: msg.resync ? 'resync' : 'snapshot' });
        return;
      }
      case 'UPDATE':
        this.#state.applyUpdate(msg.topic, msg.data, msg.removed);
        this.emit('update', msg);
        this.emit('change', { topic: msg.topic, reason: 'update' });
        return;
      case 'ALERT':
        return this.emit('alert', msg);
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
        return this.emit('error', { ...error, fatal: false });
      }
      default:
        return this.emit('message', msg);
    }
  }

  #onConnection(msg) {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    this.#backoff.reset();
    this.clientId = msg.clientId ?? null;
    this.topics = Array.isArray(msg.topics) ? msg.topics : [];
    this.subscriptions = null;
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
    if (this.#wanted !== null) {
      // Restore the subscription set: the first subscribe of a connection replaces the default
      // set; snapshot:true brings the state of topics the default set did not cover.
      const topics = [...this.#wanted].filter((t) => t === ALL || this.topics.includes(t));
      this.#send({ action: 'subscribe', topics, snapshot: true });
    }
    this.#setStatus('open', { clientId: this.clientId });
    this.emit('connection', msg);
  }

  #onClosed({ code, reason, httpStatus }) {
    this.#socket = null;
    this.#clearTimers();
    if (this.#closedByUser) return;
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
    this.#state.retain((t) => wanted.has(t)).forEach((topic) => this.emit('change', { topic, reason: 'unsubscribed' }));
  }

  #connectUrl() {
    const token = this.#options.token;
    if (!token) return this.#url;
    const url = new URL(this.#url);
    url.searchParams.set('token', token);
    return url.toString();
  }
}

function list(topics) {
  return typeof topics === 'string' ? [topics] : [...topics];
}
