// The client rules of recovery (positions.js) on their own: apply in seq order, drop duplicates,
// ask once per gap, show an ALERT exactly once whether it came live past a gap, replayed, or in
// missedAlerts, and the reconnect URL (topics + since, and its fallback when too long).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Positions, recoveryUrl } from '../src/positions.js';

const update = (topic, seq) => ({ type: 'UPDATE', topic, seq, data: [] });
const alert = (topic, seq) => ({ type: 'ALERT', topic, seq, data: { n: seq } });
const snap = (positions, extra = {}) => ({
  type: 'SNAPSHOT',
  data: Object.fromEntries(Object.keys(positions).map((t) => [t, []])),
  positions: Object.fromEntries(Object.entries(positions).map(([t, [seq, epoch]]) => [t, { seq, epoch }])),
  ...extra,
});

describe('Positions', () => {
  test('applies the next seq, ignores duplicates, asks once per gap', () => {
    const p = new Positions();
    p.snapshot(snap({ a: [3, 'E1'], b: [0, 'E1'] }));
    assert.deepEqual(p.get('a'), { seq: 3, epoch: 'E1' });
    assert.deepEqual(p.message(update('a', 4)), { apply: true, emit: false, ask: false });
    assert.deepEqual(p.message(update('a', 4)), { apply: false, emit: false, ask: false }, 'a duplicate');
    assert.deepEqual(p.message(update('a', 2)), { apply: false, emit: false, ask: false }, 'older: a duplicate');
    assert.deepEqual(p.message(update('a', 6)), { apply: false, emit: false, ask: true }, 'a gap asks');
    assert.deepEqual(p.sinceOf('a'), { a: { seq: 4, epoch: 'E1' } }, 'since the last applied');
    assert.deepEqual(p.message(update('a', 7)), { apply: false, emit: false, ask: false }, 'one ask per topic');
    assert.deepEqual(p.message(update('b', 3)).ask, true, 'another topic asks on its own');
    // The answer (recovered) ends the ask; the replay is applied in order.
    assert.deepEqual(p.snapshot({ type: 'SNAPSHOT', data: {}, recovered: ['a'] }), { alerts: [], recovered: ['a'], alertsLost: [] });
    for (const seq of [5, 6, 7]) assert.equal(p.message(update('a', seq)).apply, true);
    assert.equal(p.message(update('a', 9)).ask, true, 'a new gap after the answer asks again');
    assert.deepEqual(p.get('a'), { seq: 7, epoch: 'E1' });
  });

  test('an ALERT past a gap is shown at once and never again (replay, missedAlerts)', () => {
    const p = new Positions();
    p.snapshot(snap({ a: [1, 'E'] }));
    assert.deepEqual(p.message(alert('a', 3)), { apply: false, emit: true, ask: true });
    assert.equal(p.message(alert('a', 3)).emit, false, 'the same one again');
    // Replay: 2 then 3 (already shown) then a new one.
    p.snapshot({ type: 'SNAPSHOT', data: {}, recovered: ['a'] });
    assert.deepEqual(p.message(alert('a', 2)), { apply: true, emit: true, ask: false });
    assert.deepEqual(p.message(alert('a', 3)), { apply: true, emit: false, ask: false });
    assert.equal(p.message(alert('a', 4)).emit, true);
    // Another gap answered with a section and missedAlerts: only the one not shown is returned.
    assert.equal(p.message(alert('a', 6)).emit, true);
    const answer = p.snapshot(snap({ a: [8, 'E'] }, { missedAlerts: { a: [alert('a', 5), alert('a', 6)] } }));
    assert.deepEqual(answer.alerts.map((m) => m.seq), [5]);
    assert.deepEqual(p.get('a'), { seq: 8, epoch: 'E' });
  });

  test('a new epoch replaces the position; alertsLost is reported; old servers are not numbered', () => {
    const p = new Positions();
    p.snapshot(snap({ a: [50, 'OLD'] }));
    const answer = p.snapshot(snap({ a: [2, 'NEW'] }, { alertsLost: ['a'] }));
    assert.deepEqual(answer.alertsLost, ['a']);
    assert.equal(p.message(update('a', 3)).apply, true, 'numbered from the new epoch');
    // A section without a position (a server before 1.1): every message is applied.
    p.snapshot({ type: 'SNAPSHOT', data: { a: [] } });
    assert.equal(p.get('a'), undefined);
    assert.equal(p.message(update('a', 1)).apply, true);
    // A resync replaces the positions it carries.
    p.snapshot(snap({ a: [10, 'NEW'] }, { resync: true }));
    assert.equal(p.message(update('a', 11)).apply, true);
  });

  test('a plain SNAPSHOT in a new epoch reports alertsLost (recovery URL failed, or the ask was refused)', () => {
    const p = new Positions();
    assert.deepEqual(p.snapshot(snap({ a: [5, 'OLD'], b: [1, 'OLD'] })).alertsLost, [], 'a first SNAPSHOT loses nothing');
    assert.deepEqual(p.snapshot(snap({ a: [5, 'OLD'] }, { resync: true })).alertsLost, [], 'the same epoch loses nothing');
    assert.deepEqual(p.snapshot(snap({ a: [1, 'NEW'], b: [1, 'OLD'] })).alertsLost, ['a'], 'another daemon run');
    assert.deepEqual(p.snapshot(snap({ b: [2, 'NEW'] }, { alertsLost: ['b'] })).alertsLost, ['b'], 'said by the server: once');
  });

  test('a refused ask and a new connection let the next gap ask again', () => {
    const p = new Positions();
    p.snapshot(snap({ a: [1, 'E'] }));
    assert.equal(p.message(update('a', 3)).ask, true);
    p.askFailed(['a']);
    assert.equal(p.message(update('a', 4)).ask, true);
    p.newConnection();
    assert.equal(p.message(update('a', 5)).ask, true);
    p.retain((t) => t !== 'a');
    assert.equal(p.get('a'), undefined);
  });

  test('the memory of shown ALERTs is bounded', () => {
    const p = new Positions({ alertMemory: 2 });
    p.snapshot(snap({ a: [0, 'E'] }));
    for (const seq of [2, 3, 4]) assert.equal(p.message(alert('a', seq)).emit, true);
    // 2 was forgotten (the oldest), 4 is still known.
    assert.deepEqual(p.snapshot(snap({ a: [4, 'E'] }, { missedAlerts: { a: [alert('a', 2), alert('a', 4)] } })).alerts.map((m) => m.seq), [2]);
  });
});

describe('recoveryUrl', () => {
  test('topics and since on the URL; the token stays', () => {
    const since = { cameras: { seq: 41, epoch: 'aZ3kPq9x' } };
    const { url, later } = recoveryUrl('ws://h:1/ws?token=t', ['cameras', 'weather'], since);
    const q = new URL(url).searchParams;
    assert.equal(q.get('token'), 't');
    assert.equal(q.get('topics'), 'cameras,weather');
    assert.deepEqual(JSON.parse(q.get('since')), since);
    assert.equal(later, null);
    assert.equal(new URL(recoveryUrl('ws://h:1/', null, since).url).searchParams.has('topics'), false, 'null: the default set');
  });

  test('too long: one position on the URL, the others in a subscribe after connect', () => {
    const since = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`topic-${i}`, { seq: i, epoch: 'epoch-123' }]));
    const topics = Object.keys(since);
    const { url, later } = recoveryUrl('ws://h:1/', topics, since);
    assert.ok(url.length < 200);
    const q = new URL(url).searchParams;
    assert.equal(q.get('topics'), 'topic-0');
    assert.deepEqual(Object.keys(JSON.parse(q.get('since'))), ['topic-0']);
    assert.deepEqual(later.topics, topics);
    assert.equal(later.snapshot, true);
    assert.deepEqual(Object.keys(later.since), topics.slice(1));
  });
});
