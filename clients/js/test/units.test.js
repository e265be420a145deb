// The pure pieces: topic state, backoff, retry policy, and that the core never loads React.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Backoff, TopicState, shouldRetry } from '../src/index.js';

test('TopicState: a snapshot section replaces the topic, other topics are untouched', () => {
  const state = new TopicState();
  state.applySnapshot({ a: [{ id: '1' }, { id: '2' }], b: [{ id: 'x' }] });
  state.applyUpdate('a', [{ id: 3 }]); // numeric ids are keyed as strings, like the server
  assert.deepEqual(state.applySnapshot({ a: [{ id: '9' }] }), ['a']);
  assert.deepEqual([...state.get('a').keys()], ['9']);
  assert.deepEqual([...state.get('b').keys()], ['x']);
  state.applyUpdate('a', [{ id: '9', v: 2 }, { id: '10' }], ['9']);
  assert.deepEqual([...state.get('a').keys()], ['10']);
  assert.deepEqual(state.retain((t) => t === 'b'), ['a']);
  assert.deepEqual(state.topics(), ['b']);
});

test('Backoff grows exponentially up to maxDelay, with jitter, and resets', () => {
  const low = new Backoff({ minDelay: 100, maxDelay: 1000, random: () => 0 });
  const high = new Backoff({ minDelay: 100, maxDelay: 1000, random: () => 1 });
  assert.deepEqual(Array.from({ length: 6 }, () => high.next()), [100, 200, 400, 800, 1000, 1000]);
  assert.deepEqual(Array.from({ length: 3 }, () => low.next()), [50, 50, 50], 'never below minDelay/2');
  high.reset();
  assert.equal(high.next(), 100);
  const real = new Backoff({ minDelay: 100, maxDelay: 1000 });
  const delays = new Set(Array.from({ length: 20 }, () => { real.reset(); real.next(); return real.next(); }));
  assert.ok(delays.size > 5, 'jittered: successive clients wait different times');
});

test('shouldRetry: refusals end the client, losses are retried', () => {
  for (const closed of [{ httpStatus: 401 }, { httpStatus: 403 }, { httpStatus: 404 }, { code: 4001 }, { code: 4003 }, { code: 1008, reason: 'invalid token' }]) {
    assert.equal(shouldRetry(closed), false, JSON.stringify(closed));
  }
  for (const closed of [{ httpStatus: 503 }, { httpStatus: 429 }, { code: 1001 }, { code: 1006 }, { code: 4008 }, { code: 1011 }, { code: 1008, reason: 'rate limit exceeded' }, { code: 4000 }]) {
    assert.equal(shouldRetry(closed), true, JSON.stringify(closed));
  }
});

test('the core module never imports react (the hook is a separate subpath)', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url)));
  assert.deepEqual(Object.keys(pkg.exports), ['.', './react']);
  assert.deepEqual(pkg.dependencies ?? {}, {}, 'no runtime dependencies');
  assert.equal(pkg.peerDependenciesMeta.react.optional, true);
  for (const file of ['index.js', 'client.js', 'state.js', 'backoff.js', 'policy.js', 'liveness.js', 'emitter.js']) {
    const source = readFileSync(new URL(`../src/${file}`, import.meta.url), 'utf8');
    assert.doesNotMatch(source, /from\s+['"](?!\.\/)/, `${file} imports only sibling modules`);
  }
});
