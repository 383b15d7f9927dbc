// Subscribes with the reference `graphql-ws` client (the one Apollo Client, urql and
// Relay use), to feedItemAdded or to the document given, and prints what happens as JSON
// lines on stdout:
//   {"event":"frame","binary":false}        every WebSocket frame the server sent
//   {"event":"connected"}                   connection_ack received
//   {"event":"next","result":{...}}         one execution result
//   {"event":"error","error":...}           the subscription failed (exit code 1)
// It exits 0 after `count` results.
// Usage: node subscribe.mjs <ws-url> <token> <count> [<subscription document>]
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, countArg = "1", document] = process.argv.slice(2);
const wanted = Number(countArg);
const print = (event, fields = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);

// Reports the kind of every frame: browsers hand binary frames to JavaScript as Blobs,
// which the protocol does not allow, so the test asserts that none arrives.
class RecordingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on("message", (_data, isBinary) => print("frame", { binary: isBinary }));
  }
}

const client = createClient({
  url,
  webSocketImpl: RecordingWebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
  on: { connected: () => print("connected") },
});

const query =
  document ??
  `subscription {
  feedItemAdded { id caption author { username } media { width height placeholder } }
}`;

let received = 0;
try {
  await new Promise((resolve, reject) => {
    const unsubscribe = client.subscribe(
      { query },
      {
        next: (result) => {
          print("next", { result });
          received += 1;
          if (received >= wanted) {
            unsubscribe();
            resolve();
          }
        },
        error: reject,
        complete: resolve,
      },
    );
  });
} catch (error) {
  // A CloseEvent, a list of GraphQL errors, or an Error: print what can be printed.
  const detail =
    error instanceof Error ? error.message : (error?.code ?? JSON.stringify(error));
  print("error", { error: detail, reason: error?.reason });
  process.exitCode = 1;
} finally {
  await client.dispose();
}
