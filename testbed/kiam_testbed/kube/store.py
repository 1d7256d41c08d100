"""The object store: etcd plus the apiserver's registry rules, in memory (no sockets).

- One global ``resourceVersion`` counter, bumped by every write, as etcd's revision.
- Objects in dicts keyed by ``(namespace, name)``; lists are served in key order, as etcd.
- A bounded history of changes for watches; a watch from a version older than the
  history gets 410. ``compact()`` drops the history (and expires continue tokens).
- Pods: ``status`` only through the subresource, graceful deletion with a timer
  (unscheduled or finished pods go at once, as the apiserver decides).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import datetime
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from kiam_testbed.kube import errors
from kiam_testbed.kube.errors import JsonObject, KubeApiError
from kiam_testbed.kube.resources import (
    ALL_TYPES,
    NAMESPACES,
    PODS,
    ResourceType,
    apply_create_defaults,
    validate,
)
from kiam_testbed.kube.selectors import FieldSelector, LabelSelector
from kiam_testbed.kube.watch import ADDED, DELETED, MODIFIED, Change, Entry, Watcher

log = logging.getLogger(__name__)

Key = tuple[str, str]
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue value "
    "from the response."
)
# Fields the server owns: a client's values are ignored on create and kept on update.
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")


def rfc3339(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _continue_token(rv: int, key: Key, rt: ResourceType) -> str:
    start = f"{key[0]}/{key[1]}" if rt.namespaced else key[1]
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"})
    return base64.b64encode(raw).decode()


def _parse_continue(token: str, rt: ResourceType) -> tuple[int, Key]:
    try:
        data = orjson.loads(base64.b64decode(token, validate=True))
        rv, start = int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from None
    if rt.namespaced:
        namespace, _, name = start.partition("/")
        return rv, (namespace, name)
    return rv, ("", start)


class ListResult:
    __slots__ = ("continue_token", "entries", "remaining", "rv")

    def __init__(
        self, entries: list[Entry], rv: int, continue_token: str, remaining: int | None
    ) -> None:
        self.entries = entries
        self.rv = rv
        self.continue_token = continue_token
        self.remaining = remaining


class Store:
    def __init__(
        self,
        *,
        history_size: int = 10_000,
        watch_max_pending: int = 100_000,
        clock: Callable[[], float] = lambda: datetime.datetime.now(datetime.UTC).timestamp(),
    ) -> None:
        self.rv = 0
        self._clock = clock
        self._objects: dict[str, dict[Key, Entry]] = {rt.key: {} for rt in ALL_TYPES}
        self._sorted: dict[str, list[Key] | None] = {rt.key: None for rt in ALL_TYPES}
        self._history: deque[Change] = deque()
        self._history_size = history_size
        self.watch_floor = 0
        """A watch from a version below this is answered with 410."""
        self.compacted_rv = 0
        """A continue token from before this version is answered with 410."""
        self._watchers: dict[str, set[Watcher]] = {rt.key: set() for rt in ALL_TYPES}
        self._watch_max_pending = watch_max_pending
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self.listeners: list[Callable[[], None]] = []

    # ---- reading -----------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Entry:
        entry = self._objects[rt.key].get((namespace if rt.namespaced else "", name))
        if entry is None:
            raise errors.not_found(plural=rt.plural, group=rt.group, name=name)
        return entry

    def find(self, rt: ResourceType, namespace: str, name: str) -> Entry | None:
        return self._objects[rt.key].get((namespace if rt.namespaced else "", name))

    def count(self, rt: ResourceType) -> int:
        return len(self._objects[rt.key])

    def _sorted_keys(self, rt: ResourceType) -> list[Key]:
        keys = self._sorted[rt.key]
        if keys is None:
            keys = sorted(self._objects[rt.key])
            self._sorted[rt.key] = keys
        return keys

    def _keys_from(
        self, rt: ResourceType, namespace: str | None, after: Key | None
    ) -> Iterator[Key]:
        keys = self._sorted_keys(rt)
        start = (namespace, "") if namespace is not None else ("", "")
        index = bisect.bisect_left(keys, start)
        if after is not None:
            index = max(index, bisect.bisect_right(keys, after))
        for key in keys[index:]:
            if namespace is not None and key[0] != namespace:
                return
            yield key

    def list_entries(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        fields: FieldSelector | None = None,
        labels: LabelSelector | None = None,
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        """Current state in key order; ``limit``/``continue`` page through it."""
        rv, after = self.rv, None
        if continue_token:
            rv, after = _parse_continue(continue_token, rt)
            if rv < self.compacted_rv:
                raise errors.expired(_CONTINUE_EXPIRED)
        probe = Watcher(rt=rt, namespace=namespace if rt.namespaced else None,
                        fields=fields or FieldSelector(), labels=labels or LabelSelector(),
                        bookmarks=False, max_pending=0)
        filtered = bool(probe.fields.requirements or probe.labels.requirements)
        objects = self._objects[rt.key]
        found: list[Entry] = []
        keys = self._keys_from(rt, namespace if rt.namespaced else None, after)
        for key in keys:
            entry = objects[key]
            if filtered and not probe.matches(entry.obj):
                continue
            found.append(entry)
            if limit and len(found) >= limit:
                break
        token, remaining = "", None
        if limit and len(found) >= limit:
            last = (found[-1].namespace, found[-1].name)
            rest = sum(1 for _ in keys)
            if rest:
                token = _continue_token(rv, last, rt)
                # The apiserver only counts what is left when it need not filter.
                remaining = None if filtered else rest
        return ListResult(found, rv, token, remaining)

    # ---- writing -----------------------------------------------------------------

    def _record(self, change: Change) -> None:
        if len(self._history) >= self._history_size:
            self.watch_floor = self._history.popleft().rv
        self._history.append(change)
        for watcher in tuple(self._watchers[change.entry.rt.key]):
            watcher.offer(change)
        for listener in tuple(self.listeners):
            listener()

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _put(self, rt: ResourceType, obj: JsonObject, *, change: str, prev: Entry | None) -> Entry:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        entry = Entry(rt, obj)
        key = (entry.namespace if rt.namespaced else "", entry.name)
        if change == DELETED:
            self._objects[rt.key].pop(key, None)
            self._sorted[rt.key] = None
        else:
            if key not in self._objects[rt.key]:
                self._sorted[rt.key] = None
            self._objects[rt.key][key] = entry
        self._record(Change(rv, change, entry, prev.obj if prev else None))
        return entry

    def _prepare(self, rt: ResourceType, body: JsonObject, namespace: str) -> JsonObject:
        kind = body.get("kind")
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        obj = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        meta = obj.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        meta = dict(meta)
        obj["metadata"] = meta
        for field in ("name", "generateName", "namespace", "resourceVersion"):
            if field in meta and not isinstance(meta[field], str):
                raise errors.bad_request(f"metadata.{field} must be a string")
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is not None and not (
                isinstance(value, dict)
                and all(isinstance(v, str) for v in value.values())
            ):
                raise errors.bad_request(f"metadata.{field} must map strings to strings")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def create(
        self, rt: ResourceType, namespace: str, body: JsonObject, *, keep_status: bool = False
    ) -> Entry:
        """POST. ``keep_status`` (hooks only) keeps a pod's ``.status`` as given."""
        obj = self._prepare(rt, body, namespace)
        meta = obj["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(kind=rt.kind, group=rt.group, name="", causes=[
                    ("FieldValueRequired", "metadata.name",
                     "Required value: name or generateName is required")])
            suffix = "".join(random.choices(_SUFFIX_ALPHABET, k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if rt.namespaced and self.find(NAMESPACES, "", namespace) is None:
            raise errors.not_found(plural="namespaces", group="", name=namespace)
        if self.find(rt, namespace, meta["name"]) is not None:
            raise errors.already_exists(plural=rt.plural, group=rt.group, name=meta["name"])
        status = obj.get("status")
        validate(rt, obj, None)
        apply_create_defaults(rt, obj)
        if keep_status and status is not None:
            obj["status"] = status
        for field in _SYSTEM_META:
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self._clock())
        return self._put(rt, obj, change=ADDED, prev=None)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: JsonObject,
        *,
        subresource: str = "",
        unchecked: bool = False,
    ) -> Entry:
        """PUT (also the end of every PATCH). ``unchecked`` (hooks only) skips the
        status/spec rules so a test can play the kubelet or the scheduler."""
        obj = self._prepare(rt, body, namespace)
        meta = obj["metadata"]
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on "
                f"the URL ({name})"
            )
        meta["name"] = name
        current = self.find(rt, namespace, name)
        if current is None:
            if rt.allow_create_on_update and not subresource:
                return self.create(rt, namespace, obj)
            raise errors.not_found(plural=rt.plural, group=rt.group, name=name)
        old = current.obj
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(plural=rt.plural, group=rt.group, name=name,
                                  why=errors.STALE_WHY)
        if subresource == "status":
            # The status subresource changes the status and nothing else.
            obj = {**old, "metadata": {**old["metadata"]}, "status": obj.get("status", {})}
        elif "status" in old and not unchecked:
            obj["status"] = old["status"]  # and the main resource never changes it
        meta = obj["metadata"]
        for field in _SYSTEM_META:
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if obj == old:
            return current  # a no-op write changes nothing, not even the version
        if not unchecked:
            validate(rt, obj, old)
        return self._put(rt, obj, change=MODIFIED, prev=current)

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        preconditions: JsonObject | None = None,
    ) -> tuple[Entry, bool]:
        """DELETE; answers the entry and whether it is gone (False: a pod terminating)."""
        current = self.get(rt, namespace, name)
        meta = current.obj["metadata"]
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (preconditions or {}).get(field)
            if wanted and str(wanted) != meta.get(field):
                raise errors.conflict(
                    plural=rt.plural, group=rt.group, name=name,
                    why=f"Precondition failed: {label} in precondition: {wanted}, "
                    f"{label} in object meta: {meta.get(field)}",
                )
        if rt is not PODS:
            return self._remove(current), True
        grace = self._pod_grace(current.obj, grace_period)
        if grace == 0:
            return self._remove(current), True
        deadline = self._clock() + grace
        existing = meta.get("deletionTimestamp")
        if existing and meta.get("deletionGracePeriodSeconds", grace) <= grace:
            return current, False  # already terminating at least this soon
        obj = {**current.obj, "metadata": {**meta, "deletionTimestamp": rfc3339(deadline),
                                           "deletionGracePeriodSeconds": grace}}
        entry = self._put(rt, obj, change=MODIFIED, prev=current)
        self._schedule_finalise(entry, grace)
        return entry, False

    @staticmethod
    def _pod_grace(pod: JsonObject, requested: int | None) -> int:
        spec = pod.get("spec") or {}
        grace = requested
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds")
        if grace is None:
            grace = 30
        grace = max(int(grace), 0)
        phase = (pod.get("status") or {}).get("phase")
        # The apiserver deletes at once what no kubelet runs: unscheduled or finished pods.
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        return grace

    def _schedule_finalise(self, entry: Entry, grace: int) -> None:
        key = (entry.namespace, entry.name)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (pure tests): finalise_pod() is the only way out
        uid = entry.obj["metadata"]["uid"]
        self._timers[key] = loop.call_later(grace, self._finalise_timer, key, uid)

    def _finalise_timer(self, key: Key, uid: str) -> None:
        self._timers.pop(key, None)
        entry = self._objects[PODS.key].get(key)
        if entry is not None and entry.obj["metadata"]["uid"] == uid:
            self._remove(entry)

    def hold_pod(self, namespace: str, name: str) -> None:
        """Keep a terminating pod past its grace period (a finalizer, a kubelet that never
        confirms): no timer removes it; :meth:`finalise_pod` still does."""
        timer = self._timers.pop((namespace, name), None)
        if timer is not None:
            timer.cancel()

    def finalise_pod(self, namespace: str, name: str) -> Entry:
        """End a terminating pod's grace period now (what the kubelet does when done)."""
        entry = self.get(PODS, namespace, name)
        if not entry.obj["metadata"].get("deletionTimestamp"):
            raise errors.bad_request(f'pod "{name}" is not terminating')
        return self._remove(entry)

    def _remove(self, current: Entry) -> Entry:
        if current.rt is PODS:
            timer = self._timers.pop((current.namespace, current.name), None)
            if timer is not None:
                timer.cancel()
        obj = {**current.obj, "metadata": {**current.obj["metadata"]}}
        return self._put(current.rt, obj, change=DELETED, prev=current)

    # ---- watching ----------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        *,
        namespace: str | None,
        resource_version: str,
        fields: FieldSelector,
        labels: LabelSelector,
        bookmarks: bool,
    ) -> Watcher:
        """Open a watcher; the caller must :meth:`unwatch` it when the stream ends."""
        watcher = Watcher(rt=rt, namespace=namespace if rt.namespaced else None, fields=fields,
                          labels=labels, bookmarks=bookmarks,
                          max_pending=self._watch_max_pending)
        if resource_version in ("", "0"):
            listed = self.list_entries(
                rt, namespace=watcher.namespace, fields=fields, labels=labels
            )
            watcher.add_initial(listed.entries)
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(
                    f"invalid resource version: {resource_version!r}") from None
            if since < self.watch_floor:
                raise errors.expired(
                    f"too old resource version: {since} ({self.watch_floor})")
            replay = []
            for change in reversed(self._history):
                if change.rv <= since:
                    break
                replay.append(change)
            for change in reversed(replay):
                if change.entry.rt.key == rt.key:  # history holds every resource type
                    watcher.offer(change)
        self._watchers[rt.key].add(watcher)
        for listener in tuple(self.listeners):
            listener()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers[watcher.rt.key].discard(watcher)
        for listener in tuple(self.listeners):
            listener()

    def watchers(self, rt: ResourceType | None = None) -> list[Watcher]:
        if rt is not None:
            return list(self._watchers[rt.key])
        return [w for group in self._watchers.values() for w in group]

    def stats(self) -> dict[str, int]:
        """Sizes of everything that could grow: tests check they stay bounded."""
        return {
            "objects": sum(len(objects) for objects in self._objects.values()),
            "history": len(self._history),
            "watchers": len(self.watchers()),
            "timers": len(self._timers),
            "listeners": len(self.listeners),
        }

    def compact(self) -> int:
        """Forget all history: older versions now get 410 from watches and continues."""
        self._history.clear()
        self.watch_floor = self.rv
        self.compacted_rv = self.rv
        return self.rv

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for watcher in self.watchers():
            watcher.close()


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (and a check that it is JSON-shaped)."""
    return orjson.loads(orjson.dumps(value))


__all__ = ["Entry", "KubeApiError", "ListResult", "Store", "copy_json", "rfc3339"]
