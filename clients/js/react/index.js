// useUipd: a thin React binding over UipdClient. The client does all the work; the hook owns one
// client per url, re-renders on its events and closes it on unmount. React is an optional peer
// dependency, imported only here, so `uipd-client` itself never loads it.

import { useEffect, useMemo, useReducer, useRef, useState } from 'react';
import { UipdClient } from '../src/index.js';

/**
 * @param {string} url
 * @param {object} [options] UipdClient options, plus `maxAlerts` (default 50)
 */
export function useUipd(url, options = {}) {
  const { maxAlerts = 50, ...clientOptions } = options;
  const [client, setClient] = useState(null);
  const [status, setStatus] = useState('idle');
  const [alerts, setAlerts] = useState([]);
  // Topics the server said alerts may have been missed for (alertsLost), until dismissed.
  const [alertsMayBeMissed, setAlertsMayBeMissed] = useState([]);
  const [version, bump] = useReducer((n) => n + 1, 0);
  // Options are read when the client is created: a new object each render must not reconnect.
  const optionsRef = useRef(clientOptions);
  optionsRef.current = clientOptions;

  useEffect(() => {
    const c = new UipdClient(url, { ...optionsRef.current, autoConnect: false });
    const offs = [
      c.on('status', (s) => setStatus(s.status)),
      c.on('change', bump),
      c.on('subscribed', bump),
      c.on('alert', (alert) => setAlerts((list) => [alert, ...list].slice(0, maxAlerts))),
      c.on('alertsLost', (topics) => setAlertsMayBeMissed((list) => [...new Set([...list, ...topics])])),
    ];
    c.connect();
    setClient(c);
    return () => {
      offs.forEach((off) => off());
      c.close();
    };
  }, [url, maxAlerts]);

  // `state` is a fresh object whenever any topic changed, so components can depend on it.
  const state = useMemo(() => {
    const out = {};
    if (client) for (const topic of client.stateTopics()) out[topic] = client.entities(topic);
    return out;
  }, [client, version]);

  return {
    client,
    status,
    state,
    alerts,
    alertsMayBeMissed,
    dismissAlertsMayBeMissed: () => setAlertsMayBeMissed([]),
    subscribe: (topics) => client?.subscribe(topics),
    unsubscribe: (topics) => client?.unsubscribe(topics),
  };
}
