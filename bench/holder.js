'use strict';
// Holds N idle WebSocket clients for bench/many.py, with the kit's minimal client (loadgen/rawws.js):
//   node bench/holder.js RAWWS_JS WS_URL CLIENTS SOURCE_IP [CONCURRENCY]
// Prints one JSON line when all are connected ({"ready":n,"failed":f,"retried":r,"reasons":{...},"ms":t}), then, for every
// broadcast ALERT whose data carries "mark":K, one line once every ready client has it:
// {"mark":K,"firstAt":ms,"lastAt":ms,"got":n} (wall clock in ms, the publisher's clock too).
// Pings are answered by rawws.js.  The server's close frames are counted by code (bench/drain.py):
// once every ready client's connection has ended it prints {"allClosed":n,...}, and when stdin
// closes (then it exits) or on SIGTERM/SIGINT it prints {"closes":{"1001":n,...},
// "closeFrames":n,"firstCloseAt":ms,"lastCloseAt":ms,"lastEndAt":ms,"open":n}: closeFrames counts
// the close frames received, lastCloseAt when the last one arrived, lastEndAt when the last TCP
// connection ended; "closes" keys "none" for connections that ended with no close frame.
const BaseWS = require(process.argv[2]);
const [url, total, ip] = [process.argv[3], Number(process.argv[4]), process.argv[5]];
const concurrency = Number(process.argv[6] || 200);
const { performance } = require('perf_hooks');
const nowMs = () => performance.timeOrigin + performance.now();
const MARK = Buffer.from('"mark":');
let ready = 0, failed = 0, next = 0;
const marks = new Map(); // mark -> {got, firstAt, lastAt}
const clients = [];
const closes = {}; // close code (or "none") -> connections of ready clients that ended with it
let closeFrames = 0, firstCloseAt = null, lastCloseAt = null, lastEndAt = null, ended = 0, allReady = false;
// rawws.js answers a close frame at once (a close frame of its own, then end()): that is the
// moment the server's close frame was parsed.
class RawWS extends BaseWS {
  _sendFrame(op, payload) {
    if (op === 0x8 && !this._closeSent && this._gotClose === undefined) {
      const t = nowMs();
      this._gotClose = this._closeCode;
      closeFrames++; if (firstCloseAt === null) firstCloseAt = t; lastCloseAt = t;
    }
    return super._sendFrame(op, payload);
  }
}
function summary() {
  return { closes, closeFrames, firstCloseAt, lastCloseAt, lastEndAt, open: ready - ended };
}
function maybeAllClosed() {
  if (allReady && ended === ready) process.stdout.write(JSON.stringify({ allClosed: ended, ...summary() }) + '\n');
}

// A 503 (the daemon's admission under overload) is retried after RETRY_AFTER_MS, as a client
// honouring Retry-After would (uipd sends 5 s by default), up to MAX_ATTEMPTS times; any other
// failure is final and counted by reason in the ready line ("reasons").
const RETRY_AFTER_MS = Number(process.env.HOLDER_RETRY_AFTER_MS || 5000);
const MAX_ATTEMPTS = 5;
const reasons = {};
let retried = 0;
const reason = (key) => { reasons[key] = (reasons[key] || 0) + 1; };

function open(attempt = 1) {
  return new Promise((resolve) => {
    const ws = new RawWS(url, { handshakeTimeout: 60000, localAddress: ip });
    let seen = 0, done = false, status = null;
    const finish = (ok, why) => {
      if (done) return;
      done = true;
      if (!ok && status === 503 && attempt < MAX_ATTEMPTS) {
        retried++;
        setTimeout(() => open(attempt + 1).then(resolve), RETRY_AFTER_MS);
        return;
      }
      if (ok) ready++; else { failed++; reason(why); }
      resolve();
    };
    ws.on('message', (data) => {
      if (seen < 2) { if (++seen === 2) finish(true); return; } // connection, SNAPSHOT
      const i = data.indexOf(MARK);
      if (i < 0) return;
      const k = parseInt(data.toString('latin1', i + MARK.length, i + MARK.length + 12), 10);
      const t = nowMs();
      let m = marks.get(k);
      if (!m) { m = { got: 0, firstAt: t, lastAt: t }; marks.set(k, m); }
      m.got++; m.lastAt = t;
      if (m.got === ready) process.stdout.write(JSON.stringify({ mark: k, firstAt: m.firstAt, lastAt: m.lastAt, got: m.got }) + '\n');
    });
    ws.on('close', () => {
      if (!done) { finish(false, status ? `http ${status}` : 'closed before the snapshot'); return; }
      if (seen < 2) return; // not a ready client
      const key = ws._gotClose === undefined ? 'none' : String(ws._gotClose);
      closes[key] = (closes[key] || 0) + 1;
      ended++; lastEndAt = nowMs();
      maybeAllClosed();
    });
    ws.on('error', (e) => finish(false, (e && (e.code || e.message)) || 'error'));
    ws.on('unexpected-response', (_req, res) => { status = res && res.statusCode; finish(false, `http ${status}`); });
    clients.push(ws);
  });
}

(async () => {
  const t0 = nowMs();
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, async () => {
    while (next < total) { next++; await open(); }
  }));
  process.stdout.write(JSON.stringify({ ready, failed, retried, reasons, ms: Math.round(nowMs() - t0) }) + '\n');
  allReady = true;
  if (ended) maybeAllClosed();
})();
const stop = () => { process.stdout.write(JSON.stringify(summary()) + '\n'); process.exit(0); };
process.stdin.on('end', stop);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.resume();
