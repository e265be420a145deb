import type { AlertMessage, Entity, Status, UipdClient, UipdClientOptions } from '../index.js';

export interface UseUipdOptions extends UipdClientOptions {
  /** How many recent alerts to keep, newest first (default 50). */
  maxAlerts?: number;
}

export interface UseUipdResult {
  /** The underlying client (null during the first render). */
  client: UipdClient | null;
  status: Status;
  /** Every topic's entities; a new object whenever any topic changed. */
  state: Record<string, Entity[]>;
  /** Recent alerts, newest first. */
  alerts: AlertMessage[];
  /** Topics for which alerts may have been missed (the server could not replay them after a
   * reconnect: `alertsLost`), until dismissed; empty when nothing was lost. */
  alertsMayBeMissed: string[];
  /** Clear alertsMayBeMissed (the user has seen the warning). */
  dismissAlertsMayBeMissed(): void;
  subscribe(topics: string | string[]): void;
  unsubscribe(topics: string | string[]): void;
}

/** Connect to a uipd daemon for the lifetime of the component (one client per url). */
export function useUipd(url: string, options?: UseUipdOptions): UseUipdResult;
