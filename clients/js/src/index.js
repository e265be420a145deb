// uipd-client: the browser/Node client of the uipd pub/sub daemon. No dependencies; the React
// hook lives in the `uipd-client/react` subpath so that this module never imports React.

export { UipdClient } from './client.js';
export { TopicState } from './state.js';
export { Positions, recoveryUrl } from './positions.js';
export { Backoff } from './backoff.js';
export { shouldRetry } from './policy.js';

import { UipdClient } from './client.js';

/** Create a client and start connecting. */
export function connect(url, options) {
  return new UipdClient(url, options);
}
