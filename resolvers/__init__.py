"""Root-field resolvers: thin entry points that check input, call domain functions
and commit the request's one transaction."""
