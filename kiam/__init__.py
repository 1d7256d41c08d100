"""kiam: IAM roles for Kubernetes pods through the EC2 metadata API.

Layers import only downward:

    kiam.common            durations, logging, TLS, task supervision (no kiam imports)
    kiam.wire              the agent <-> server gRPC contract, its status codes and client
                           side, and the IMDS credentials document
    kiam.aws   kiam.k8s    AWS-side (ARNs, STS, credential cache) and Kubernetes-side caches
    kiam.server kiam.agent the two daemons; neither imports the other
    kiam.cli               flags -> settings -> daemons

The test bed (stand-ins, process harness, `kiam demo`) is a separate distribution,
``kiam_testbed`` in testbed/: kiam never imports it (``kiam demo`` loads it by name when
installed), and neither the wheel nor the image contains it.

tests/test_architecture.py enforces this.
"""

__version__ = "0.1.0"
