// Log in and print the first page of the home feed, with typed results.
//
//   npm run example -- [API origin] [username] [password]
//
// Defaults: http://127.0.0.1:8000 (`make run`) and the demo account of `make seed`.
import { createClient, GraphQLRequestError } from "./client.js";
import { HomeFeedDocument, LogInDocument, type HomeFeedQuery } from "./gql/graphql.js";

type FeedPost = HomeFeedQuery["feed"]["edges"][number]["node"];

const [api = "http://127.0.0.1:8000", username = "demo", password = "demo-password"] =
  process.argv.slice(2);
const url = `${api.replace(/\/$/, "")}/graphql`;

function describe(post: FeedPost): string {
  const media = post.media.map((m) => `${m.kind.toLowerCase()} ${m.width ?? "?"}x${m.height ?? "?"}`);
  return (
    `${post.author.username}: ${post.caption ?? "(no caption)"} ` +
    `[${media.join(", ")}] ${post.likeCount} likes, ${post.commentCount} comments`
  );
}

async function main(): Promise<number> {
  const { logIn } = await createClient({ url }).execute(LogInDocument, { username, password });
  if (!logIn.token || !logIn.user) {
    console.error(`cannot log in as ${username}: ${logIn.errors.map((e) => e.message).join("; ")}`);
    return 1;
  }
  console.log(`logged in as ${logIn.user.username}`);
  const client = createClient({ url, token: logIn.token });
  const { feed } = await client.execute(HomeFeedDocument, { first: 10, after: null });
  for (const { node } of feed.edges) console.log(describe(node));
  console.log(
    `${feed.edges.length} posts; ` +
      (feed.pageInfo.hasNextPage ? `next page after ${feed.pageInfo.endCursor}` : "no more pages"),
  );
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  if (error instanceof GraphQLRequestError) {
    console.error(`GraphQL request failed (HTTP ${error.status}): ${error.message}`);
  } else if (error instanceof TypeError && error.message === "fetch failed") {
    // fetch's network failures: the reason is in `cause` (ECONNREFUSED...).
    const cause = (error.cause as { code?: string } | undefined)?.code ?? String(error.cause);
    console.error(`cannot reach ${url} (${cause}): is the API running (\`make run\`)?`);
  } else {
    throw error;
  }
  process.exitCode = 1;
}
