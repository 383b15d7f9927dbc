// Runs graphql-http's GraphQL-over-HTTP conformance audit (`auditServer`) against a
// live server and prints the results as one JSON array on stdout:
//   [{"id": "22EB", "name": "SHOULD accept ...", "status": "ok" | "notice" | "warn" | "error",
//     "reason": "...", "response": {"status": 400, "body": "..."}}, ...]
// `reason` and `response` are present for failed audits only.
// Usage: node audit.mjs <graphql-url>   (e.g. http://127.0.0.1:8000/graphql)
import { auditServer } from "graphql-http";

const [url] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: node audit.mjs <graphql-url>\n");
  process.exit(2);
}

const results = await auditServer({ url });
const printable = [];
for (const result of results) {
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") {
    entry.reason = result.reason;
    entry.response = {
      status: result.response.status,
      contentType: result.response.headers.get("content-type"),
      body: await result.response.text().catch(() => ""),
    };
  }
  printable.push(entry);
}
process.stdout.write(`${JSON.stringify(printable)}\n`);
