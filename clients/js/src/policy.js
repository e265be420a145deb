// Whether a lost connection is worth retrying. Retrying a refusal (bad token, forbidden origin,
// wrong path) only hammers the daemon and can never succeed, so those end the client; everything
// else (restart 1001, network loss 1006, slow consumer 4008, server error 1011, ...) is retried.

const AUTH_REASON = /auth|token|credential|forbidden|unauthori[sz]ed/i;

/**
 * @param {{code?: number, reason?: string, httpStatus?: number}} closed
 * @returns {boolean}
 */
export function shouldRetry({ code, reason = '', httpStatus } = {}) {
  if (httpStatus != null) {
    // The handshake was answered with an HTTP error: 401/403 (auth), 404 (path) and the like are
    // final; a timeout, rate limit or server error is not.
    return httpStatus === 408 || httpStatus === 429 || httpStatus >= 500;
  }
  if (code === 4001 || code === 4003) return false;
  if (code === 1008 && AUTH_REASON.test(reason)) return false;
  return true;
}

/** The HTTP status of a refused handshake, when the WebSocket implementation reveals it (Node's `ws` does; browsers never do). */
export function handshakeStatus(errorEvent) {
  const text = String(errorEvent?.message ?? errorEvent?.error?.message ?? '');
  const match = /Unexpected server response: (\d{3})/.exec(text);
  return match ? Number(match[1]) : undefined;
}
