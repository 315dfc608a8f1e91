// JSON calls to /api/v1 with the session cookie and the CSRF header; every API error becomes an ApiError
// whose message is the server's own. A 401 from any call sends the visitor to the login page.

let csrfToken = null;
let unauthenticated = () => {};

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

export function onUnauthenticated(handler) {
  unauthenticated = handler;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch (error) {
    throw new ApiError(0, 'network', `Cannot reach the server (${error.message}).`);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || { code: 'http_error', message: `HTTP ${response.status}` };
    if (response.status === 401 && path !== '/auth/login' && path !== '/auth/me') unauthenticated();
    throw new ApiError(response.status, error.code, error.message, response.headers.get('Retry-After'));
  }
  return data;
}

// A WebSocket URL on this server for an API path.
export function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/v1${path}`;
}
