"""kiam: IAM roles for Kubernetes pods through the EC2 metadata API.

Layers import only downward:

    kiam.common            durations, logging, TLS, task supervision (no kiam imports)
    kiam.wire              the agent <-> server gRPC contract, its status codes and client
                           side, and the IMDS credentials document
    kiam.aws   kiam.k8s    AWS-side (ARNs, STS, credential cache) and Kubernetes-side caches
    kiam.server kiam.agent the two daemons; neither imports the other
    kiam.cli               flags -> settings -> daemons
    kiam.testing           stand-ins for the tests and `kiam demo`; never imported by the daemons

tests/test_architecture.py enforces this.
"""

__version__ = "0.1.0"
