// GraphQL over HTTP: the client's named documents, sent by hash first (APQ).
//
//   const data = await gql("HomeFeed", { first: 10 });
//   const post = payload(data.likePost);   // throws ApiError on payload errors
//
// Every failure becomes an ApiError with a message and a machine-readable code
// (extensions.code of a GraphQL error, or a UserError's code), so views can show it.
import { getToken, httpUrl } from "./config.js";
import { documents } from "./documents.js";

export class ApiError extends Error {
  constructor(message, { code = null, field = null, status = null, errors = [] } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.field = field;
    this.status = status;
    this.errors = errors;
  }
}

const listeners = { unauthenticated: [] };

/** Called when the API says the token is missing or expired. */
export function onUnauthenticated(fn) {
  listeners.unauthenticated.push(fn);
}

const TIMEOUT_MS = 15_000;

/** Errors worth another try later: the network, a timeout, a busy or restarting server. */
export function isTransient(error) {
  if (!(error instanceof ApiError)) return false;
  if (["NETWORK_ERROR", "TIMEOUT", "SERVICE_UNAVAILABLE", "HTTP_429"].includes(error.code)) return true;
  return error.status !== null && error.status >= 500;
}

/** The token was refused (over HTTP, or the WebSocket closed with 4401/4403). */
export function signalUnauthenticated() {
  listeners.unauthenticated.forEach((fn) => fn());
}

async function post(body) {
  const headers = {
    "Content-Type": "application/json",
    Accept: "application/graphql-response+json, application/json",
  };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  let result;
  try {
    response = await fetch(httpUrl, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const type = response.headers.get("content-type") || "";
    if (!type.includes("json")) {
      throw new ApiError(`The API answered HTTP ${response.status} ${response.statusText}`, {
        code: `HTTP_${response.status}`,
        status: response.status,
      });
    }
    result = await response.json();
  } catch (error) {
    if (error instanceof ApiError) throw error;
    if (error && (error.name === "TimeoutError" || error.name === "AbortError")) {
      throw new ApiError(`The API at ${httpUrl} did not answer within ${TIMEOUT_MS / 1000} s`, {
        code: "TIMEOUT",
      });
    }
    throw new ApiError(`Cannot reach the API at ${httpUrl} (${error.message})`, {
      code: "NETWORK_ERROR",
    });
  }
  return { status: response.status, result };
}

function hasCode(result, code, message) {
  return (result.errors || []).some(
    (e) => (e.extensions && e.extensions.code === code) || e.message === message,
  );
}

// False once the server said it does not do persisted queries: send the text only.
let persistedQueries = true;

/**
 * Run the named operation of web/graphql/ (see documents.js) and return its data.
 * Sends the hash only; if the server does not know it yet, sends the text once; if
 * the server does not do persisted queries at all, sends the text from then on.
 */
export async function gql(name, variables = {}) {
  const doc = documents[name];
  if (!doc) throw new ApiError(`Unknown operation ${name}`, { code: "CLIENT_ERROR" });
  const extensions = { persistedQuery: { version: 1, sha256Hash: doc.hash } };
  const body = { operationName: name, variables };
  let status;
  let result;
  if (persistedQueries) {
    ({ status, result } = await post({ ...body, extensions }));
    if (hasCode(result, "PERSISTED_QUERY_NOT_SUPPORTED", "PersistedQueryNotSupported")) {
      persistedQueries = false;
      ({ status, result } = await post({ ...body, query: doc.text }));
    } else if (hasCode(result, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")) {
      ({ status, result } = await post({ ...body, query: doc.text, extensions }));
    }
  } else {
    ({ status, result } = await post({ ...body, query: doc.text }));
  }
  if (result.errors && result.errors.length) {
    const first = result.errors[0];
    const code = (first.extensions && first.extensions.code) || `HTTP_${status}`;
    if (code === "UNAUTHENTICATED") signalUnauthenticated();
    throw new ApiError(first.message, { code, status, errors: result.errors });
  }
  if (!result.data) {
    throw new ApiError(`The API answered HTTP ${status} without data`, {
      code: `HTTP_${status}`,
      status,
    });
  }
  return result.data;
}

/** A mutation payload's result, or an ApiError from its first UserError. */
export function payload(p) {
  if (p && p.errors && p.errors.length) {
    const [first] = p.errors;
    if (first.code === "UNAUTHENTICATED") signalUnauthenticated();
    throw new ApiError(first.message, { code: first.code, field: first.field, errors: p.errors });
  }
  return p;
}
