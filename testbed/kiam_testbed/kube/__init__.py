"""An emulator of the Kubernetes apiserver HTTP API, for kiam's tests and ``kiam demo``.

Faithful where kiam depends on it: core/v1 pods (with ``/status``), namespaces, service
accounts (with ``/token``) and events, events.k8s.io/v1 events, TokenReviews; list
(``limit``/``continue``, collection ``resourceVersion``), get, create, replace, patch
(merge, strategic-as-merge, JSON patch), delete; ``Status`` error bodies (404 NotFound,
409 AlreadyExists/Conflict, 422 Invalid, 400 BadRequest, 410 Expired); one global
``resourceVersion``; watches from a version with ADDED/MODIFIED/DELETED/BOOKMARK/ERROR
events, selectors applied as the watch cache does (leaving the selection is DELETED,
entering it ADDED), ``timeoutSeconds``, 410 for a compacted version; field and label
selectors; graceful pod deletion.

In process::

    from kiam_testbed.kube import KubeEmulator

    async with KubeEmulator() as kube:              # serves on 127.0.0.1, a free port
        kube.url                                    # "http://127.0.0.1:PORT"
        kube.write_kubeconfig(tmp_path / "kubeconfig")   # context/cluster/user "kiam-emulator"
        kube.create_namespace("team", annotations={"iam.amazonaws.com/permitted": ".*"})
        kube.create_pod("team", "web", ip="10.1.0.5",
                        annotations={"iam.amazonaws.com/role": "reader"})
        kube.set_pod_status("team", "web", phase="Succeeded")   # plays the kubelet
        kube.delete_pod("team", "web")              # deletionTimestamp, grace period runs
        kube.finalise_pod("team", "web")            # ... or ends now (DELETED)
        await kube.wait_for_watchers(1, "pods")     # a client's watch is open
        kube.compact()                              # old versions now get 410
        kube.send_bookmark()                        # BOOKMARK on watches that allow them
        kube.drop_watches()                         # end every watch stream now
        fault = kube.inject_fault(method="GET", path=r"^/api/v1/pods$", status=500, times=2)
        kube.inject_fault(path="/events", delay=0.5)     # slow, then served normally
        kube.request_count("GET", "/api/v1/pods", watch=False)
        kube.events("team", reason="KiamRoleForbidden")  # events of both APIs

``KubeEmulator(history_size=10_000, bookmark_interval=60.0, watch_timeout=1800.0,
namespaces=DEFAULT_NAMESPACES)``; ``await kube.start(host=..., port=...)`` and
``await kube.stop()`` when not used as a context manager (``stop`` ends open watches at
once). Hooks are plain methods, called on the emulator's event loop:

- generic: ``create(resource, obj, namespace=..., keep_status=True)``, ``get``, ``find``
  (``None`` when missing), ``list(resource, namespace=None)``, ``update(resource, obj)``
  and ``patch(resource, ns, name, merge_patch)`` (no pod-update rules: a test may change
  spec and status), ``delete(resource, ns, name, grace_period=None)``. ``resource`` is
  ``"pods"``, ``"namespaces"``, ``"events"``, ``"events.events.k8s.io"`` or a
  :class:`ResourceType` (``PODS``, ...). Errors raise :class:`KubeApiError` (``.status``
  is the ``Status`` body, ``.code``, ``.reason``).
- pods: ``create_pod(ns, name, ip=, ips=, phase=, annotations=, labels=,
  node_name="node-1", host_network=False, host_ip=, grace_period=)`` (creates the
  namespace if missing), ``set_pod_status(ns, name, phase=, pod_ip=, pod_ips=, host_ip=,
  host_network=, node_name=)``, ``delete_pod``, ``finalise_pod``.
- service accounts and tokens: ``create_service_account(ns, name="default")``,
  ``request_token(ns, pod, service_account="default", audiences=("kiam",),
  expiration=3600)`` (a token bound to the pod, as the kubelet gets for a projected
  volume); the API serves ``serviceaccounts``, their ``token`` subresource (TokenRequest)
  and ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (:mod:`kiam_testbed.kube.tokens`).
- watches, faults, counts: ``watcher_count``, ``drop_watches``, ``send_bookmark``,
  ``compact``, ``inject_fault`` (returns a :class:`Fault` with ``remaining``/``hits``),
  ``clear_faults``, ``request_count``, ``reset_counts``, ``resource_version``,
  ``stats()`` (sizes of the state), ``await wait_for(predicate, timeout=5)``,
  ``await wait_for_watchers(n, resource)``, ``await wait_for_requests(n, method, path,
  watch=None)``.

Semantics worth knowing (all as a real apiserver): a pod created through the API starts
``Pending`` with no IP whatever ``.status`` it was sent (the hooks may set it); deleting a
pod that is unscheduled (no ``spec.nodeName``) or Succeeded/Failed removes it at once,
otherwise ``deletionTimestamp`` is set and the pod stays for its grace period
(``gracePeriodSeconds``, else ``spec.terminationGracePeriodSeconds``, else 30);
a no-op update does not bump the version; PUT of a missing event creates it; a list with
``resourceVersion=0`` ignores ``limit``; a list page
after ``continue`` shows the current state (not a snapshot) under the first page's version.
Namespaces are deleted at once, without deleting what they contain. A watch consumer more
than 100,000 events behind is cut off.

As a process, with the STS stand-in: :mod:`kiam_testbed.standins`.
"""

from kiam_testbed.kube.emulator import DEFAULT_NAMESPACES, Fault, KubeEmulator
from kiam_testbed.kube.errors import KubeApiError
from kiam_testbed.kube.resources import EVENTS, EVENTS_V1, NAMESPACES, PODS, ResourceType

__all__ = [
    "DEFAULT_NAMESPACES",
    "EVENTS",
    "EVENTS_V1",
    "NAMESPACES",
    "PODS",
    "Fault",
    "KubeApiError",
    "KubeEmulator",
    "ResourceType",
]
