"""The node replica: what the servers would answer for this node's pod IPs, in memory.

A pure table fed by the ``WatchNode`` stream (:mod:`kiam.agent.node_stream` does the
I/O and calls :meth:`Replica.opened`, :meth:`Replica.apply` and :meth:`Replica.closed`);
time comes in as arguments (``now``: monotonic seconds, ``wall``: epoch seconds).
docs/architecture.md, "The node replica", is the prose of these rules:

1. A table is served only when complete: a stream's snapshot is built in a new table,
   which replaces the served one at ``snapshot_complete``; before that, and whenever
   no stream is open, every lookup falls back (``no_stream``).
2. Changes apply in the order they arrive, each replacing or removing the whole entry
   of one IP, so after a removal and a new entry for the IP the old pod's answers are
   gone for good.
3. Fresh or nothing: a lookup falls back (``stale``) once three heartbeat intervals
   pass without a message.
4. Credentials with ``session_refresh`` or less left are never served (``expiring``);
   the server the request then goes to refreshes them.
5. Only what the entry states is answered: an IP without an entry, credentials for a
   role other than the entry's, an entry with neither credentials nor a refusal fall
   back (``not_in_replica``, ``role_mismatch``, ``no_credentials``).
6. Every answer is rendered when its entry arrives (:class:`Prepared`), never per
   request; refusals through :func:`kiam.agent.client.refusal_error`, the RPC path's
   own translation, so they are the same bytes.

A fallback is not an error: the request goes through the RPC path unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kiam.agent.answers import (
    Prepared,
    credentials_answer,
    error_answer,
    no_role,
    role_answer,
)
from kiam.agent.client import refusal_error
from kiam.common.net import normalise_ip
from kiam.wire import kiam_pb2, status
from kiam.wire.credentials import document_from_message, parse_timestamp

Fallback = Literal[
    "no_stream",
    "unimplemented",
    "stale",
    "not_in_replica",
    "no_credentials",
    "role_mismatch",
    "expiring",
]
FALLBACKS: tuple[Fallback, ...] = get_args(Fallback)
"""Why a request went to the RPC path (the ``reason`` label of the fallback metric)."""

STALE_AFTER_HEARTBEATS = 3
RoleOutcome = Literal["role", "no_role", "refused"]


@dataclass(frozen=True, slots=True)
class Credentials:
    answer: Prepared
    access_key_id: str
    expires: float
    """Epoch seconds."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One IP's answers, rendered."""

    ip: str
    pod_namespace: str
    pod_name: str
    pod_uid: str
    role: str
    role_answer: Prepared
    role_outcome: RoleOutcome
    credentials: Credentials | None
    credentials_refusal: Prepared | None
    refusal_any_role: bool
    """The credentials refusal holds for every requested role: the IP is ambiguous
    (``role_refusal`` set), which the server refuses before it looks at the role."""


def _refusal(refusal: kiam_pb2.Refusal, *, what: str) -> Prepared:
    code = status.code_of(refusal.code)
    return error_answer(refusal_error(code, refusal.message, refusal.reason, what=what))


def _credentials(message: kiam_pb2.Credentials) -> Credentials | None:
    try:
        document = document_from_message(message)
        expires = parse_timestamp(message.expiration).timestamp()
    except ValueError:
        return None  # the RPC path answers what such credentials deserve
    return Credentials(credentials_answer(document), document["AccessKeyId"], expires)


def prepare(message: kiam_pb2.NodeEntry) -> Entry:
    """An entry's answers, rendered; ValueError when its IP is not an IP."""
    ip = normalise_ip(message.ip)
    outcome: RoleOutcome
    if message.HasField("role_refusal"):
        outcome = "refused"
        answer = _refusal(message.role_refusal, what="GetPodRole")
    elif not message.role:
        outcome, answer = "no_role", error_answer(no_role(ip))
    else:
        outcome, answer = "role", role_answer(message.role)
    refusal = credentials = None
    # a refusal wins over credentials sent beside it: never hand out what was refused
    if message.HasField("credentials_refusal"):
        refusal = _refusal(message.credentials_refusal, what="GetPodCredentials")
    elif message.HasField("credentials"):
        credentials = _credentials(message.credentials)
    return Entry(
        ip=ip,
        pod_namespace=message.pod_namespace,
        pod_name=message.pod_name,
        pod_uid=message.pod_uid,
        role=message.role,
        role_answer=answer,
        role_outcome=outcome,
        credentials=credentials,
        credentials_refusal=refusal,
        refusal_any_role=refusal is not None and outcome == "refused",
    )


class Replica:
    """The served table, the one being built from a snapshot, and the stream's freshness."""

    def __init__(self, *, session_refresh: float) -> None:
        self.session_refresh = session_refresh
        self._table: dict[str, Entry] = {}
        self._building: dict[str, Entry] | None = None
        self._open = False
        self._complete = False
        self._last = 0.0
        self._stale_after = 0.0
        self._down: Fallback = "no_stream"

    def __len__(self) -> int:
        return len(self._table)

    @property
    def stale_after(self) -> float:
        """Seconds without a message after which the table is not served (0: unknown)."""
        return self._stale_after

    def opened(self, *, now: float) -> None:
        """A stream is open: a new snapshot follows; nothing is served until it is complete."""
        self._open, self._complete = True, False
        self._building = {}
        self._last = now

    def closed(self, reason: Fallback = "no_stream") -> None:
        """The stream ended (``reason``: what lookups answer until the next one serves)."""
        self._open = self._complete = False
        self._building = None
        self._table = {}
        self._down = reason

    def apply(self, update: kiam_pb2.NodeUpdate, *, now: float) -> str:
        """Apply one message; returns a problem to log ("" when none)."""
        if not self._open:
            return "a node update arrived with no stream open"
        self._last = now
        table = self._table if self._building is None else self._building
        kind = update.WhichOneof("kind")
        if kind == "entry":
            try:
                entry = prepare(update.entry)
            except ValueError:
                return f"entry for {update.entry.ip!r} ignored: not an IP address"
            table[entry.ip] = entry
        elif kind == "removed_ip":
            try:
                table.pop(normalise_ip(update.removed_ip), None)
            except ValueError:
                return f"removal of {update.removed_ip!r} ignored: not an IP address"
        elif kind == "snapshot_complete":
            return self._snapshot_complete(update.snapshot_complete)
        return ""

    def _snapshot_complete(self, done: kiam_pb2.SnapshotComplete) -> str:
        self._stale_after = STALE_AFTER_HEARTBEATS * done.heartbeat_interval_ms / 1000
        if self._building is None:
            return "a second snapshot_complete on one stream ignored"
        self._table, self._building = self._building, None
        self._complete = True
        if done.entries != len(self._table):
            # harmless: an IP missing from the table is asked of a server
            return f"snapshot announced {done.entries} entries, {len(self._table)} arrived"
        return ""

    def down(self, *, now: float) -> Fallback | None:
        """Why the table is not served now; None while it is."""
        if not self._complete:
            return self._down if not self._open else "no_stream"
        if now - self._last > self._stale_after:
            return "stale"
        return None

    def serving(self, *, now: float) -> bool:
        return self.down(now=now) is None

    def role(self, ip: str, *, now: float) -> Entry | Fallback:
        """The entry that answers the role list for ``ip``, or why there is none."""
        reason = self.down(now=now)
        if reason is not None:
            return reason
        entry = self._table.get(ip)
        return "not_in_replica" if entry is None else entry

    def credentials(self, ip: str, role: str, *, now: float, wall: float) -> Entry | Fallback:
        """The entry whose credentials (or refusal) answer ``role`` for ``ip``, or why none."""
        found = self.role(ip, now=now)
        if isinstance(found, str):
            return found
        if found.refusal_any_role:
            return found
        if role != found.role:
            return "role_mismatch"
        if found.credentials_refusal is not None:
            return found
        if found.credentials is None:
            return "no_credentials"
        if found.credentials.expires - wall <= self.session_refresh:
            return "expiring"
        return found
