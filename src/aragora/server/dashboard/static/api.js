// The authenticated API: the token lives in session storage and travels only in the
// Authorization header, never in a URL.

const TOKEN_KEY = "aragora.token";
export const API = "api/control-plane";

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

let onUnauthorized = () => {};

/** Called when the server refuses the token (401): the app signs out. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** Call the API; the parsed JSON body, `null` for 204, ApiError for an error status. */
export async function api(path, { method = "GET", body, token = session.token } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${API}${path}`, init);
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data?.title, data?.detail || data?.reason);
    if (response.status === 401 && token === session.token) onUnauthorized(error);
    throw error;
  }
  return data;
}

/** A query string from the non-empty entries of an object. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
