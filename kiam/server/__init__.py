"""``kiam server``: answers agents over gRPC (mutual TLS) with pods' roles and credentials.

- :mod:`kiam.server.policy` (pure): may this pod have the role it asks for; its STS key
- :mod:`kiam.server.prefetch` (no I/O): keys to prefetch, keys still in use, the namespace wait
- :mod:`kiam.server.service`: ``kiam.KiamService`` and its gRPC status codes
- :mod:`kiam.server.node_entries` (pure): one IP's node replica entry, by the RPCs' rules
- :mod:`kiam.server.node_feed` (no I/O): per watched node, its entries kept current
- :mod:`kiam.server.node_service`: ``kiam.KiamNodeService.WatchNode``, the replica stream
- :mod:`kiam.server.metrics`: gRPC server counters (Go grpc-prometheus names), node streams
- :mod:`kiam.server.settings`: ``ServerSettings``, one field per flag
- :mod:`kiam.server.main`: ``run_server``: start-up, the supervised tasks, shutdown

Contracts: docs/architecture.md (parts, wire, status codes) and docs/policy.md (who gets
which role).
"""
