// The client's copy of the server's topic state (docs/protocol.md section 4): per topic, the
// entities by their string id. Pure data, no I/O, so it is tested and reused on its own.

export class TopicState {
  /** @type {Map<string, Map<string, object>>} */
  #topics = new Map();

  /** Replace the state of every topic the SNAPSHOT carries (resync or not); returns those topics. */
  applySnapshot(data) {
    const changed = [];
    for (const [topic, entities] of Object.entries(data ?? {})) {
      const map = new Map();
      if (Array.isArray(entities)) for (const entity of entities) if (entity && entity.id != null) map.set(String(entity.id), entity);
      this.#topics.set(topic, map);
      changed.push(topic);
    }
    return changed;
  }

  /** Upsert the entities of an UPDATE (whole-entity replace by id) and delete its `removed` ids. */
  applyUpdate(topic, data, removed) {
    let map = this.#topics.get(topic);
    if (!map) this.#topics.set(topic, (map = new Map()));
    if (Array.isArray(data)) for (const entity of data) if (entity && entity.id != null) map.set(String(entity.id), entity);
    if (Array.isArray(removed)) for (const id of removed) map.delete(String(id));
  }

  /** Forget every topic for which keep(topic) is false; returns the forgotten topics. */
  retain(keep) {
    const dropped = [];
    for (const topic of [...this.#topics.keys()]) {
      if (!keep(topic)) {
        this.#topics.delete(topic);
        dropped.push(topic);
      }
    }
    return dropped;
  }

  /** The entities of a topic by id (an empty map for a topic without state). Do not mutate. */
  get(topic) {
    return this.#topics.get(topic) ?? EMPTY;
  }

  has(topic) {
    return this.#topics.has(topic);
  }

  /** The topics that hold state. */
  topics() {
    return [...this.#topics.keys()];
  }

  clear() {
    this.#topics.clear();
  }
}

const EMPTY = new Map();
