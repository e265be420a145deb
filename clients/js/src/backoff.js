// Reconnect delays: exponential growth with "full jitter" (a random delay in [0, cap]) so that
// thousands of browsers dropped by the same daemon restart do not come back in the same instant.

export class Backoff {
  constructor({ minDelay = 500, maxDelay = 30000, factor = 2, random = Math.random } = {}) {
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.factor = factor;
    this.random = random;
    this.attempt = 0;
  }

  /** The delay (ms) before the next attempt; each call grows the cap until maxDelay. */
  next() {
    const cap = Math.min(this.maxDelay, this.minDelay * this.factor ** this.attempt);
    this.attempt += 1;
    // Never below minDelay/2: a zero delay would hammer a daemon that refuses connections at once.
    return Math.round(this.minDelay / 2 + this.random() * Math.max(0, cap - this.minDelay / 2));
  }

  reset() {
    this.attempt = 0;
  }
}
