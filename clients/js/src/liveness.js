// Dead-link detection. A TCP connection whose peer vanished (suspended laptop, NAT timeout, a
// frozen daemon) can stay "open" for minutes; WebSocket pings from the server are answered by the
// browser itself and invisible to scripts. So the client probes with the protocol's
// {"action":"ping"} when the link has been quiet for one heartbeat interval, and declares the link
// dead when nothing at all (message or PONG) arrived for `deadAfter` intervals.

export class Liveness {
  #timer = null;
  #lastSeen = 0;
  #lastPing = 0;

  /**
   * @param {number} interval the server's heartbeatInterval, in ms
   * @param {() => void} ping sends {"action":"ping"}
   * @param {() => void} dead called once when the link is dead
   */
  start(interval, ping, dead, { deadAfter = 2, now = Date.now } = {}) {
    this.stop();
    this.#lastSeen = this.#lastPing = now();
    // Check four times per interval so that death is noticed within 2.25 intervals, not 3.
    this.#timer = setInterval(() => {
      const t = now();
      if (t - this.#lastSeen >= deadAfter * interval) {
        this.stop();
        dead();
      } else if (t - this.#lastSeen >= interval && t - this.#lastPing >= interval) {
        this.#lastPing = t;
        ping();
      }
    }, Math.max(10, interval / 4));
  }

  /** Any message from the server proves the link is alive. */
  seen(now = Date.now()) {
    this.#lastSeen = now;
  }

  stop() {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
