"""``python -m kiam_testbed.kubelet NAMESPACE/POD IP``: play the kubelet on the emulator.

There is no kubelet behind the Kubernetes emulator, so a pod made with ``kubectl run`` or
``kubectl create`` stays Pending without an IP. This sets what a kubelet would: phase
Running and the pod's IP (``status.podIP``/``podIPs``, through the ``status``
subresource, as a kubelet writes it). The emulator's address comes from the kubeconfig
it wrote (``--kubeconfig``, default ``$KUBECONFIG``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def _server(kubeconfig: str) -> str:
    with open(kubeconfig) as file:
        config = json.load(file)  # the emulator writes its kubeconfig as JSON
    return str(config["clusters"][0]["cluster"]["server"]).rstrip("/")


def set_pod_ip(kubeconfig: str, namespace: str, name: str, ip: str) -> None:
    body = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    url = f"{_server(kubeconfig)}/api/v1/namespaces/{namespace}/pods/{name}/status"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiam_testbed.kubelet",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("pod", metavar="NAMESPACE/POD")
    parser.add_argument("ip")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    args = parser.parse_args(argv)
    namespace, _, name = args.pod.partition("/")
    if not (namespace and name and args.kubeconfig):
        parser.error("give NAMESPACE/POD, an IP and --kubeconfig (or $KUBECONFIG)")
    try:
        set_pod_ip(args.kubeconfig, namespace, name, args.ip)
    except (OSError, ValueError, KeyError) as exc:
        detail = exc.read().decode() if isinstance(exc, urllib.error.HTTPError) else exc
        print(f"kubelet: {args.pod}: {detail}", file=sys.stderr)
        return 1
    print(f"pod {args.pod}: Running, IP {args.ip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
