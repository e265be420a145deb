// A minimal event emitter that works the same in browsers and Node (no EventTarget/CustomEvent
// wrapping, so listeners get the payload itself). A throwing listener must not break the client's
// message processing, so its error is re-thrown outside the dispatch, like DOM event listeners.

export class Emitter {
  #listeners = new Map();

  /** Add a listener; returns a function that removes it. */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Add a listener that runs at most once. */
  once(event, listener) {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  emit(event, payload) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (err) {
        if (typeof globalThis.reportError === 'function') globalThis.reportError(err);
        else setTimeout(() => { throw err; });
      }
    }
  }
}
