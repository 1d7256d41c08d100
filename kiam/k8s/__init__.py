"""The Kubernetes side of the server: the API client, list+watch caches of pods (by IP)
and namespaces, the IP ownership rule, and Warning Events on pods.

Contracts: docs/architecture.md, "kiam.k8s".
"""
