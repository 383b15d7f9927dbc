// A tiny typed GraphQL client over fetch, for the documents GraphQL Code Generator
// generated in ./gql (typed document nodes carrying their persisted-document hash).
//
// Each request names its document by hash first (the APQ extension), so the text is not
// sent: a server with the trusted-documents manifest (web/trusted-documents.json, which
// includes ./gql/persisted-documents.json) runs it at once. If the server does not know
// the hash (PERSISTED_QUERY_NOT_FOUND: another manifest, or APQ only), the client sends
// the very text that was hashed, with the hash, once; the server registers it. If the
// server does not do persisted queries at all (PERSISTED_QUERY_NOT_SUPPORTED: no
// manifest and APQ switched off), the client sends the text, and from then on sends
// only text to that server.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { Kind, print, type DocumentNode, type GraphQLFormattedError } from "graphql";
import persistedDocuments from "./gql/persisted-documents.json" with { type: "json" };

/** Persisted documents as GraphQL Code Generator writes them: {"sha256:<hex>": text}. */
export type PersistedDocuments = Readonly<Record<string, string>>;

export interface ClientOptions {
  /** The GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql. */
  url: string;
  /** A token from logIn or signUp, sent as `Authorization: Bearer <token>`. */
  token?: string | null;
  /** The texts behind the hashes; defaults to the generated persisted-documents.json. */
  documents?: PersistedDocuments;
  fetch?: typeof fetch;
}

/** The server answered with errors (or without data); `errors` as the server sent them. */
export class GraphQLRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errors: readonly GraphQLFormattedError[],
  ) {
    super(errors.map((error) => error.message).join("; ") || `HTTP ${status}`);
    this.name = "GraphQLRequestError";
  }

  get codes(): unknown[] {
    return this.errors.map((error) => error.extensions?.["code"]);
  }
}

/** Operations without variables may leave them out. */
type VariablesArgument<TVariables> =
  TVariables extends Record<string, never> ? [variables?: TVariables] : [variables: TVariables];

interface Body {
  query?: string;
  operationName?: string;
  variables?: unknown;
  extensions?: { persistedQuery: { version: 1; sha256Hash: string } };
}

interface Response<TResult> {
  data?: TResult | null;
  errors?: GraphQLFormattedError[];
}

const ACCEPT = "application/graphql-response+json, application/json";

function hashOf(document: DocumentNode): string | undefined {
  const meta = (document as { __meta__?: { hash?: unknown } }).__meta__;
  return typeof meta?.hash === "string" ? meta.hash : undefined;
}

function operationName(document: DocumentNode): string | undefined {
  for (const definition of document.definitions) {
    if (definition.kind === Kind.OPERATION_DEFINITION) return definition.name?.value;
  }
  return undefined;
}

function hasError(
  errors: readonly GraphQLFormattedError[] | undefined,
  code: string,
  message: string,
): boolean {
  return (errors ?? []).some(
    (error) => error.extensions?.["code"] === code || error.message === message,
  );
}

const notFound = (errors: readonly GraphQLFormattedError[] | undefined) =>
  hasError(errors, "PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound");
const notSupported = (errors: readonly GraphQLFormattedError[] | undefined) =>
  hasError(errors, "PERSISTED_QUERY_NOT_SUPPORTED", "PersistedQueryNotSupported");

export function createClient(options: ClientOptions) {
  const documents = options.documents ?? (persistedDocuments as PersistedDocuments);
  const fetchImpl = options.fetch ?? fetch;
  // False once the server said it does not do persisted queries: text only from then on.
  let persisted = true;

  async function send<TResult>(body: Body): Promise<[number, Response<TResult>]> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: ACCEPT };
    if (options.token) headers["authorization"] = `Bearer ${options.token}`;
    const response = await fetchImpl(options.url, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
    const type = response.headers.get("content-type") ?? "";
    if (!type.includes("json")) {
      const text = await response.text();
      throw new GraphQLRequestError(response.status, [
        { message: `HTTP ${response.status}: ${text.slice(0, 200)}` },
      ]);
    }
    return [response.status, (await response.json()) as Response<TResult>];
  }

  /** Run an operation; resolves to its typed data, rejects with GraphQLRequestError. */
  async function execute<TResult, TVariables>(
    document: TypedDocumentNode<TResult, TVariables>,
    ...[variables]: VariablesArgument<TVariables>
  ): Promise<TResult> {
    const key = hashOf(document);
    const text = key === undefined ? undefined : documents[key];
    const base: Body = { operationName: operationName(document), variables: variables ?? {} };
    let status: number;
    let result: Response<TResult>;
    if (key !== undefined && text !== undefined && persisted) {
      // The server's APQ extension takes the bare hex digest.
      const persistedQuery = { version: 1, sha256Hash: key.replace(/^sha256:/, "") } as const;
      [status, result] = await send<TResult>({ ...base, extensions: { persistedQuery } });
      if (notFound(result.errors)) {
        [status, result] = await send<TResult>({ ...base, query: text, extensions: { persistedQuery } });
      } else if (notSupported(result.errors)) {
        persisted = false;
        [status, result] = await send<TResult>({ ...base, query: text });
      }
    } else {
      // Not generated with persisted documents (no hash to match), or a server without
      // persisted queries: send the text (the one that was hashed, when there is one).
      [status, result] = await send<TResult>({ ...base, query: text ?? print(document) });
    }
    if (result.errors?.length || result.data == null) {
      throw new GraphQLRequestError(status, result.errors ?? []);
    }
    return result.data;
  }

  return { execute };
}
