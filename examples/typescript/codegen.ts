// GraphQL Code Generator: typed document nodes for the web client's operations.
// `npm run codegen` (or `make codegen` at the repository root) regenerates src/gql/.
import type { CodegenConfig } from "@graphql-codegen/cli";

// CODEGEN_OUTPUT: generate elsewhere (the up-to-date check in tests/test_client_codegen.py).
const output = process.env["CODEGEN_OUTPUT"] ?? "./src/gql/";

const config: CodegenConfig = {
  // The committed SDL (`make schema` writes it): no running server needed.
  schema: "../../schema.graphql",
  // The reference web client's operations and fragments.
  documents: ["../../web/graphql/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    [output]: {
      preset: "client",
      presetConfig: {
        // Plain result types: fields of spread fragments appear in the operation's type.
        fragmentMasking: false,
        // Writes src/gql/persisted-documents.json ({"sha256:<hex>": text}) and puts each
        // document's hash in document.__meta__.hash; `make documents` adds these entries
        // to web/trusted-documents.json, the server's default manifest.
        persistedDocuments: { mode: "embedHashInDocument", hashAlgorithm: "sha256" },
      },
      config: {
        useTypeImports: true,
        enumsAsTypes: true,
        // Node's ESM resolution needs the .js extension on relative imports.
        emitLegacyCommonJSImports: false,
        scalars: {
          DateTime: "string",
          UnsignedInt64: "string",
        },
      },
    },
  },
};

export default config;
