"""Server-side printing: the ``meta.k8s.io/v1`` Table kubectl asks for. Pure.

``kubectl get`` sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...``; the
apiserver answers with rows of printed cells, which is how ``kubectl get events`` shows
TYPE, REASON and MESSAGE. The columns are the apiserver's (its ``printers``) for the kinds
the emulator serves, trimmed to what the emulator's objects hold. A watch sends one Table
per event, with the column definitions in the first only, as the apiserver does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

JsonObject = dict[str, Any]
Cells = Callable[[JsonObject, float], list[Any]]


def wants_table(accept: str) -> bool:
    """True when the client asks for a Table first (kubectl's ``get``)."""
    first = accept.split(",", maxsplit=1)[0].replace(" ", "")
    return "as=Table" in first and "g=meta.k8s.io" in first and "v=v1" in first


def _seconds(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def human_age(seconds: float) -> str:
    """As kubectl's ``duration.HumanDuration``: 5s, 3m2s, 15m, 2h10m, 3d."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _age(stamp: Any, now: float) -> str:
    when = _seconds(stamp)
    return "<unknown>" if when is None else human_age(now - when)


def _meta(obj: JsonObject) -> JsonObject:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _pod(obj: JsonObject, now: float) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = spec.get("containers") or []
    ready = sum(1 for c in status.get("containerStatuses") or [] if c.get("ready"))
    phase = status.get("phase") or "Pending"
    if _meta(obj).get("deletionTimestamp"):
        phase = "Terminating"
    return [_meta(obj).get("name", ""), f"{ready}/{len(containers)}", phase, 0,
            _age(_meta(obj).get("creationTimestamp"), now), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>"]


def _namespace(obj: JsonObject, now: float) -> list[Any]:
    status = obj.get("status") or {}
    return [_meta(obj).get("name", ""), status.get("phase") or "Active",
            _age(_meta(obj).get("creationTimestamp"), now)]


def _involved(ref: Any) -> str:
    ref = ref if isinstance(ref, dict) else {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event(obj: JsonObject, now: float) -> list[Any]:
    last = obj.get("lastTimestamp") or obj.get("eventTime") or _meta(obj).get(
        "creationTimestamp")
    return [_age(last, now), obj.get("type", ""), obj.get("reason", ""),
            _involved(obj.get("involvedObject")), obj.get("message", "")]


def _event_v1(obj: JsonObject, now: float) -> list[Any]:
    last = obj.get("deprecatedLastTimestamp") or obj.get("eventTime") or _meta(obj).get(
        "creationTimestamp")
    return [_age(last, now), obj.get("type", ""), obj.get("reason", ""),
            _involved(obj.get("regarding")), obj.get("note", "")]


def _default(obj: JsonObject, now: float) -> list[Any]:
    return [_meta(obj).get("name", ""), _age(_meta(obj).get("creationTimestamp"), now)]


def _column(name: str, kind: str = "string", *, priority: int = 0, fmt: str = "") -> JsonObject:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


_NAME = _column("Name", fmt="name")
_AGE = _column("Age")
_EVENT_COLUMNS = [_column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"),
                  _column("Message")]

PRINTERS: dict[str, tuple[list[JsonObject], Cells]] = {
    "Pod": ([_NAME, _column("Ready"), _column("Status"), _column("Restarts", "integer"), _AGE,
             _column("IP", priority=1), _column("Node", priority=1)], _pod),
    "Namespace": ([_NAME, _column("Status"), _AGE], _namespace),
    "Event": (_EVENT_COLUMNS, _event),
    "events.k8s.io/Event": (_EVENT_COLUMNS, _event_v1),
}


def _printer(kind: str, group: str) -> tuple[list[JsonObject], Cells]:
    return PRINTERS.get(f"{group}/{kind}" if group else kind) or ([_NAME, _AGE], _default)


def _row(obj: JsonObject, cells: Cells, now: float, include: str) -> JsonObject:
    row: JsonObject = {"cells": cells(obj, now)}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": _meta(obj)}
    return row


def table(kind: str, group: str, objects: list[JsonObject], *, now: float,
          resource_version: str = "", include: str = "Metadata",
          headers: bool = True) -> JsonObject:
    """The Table of ``objects`` (of ``kind`` in API ``group``); ``include`` is the request's
    ``includeObject`` (None, Metadata, Object)."""
    columns, cells = _printer(kind, group)
    result: JsonObject = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                          "metadata": {"resourceVersion": resource_version} if
                          resource_version else {}}
    if headers:
        result["columnDefinitions"] = columns
    result["rows"] = [_row(obj, cells, now, include) for obj in objects]
    return result


class WatchTables:
    """Turns a watch stream's lines into Table events (headers in the first one only)."""

    def __init__(self, kind: str, group: str, *, now: Callable[[], float],
                 include: str = "Metadata") -> None:
        self._kind, self._group, self._now, self._include = kind, group, now, include
        self._headers = True

    def convert(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            event = orjson.loads(line)
            if event.get("type") not in ("BOOKMARK", "ERROR"):
                obj = event.get("object") or {}
                event["object"] = table(
                    self._kind, self._group, [obj], now=self._now(),
                    resource_version=str(_meta(obj).get("resourceVersion", "")),
                    include=self._include, headers=self._headers)
                self._headers = False
            out.append(orjson.dumps(event) + b"\n")
        return b"".join(out)
