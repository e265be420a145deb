// Types of uipd-client (hand-written; the wire protocol is docs/protocol.md of uipd).

/** A topic entity: any JSON object with a string id. */
export interface Entity {
  id: string;
  [key: string]: unknown;
}

export type Status = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ConnectionMessage {
  type: 'connection';
  message: string;
  timestamp: string;
  /** Milliseconds. */
  heartbeatInterval: number;
  clientId: string;
  topics: string[];
}

/** A topic's state after its message `seq` of the numbering run `epoch` (protocol section 8). */
export interface Position {
  seq: number;
  epoch: string;
}

export interface SnapshotMessage {
  type: 'SNAPSHOT';
  data: Record<string, Entity[]>;
  /** The position of every section in `data` (servers of protocol 1.1). */
  positions?: Record<string, Position>;
  /** Answer to a recovery: topics resumed by the replay that follows (their state is kept). */
  recovered?: string[];
  /** Answer to a recovery: the ALERTs of topics that got a section instead of a replay. */
  missedAlerts?: Record<string, AlertMessage[]>;
  /** Answer to a recovery: topics for which alerts may have been missed. */
  alertsLost?: string[];
  timestamp: string;
  /** True when it replaces UPDATEs the server dropped for a slow client. */
  resync?: boolean;
}

export interface UpdateMessage {
  type: 'UPDATE';
  topic: string;
  data: Entity[];
  removed?: string[];
  timestamp: string;
  seq?: number;
}

export interface AlertMessage {
  type: 'ALERT';
  topic: string;
  data: Record<string, unknown>;
  timestamp: string;
  seq?: number;
}

export interface StatusEvent {
  status: Status;
  /** Reconnect attempt number (connecting, reconnecting). */
  attempt?: number;
  /** Milliseconds until the next attempt (reconnecting). */
  delay?: number;
  /** Close code of the socket that was lost (4000 for a dead link or connect timeout, set by the client). */
  code?: number;
  reason?: string;
  /** HTTP status of a refused handshake, when the WebSocket implementation reveals it (Node's `ws` does, browsers do not). */
  httpStatus?: number;
  clientId?: string | null;
  fatal?: boolean;
}

export interface CloseEvent {
  code?: number;
  reason?: string;
  httpStatus?: number;
  /** True when the server refused the client (auth, unknown path): it will not retry. */
  fatal?: boolean;
}

export interface ErrorEvent {
  /** A server ERROR code (`unknown_topic`, `bad_request`, `rate_limited`, ...) or `refused` / `bad_url`. */
  code: string;
  message: string;
  topics?: string[];
  status?: number;
  closeCode?: number;
  /** True when the client gave up because of it. */
  fatal: boolean;
}

export interface ChangeEvent {
  topic: string;
  reason: 'snapshot' | 'resync' | 'update' | 'unsubscribed' | 'removed';
}

export interface UipdEvents {
  status: StatusEvent;
  connection: ConnectionMessage;
  snapshot: SnapshotMessage;
  update: UpdateMessage;
  alert: AlertMessage;
  /** A topic's state changed (after snapshot, update, unsubscribe). */
  change: ChangeEvent;
  /** The server's whole subscription set, sorted. */
  subscribed: string[];
  pong: { type: 'PONG'; timestamp: string };
  error: ErrorEvent;
  /** The client stopped for good: close() or a refusal. */
  close: CloseEvent;
  /** A message of a type this version does not know. */
  message: Record<string, unknown>;
  /** After a reconnect or a gap: these topics were resumed by replay (nothing was missed). */
  recovered: string[];
  /** After a reconnect or a gap: alerts of these topics may have been missed (e.g. the server restarted). */
  alertsLost: string[];
}

export interface BackoffOptions {
  /** First delay cap in ms (default 500). */
  minDelay?: number;
  /** Largest delay in ms (default 30000). */
  maxDelay?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  random?: () => number;
}

export interface UipdClientOptions {
  /** A WebSocket constructor; defaults to globalThis.WebSocket (pass `ws`'s in Node 20). */
  WebSocket?: new (url: string) => any;
  /** Subscribe to these on every connection (default: the server's default set). */
  topics?: string[];
  /** Sent as `?token=` on the handshake. */
  token?: string;
  /** Reconnect after a lost connection (default true). */
  reconnect?: boolean;
  backoff?: BackoffOptions;
  /** Ms allowed from opening the socket to the server's `connection` message (default 10000). */
  connectTimeout?: number;
  /** Heartbeat interval in ms until the server advertises its own (default 10000). */
  heartbeatInterval?: number;
  /** Silent heartbeat intervals after which the link is dead (default 2). */
  deadAfter?: number;
  /** Connect in the constructor (default true). */
  autoConnect?: boolean;
}

export class UipdClient {
  constructor(url: string, options?: UipdClientOptions);
  readonly status: Status;
  readonly clientId: string | null;
  /** Every topic the server offers. */
  readonly topics: string[];
  /** The subscription set the server confirmed last, or null before any SUBSCRIBED. */
  readonly subscriptions: string[] | null;
  /** The server's heartbeat interval, ms. */
  readonly heartbeatInterval: number;

  on<E extends keyof UipdEvents>(event: E, listener: (payload: UipdEvents[E]) => void): () => void;
  once<E extends keyof UipdEvents>(event: E, listener: (payload: UipdEvents[E]) => void): () => void;
  off<E extends keyof UipdEvents>(event: E, listener: (payload: UipdEvents[E]) => void): void;

  connect(): this;
  /** A topic's entities by id (read-only; empty map when none). */
  get(topic: string): ReadonlyMap<string, Entity>;
  entities(topic: string): Entity[];
  stateTopics(): string[];
  /** The last position applied for a topic, or undefined when the server sent none. */
  position(topic: string): Position | undefined;
  subscribe(topics: string | string[]): this;
  unsubscribe(topics: string | string[]): this;
  requestSnapshot(topics?: string[]): void;
  send(message: Record<string, unknown>): boolean;
  close(code?: number, reason?: string): Promise<void>;
}

export function connect(url: string, options?: UipdClientOptions): UipdClient;

export class TopicState {
  applySnapshot(data: Record<string, Entity[]>): string[];
  applyUpdate(topic: string, data: Entity[], removed?: string[]): void;
  retain(keep: (topic: string) => boolean): string[];
  get(topic: string): ReadonlyMap<string, Entity>;
  has(topic: string): boolean;
  topics(): string[];
  clear(): void;
}

/** The client rules of recovery, without I/O (what UipdClient uses). */
export class Positions {
  constructor(options?: { alertMemory?: number });
  get(topic: string): Position | undefined;
  topics(): string[];
  since(keep?: (topic: string) => boolean): Record<string, Position>;
  sinceOf(topic: string): Record<string, Position> | null;
  retain(keep: (topic: string) => boolean): void;
  newConnection(): void;
  askFailed(topics?: string[]): void;
  snapshot(msg: SnapshotMessage): { alerts: AlertMessage[]; recovered: string[]; alertsLost: string[] };
  message(msg: UpdateMessage | AlertMessage): { apply: boolean; emit: boolean; ask: boolean };
  clear(): void;
}

/** The handshake URL with topics + since, and the subscribe to send after connect when it would be too long. */
export function recoveryUrl(
  base: string,
  topics: string[] | null,
  since: Record<string, Position>,
  maxLength?: number,
): { url: string; later: Record<string, unknown> | null };

export class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  next(): number;
  reset(): void;
}

export function shouldRetry(closed: { code?: number; reason?: string; httpStatus?: number }): boolean;
