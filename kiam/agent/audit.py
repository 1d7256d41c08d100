"""The audit trail of credentials: which pod was handed which access key, once.

The agent logs one line when a pod (its IP, and its uid when the node replica names
it) is first served an access key, and only counts the requests that hand it the same
key again, so the log says who got which key without a line per request. Memory is
bounded: past ``max_pods`` addresses the oldest is forgotten (it is then logged again
the next time, which errs on the side of the trail).
"""

from __future__ import annotations


class KeyAudit:
    def __init__(self, *, max_pods: int = 4096) -> None:
        self._max = max_pods
        self._last: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def is_new(self, *, ip: str, pod_uid: str, access_key_id: str) -> bool:
        """True (and remembered) when this is the first time ``ip`` is served this key;
        ``pod_uid`` ("" when unknown) tells a new pod on a reused IP from the old one."""
        seen = self._last.get(ip)
        if seen is not None:
            key, uid = seen
            same_pod = not uid or not pod_uid or uid == pod_uid
            if key == access_key_id and same_pod:
                return False
            del self._last[ip]  # re-inserted last: the dict's order is the age
        elif len(self._last) >= self._max:
            del self._last[next(iter(self._last))]
        self._last[ip] = (access_key_id, pod_uid)
        return True
