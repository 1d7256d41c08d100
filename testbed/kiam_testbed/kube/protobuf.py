"""The few protobuf bodies kubectl sends, decoded to the JSON the emulator stores. Pure.

kubectl 1.32 and later send its typed calls as ``application/vnd.kubernetes.protobuf``
(``kubectl create namespace demo``): ``k8s\\0`` then a ``runtime.Unknown`` (type meta and
the raw object). The emulator speaks JSON, so it decodes only kinds whose every field it
knows here (Namespace, ServiceAccount: object metadata and little else); any other kind
is refused with 415, never stored with fields silently lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body this module cannot decode (or a kind it does not know)."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a string")
    return value.decode()


def _entry(value: int | bytes) -> tuple[str, str]:
    fields = dict(_fields(value if isinstance(value, bytes) else b""))
    return _text(fields.get(1, b"")), _text(fields.get(2, b""))


_META_STRINGS = {1: "name", 2: "generateName", 3: "namespace"}
_META_MAPS = {11: "labels", 12: "annotations"}


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for number, value in _fields(data):
        if number in _META_STRINGS:
            if text := _text(value):  # proto2 sends empty strings too
                meta[_META_STRINGS[number]] = text
        elif number in _META_MAPS:
            key, text = _entry(value)
            meta.setdefault(_META_MAPS[number], {})[key] = text
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
        # server-set fields (uid, resourceVersion, timestamps, managedFields) are ignored
    return meta


def _namespace(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            obj["metadata"] = _object_meta(value)
        elif number == 2 and isinstance(value, bytes):
            finalizers = [_text(v) for n, v in _fields(value) if n == 1]
            obj["spec"] = {"finalizers": finalizers} if finalizers else {}
    return obj


def _service_account(data: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            obj["metadata"] = _object_meta(value)
        elif number == 4 and isinstance(value, int):
            obj["automountServiceAccountToken"] = bool(value)
        elif number in (2, 3):
            raise ProtobufError("ServiceAccount secrets are not decoded here")
    return obj


_KINDS = {("v1", "Namespace"): _namespace, ("v1", "ServiceAccount"): _service_account}


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object of a protobuf request body; raises ProtobufError."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    envelope = dict(_fields(body[len(MAGIC):]))
    head = envelope.get(1, b"")
    type_meta = dict(_fields(head if isinstance(head, bytes) else b""))
    api_version, kind = _text(type_meta.get(1, b"")), _text(type_meta.get(2, b""))
    decoder = _KINDS.get((api_version, kind))
    raw = envelope.get(2, b"")
    if decoder is None or not isinstance(raw, bytes):
        raise ProtobufError(f"{api_version}/{kind} is not decoded from protobuf here")
    return {"apiVersion": api_version, "kind": kind, **decoder(raw)}
