"""Field and label selectors with the apiserver's grammar and semantics (pure).

Field selectors: ``field=value``, ``field==value``, ``field!=value`` joined by commas (all
must hold); only the fields a resource supports, else 400 ``field label not supported``.
Label selectors: ``k=v``, ``k==v``, ``k!=v`` (true when the label is absent), ``k in (a,b)``,
``k notin (a,b)`` (true when absent), ``k`` (exists), ``!k`` (absent), ``k>1``, ``k<1``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kiam_testbed.kube.errors import KubeApiError, bad_request

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_SET_RE = re.compile(r"^(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_CMP_RE = re.compile(r"^(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s!=<>(),]*)$")


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, get_field: Callable[[str], str]) -> bool:
        return all((get_field(r.field) == r.value) != r.negate for r in self.requirements)

    def exact(self, field: str) -> str | None:
        """The value ``field`` must equal, if the selector pins it (used as an index)."""
        for r in self.requirements:
            if r.field == field and not r.negate:
                return r.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str, *, supported: frozenset[str]) -> FieldSelector:
    """Parse ``text``; 400 for bad syntax or a field the resource does not index."""
    requirements: list[FieldRequirement] = []
    for raw in _split_unescaped(text, ","):
        part = raw.strip()
        if not part:
            continue
        match = re.match(r"^((?:[^=!\\]|\\.)+?)\s*(==|!=|=)\s*(.*)$", part)
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.group(1).strip(), match.group(2), match.group(3)
        if field not in supported:
            raise bad_request(f"field label not supported: {field}")
        requirements.append(
            FieldRequirement(field=field, value=_unescape(value.strip()), negate=op == "!=")
        )
    return FieldSelector(tuple(requirements))


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            have, want = int(value), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == ">" else have < want


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _top_level_parts(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_error(part: str, why: str) -> KubeApiError:
    return bad_request(f"unable to parse requirement: {why} in {part!r}")


def _check_key(key: str, part: str) -> str:
    if not _KEY_RE.match(key):
        raise _parse_error(part, f"invalid label key {key!r}")
    return key


def _check_value(value: str, part: str) -> str:
    if not _VALUE_RE.match(value):
        raise _parse_error(part, f"invalid label value {value!r}")
    return value


def _parse_label_requirement(part: str) -> LabelRequirement:
    if part.startswith("!"):
        return LabelRequirement(key=_check_key(part[1:].strip(), part), op="!")
    match = _SET_RE.match(part)
    if match:
        values = tuple(
            _check_value(v.strip(), part) for v in match.group("values").split(",") if v.strip()
        )
        if not values:
            raise _parse_error(part, "for 'in', 'notin' operators, values set can't be empty")
        return LabelRequirement(key=_check_key(match.group("key"), part), op=match.group("op"),
                                values=values)
    match = _CMP_RE.match(part)
    if match:
        op = "=" if match.group("op") == "==" else match.group("op")
        value = match.group("value")
        if op in (">", "<") and not re.fullmatch(r"-?\d+", value):
            raise _parse_error(part, "for 'Gt', 'Lt' operators, the value must be an integer")
        return LabelRequirement(key=_check_key(match.group("key"), part), op=op,
                                values=(_check_value(value, part),))
    return LabelRequirement(key=_check_key(part, part), op="exists")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse ``text``; 400 for anything the apiserver would refuse to parse."""
    requirements: list[LabelRequirement] = []
    for raw in _top_level_parts(text):
        part = raw.strip()
        if not part:
            if text.strip():
                raise _parse_error(text, "empty requirement")
            continue
        requirements.append(_parse_label_requirement(part))
    return LabelSelector(tuple(requirements))
