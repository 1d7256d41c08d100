"""``kiam webhook``: the mutating admission webhook that opts pods into token credentials
(docs/token-credentials.md). Imports neither the agent nor the server."""
