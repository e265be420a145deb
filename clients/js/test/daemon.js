// A real uipd process for the tests: spawned from the repository's venv on free ports with a
// temporary config, driven through its HTTP API. Shared by clients/js and clients/e2e.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const UIPD = process.env.UIPD_BIN ?? join(REPO, '.venv/bin/uipd');

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const toml = (value) => JSON.stringify(value); // JSON strings and string arrays are valid TOML

function configText({ port, apiPort, topics, sim, heartbeat, apiKey, extra }) {
  const lines = [
    '[server]',
    'host = "127.0.0.1"',
    `port = ${port}`,
    `topics = ${toml(topics)}`,
    'drain_timeout = 1.0',
    '[heartbeat]',
    `interval = ${heartbeat.interval.toFixed(3)}`,
    `timeout = ${heartbeat.timeout.toFixed(3)}`,
    '[api]',
    'host = "127.0.0.1"',
    `port = ${apiPort}`,
    `key = ${toml(apiKey)}`,
    '[log]',
    'level = "warning"',
  ];
  if (sim) {
    lines.push('[sources.city]', 'plugin = "sim"', 'seed = 20251129', `speed = ${Number(sim.speed ?? 10).toFixed(1)}`);
    if (sim.cameras) lines.push(`cameras = ${sim.cameras}`);
  }
  if (extra) lines.push(extra);
  return lines.join('\n') + '\n';
}

export class Daemon {
  /**
   * @param {{topics?: string[], sim?: false | {speed?: number, cameras?: number},
   *          heartbeat?: {interval: number, timeout: number}, apiKey?: string, extra?: string}} [options]
   */
  static async start(options = {}) {
    const daemon = new Daemon({
      topics: options.topics ?? ['news', 'traffic'],
      sim: options.sim ?? false,
      heartbeat: options.heartbeat ?? { interval: 10, timeout: 30 },
      apiKey: options.apiKey ?? '',
      extra: options.extra,
      port: await freePort(),
      apiPort: await freePort(),
    });
    await daemon.spawn();
    return daemon;
  }

  constructor(settings) {
    this.settings = settings;
    this.dir = mkdtempSync(join(tmpdir(), 'uipd-test-'));
    this.configPath = join(this.dir, 'uipd.toml');
    writeFileSync(this.configPath, configText(settings));
    this.proc = null;
    this.stderr = '';
  }

  get port() { return this.settings.port; }
  get apiPort() { return this.settings.apiPort; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/`; }
  get apiUrl() { return `http://127.0.0.1:${this.apiPort}`; }

  /** Start the process (again, on the same ports) and wait until /readyz answers 200. */
  async spawn() {
    this.stderr = '';
    const proc = spawn(UIPD, ['run', '-c', this.configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    proc.stderr.on('data', (chunk) => { this.stderr += chunk; });
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    this.exited = exited;
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`uipd exited with ${proc.exitCode}:\n${this.stderr}`);
      try {
        const res = await fetch(`${this.apiUrl}/readyz`);
        if (res.status === 200) return this;
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    throw new Error(`uipd did not become ready:\n${this.stderr}`);
  }

  async api(path, body) {
    const headers = { 'content-type': 'application/json' };
    if (this.settings.apiKey) headers.authorization = `Bearer ${this.settings.apiKey}`;
    const res = await fetch(this.apiUrl + path, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  publish(body) { return this.api('/api/publish', body); }
  stats() { return this.api('/api/stats'); }

  /** Stop the process with a signal and wait for it to exit (SIGKILL: no drain, like a crash). */
  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }

  pause() { this.proc.kill('SIGSTOP'); }
  resume() { this.proc.kill('SIGCONT'); }

  async close() {
    if (this.proc && this.proc.signalCode === 'SIGSTOP') this.resume();
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve when check() is truthy (polled), or reject after `timeout` ms with `what` in the message. */
export async function until(check, { timeout = 5000, interval = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** The next `event` emitted by an emitter with an `on` that returns an unsubscribe function. */
export function next(emitter, event, { timeout = 5000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no ${event} event within ${timeout} ms`)); }, timeout);
    const off = emitter.on(event, (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}
