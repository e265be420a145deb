// A loopback TCP proxy in front of the daemon's WebSocket port whose links a test can cut (every
// open connection destroyed at once, no close frame: a phone in a tunnel), keep down for a while,
// point at another daemon, whose server-to-client stream can lose chosen WebSocket frames (a gap
// in a topic's seq), and that can refuse chosen handshakes with HTTP 400 (a server that does not
// take the URL). The same tool as tests/client/proxy.py of the Python client.

import net from 'node:net';

export class CuttableProxy {
  /**
   * @param {number} targetPort
   * @param {{drop?: (payload: Buffer) => boolean, refuse?: (requestLine: string) => boolean}} [options]
   */
  constructor(targetPort, { drop, refuse } = {}) {
    this.targetPort = targetPort;
    this.drop = drop ?? null;
    this.refuse = refuse ?? null;
    this.refused = 0;
    this.dropped = [];
    this.connections = 0;
    this.down = false;
    this.#server = net.createServer((socket) => this.#serve(socket));
  }

  #server;
  #links = new Set();
  #waiting = [];

  async start() {
    await new Promise((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = this.#server.address().port;
    return this;
  }

  url(path = '/') {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  /** Drop every open link; with stayDown, new ones wait until restore(). */
  cut({ stayDown = false } = {}) {
    if (stayDown) this.down = true;
    for (const sockets of this.#links) for (const s of sockets) s.destroy();
    this.#links.clear();
  }

  restore() {
    this.down = false;
    for (const go of this.#waiting.splice(0)) go();
  }

  close() {
    this.cut();
    for (const go of this.#waiting.splice(0)) go();
    return new Promise((resolve) => this.#server.close(resolve));
  }

  #serve(client) {
    client.on('error', () => {});
    if (this.down) {
      client.pause();
      this.#waiting.push(() => this.#serve(client));
      return;
    }
    if (this.refuse) {
      // Read the request head first: refused, or replayed to the daemon.
      let head = Buffer.alloc(0);
      const onData = (data) => {
        head = Buffer.concat([head, data]);
        if (head.indexOf('\r\n\r\n') < 0) return;
        client.off('data', onData);
        client.pause();
        if (this.refuse(head.toString('latin1').split('\r\n', 1)[0])) {
          this.refused += 1;
          client.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        } else {
          this.#link(client, head);
        }
      };
      client.on('data', onData);
      client.resume(); // paused while the proxy was down
      return;
    }
    this.#link(client, null);
  }

  #link(client, head) {
    const server = net.connect(this.targetPort, '127.0.0.1');
    if (head) server.write(head);
    server.on('error', () => client.destroy());
    const link = [client, server];
    this.#links.add(link);
    this.connections += 1;
    const end = () => {
      this.#links.delete(link);
      client.destroy();
      server.destroy();
    };
    client.on('close', end);
    server.on('close', end);
    client.resume();
    client.pipe(server);
    if (!this.drop) {
      server.pipe(client);
      return;
    }
    let buf = Buffer.alloc(0);
    let headDone = false; // the HTTP answer of the handshake passes as it is
    server.on('data', (data) => {
      buf = Buffer.concat([buf, data]);
      if (!headDone) {
        const at = buf.indexOf('\r\n\r\n');
        if (at < 0) return;
        client.write(buf.subarray(0, at + 4));
        buf = buf.subarray(at + 4);
        headDone = true;
      }
      for (let frame = frameLength(buf); frame; frame = frameLength(buf)) {
        const [whole, payloadAt] = frame;
        const payload = buf.subarray(payloadAt, whole);
        if (this.drop(payload)) this.dropped.push(Buffer.from(payload));
        else client.write(buf.subarray(0, whole));
        buf = buf.subarray(whole);
      }
    });
  }
}

/** [end of the first whole frame, start of its payload] of an unmasked server frame, or null. */
function frameLength(buf) {
  if (buf.length < 2) return null;
  let n = buf[1] & 0x7f;
  let at = 2;
  if (n === 126) {
    if (buf.length < 4) return null;
    n = buf.readUInt16BE(2);
    at = 4;
  } else if (n === 127) {
    if (buf.length < 10) return null;
    n = Number(buf.readBigUInt64BE(2));
    at = 10;
  }
  return buf.length >= at + n ? [at + n, at] : null;
}
