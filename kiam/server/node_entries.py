"""One IP's entry in the node replica: what the KiamService RPCs would answer for it, now.

Pure: the claimants, the namespace expressions, the policy and the cached credentials
go in, the entry comes out (docs/architecture.md, "The node replica"). Every rule is the
RPCs' own, called rather than copied: :func:`~kiam.k8s.ownership.owner_of_ip`,
:meth:`Policy.role_name_of <kiam.server.policy.Policy.role_name_of>`,
:meth:`Policy.decide <kiam.server.policy.Policy.decide>` and the rows of
:mod:`kiam.wire.status`, sent as :func:`kiam.wire.status.carried` says.

1. Nobody owns the IP: no entry. (``GetPodRole`` would wait for the watch and answer
   NOT_FOUND; the agent asks the server, which waits.)
2. The claimants disagree (:class:`~kiam.k8s.errors.AmbiguousPodIP`): no pod, and both
   ``role_refusal`` and ``credentials_refusal`` are the AMBIGUOUS_POD row with the error's
   text, as both RPCs refuse.
3. Otherwise the owner, ``role`` = what ``GetPodRole`` answers, and for
   ``GetPodCredentials(ip, role)``:

   - the owner's namespace is not in the cache yet: neither field (the RPC would wait for
     it, up to a second; the agent asks the server, whose wait this is);
   - the policy denies it: ``credentials_refusal``, the ROLE_FORBIDDEN row with the
     reason (a pod without a role annotation included: that is what the RPC answers for
     role ``""``, which our agent never asks for);
   - allowed and credentials for its key are cached with more than ``session_refresh``
     left (the credential cache's own rule for serving them): ``credentials``;
   - allowed, nothing fresh cached: neither field; an update follows when they arrive.

4. The answer changes by itself with time in two ways: a terminating claimant's grace
   period ends (rule 4 of :mod:`kiam.k8s.ownership`), or cached credentials fall within
   ``session_refresh`` of expiry. :attr:`Evaluation.revisit_at` is the earliest such
   moment; the caller evaluates the IP again then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kiam.aws.credentials import CredentialKey, Credentials
from kiam.k8s.errors import AmbiguousPodIP
from kiam.k8s.model import PodInfo
from kiam.k8s.ownership import grace_deadline, owner_of_ip
from kiam.server.policy import Allowed, Policy
from kiam.wire import kiam_pb2, status
from kiam.wire.credentials import format_timestamp

CachedCredentials = Callable[[CredentialKey], "Credentials | None"]
"""The credentials last stored for a key, fresh or not (None: none)."""


def credentials_message(credentials: Credentials) -> kiam_pb2.Credentials:
    """``GetPodCredentials``' answer for ``credentials`` (and an entry's ``credentials``)."""
    return kiam_pb2.Credentials(
        code="Success",
        type="AWS-HMAC",
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
        token=credentials.session_token,
        expiration=format_timestamp(credentials.expiration),
        last_updated=format_timestamp(credentials.last_updated),
    )


def refusal(answer: status.Answer, reason: str) -> kiam_pb2.Refusal:
    """``answer``'s row as the RPC would refuse with it: code, message, reason beside."""
    if answer.code is None:
        raise ValueError("the catch-all row is not an answer the server gives")
    message, beside = status.carried(answer, reason)
    return kiam_pb2.Refusal(code=answer.code.value[0], message=message, reason=beside)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """One IP evaluated; ``entry`` is never changed after it is made."""

    entry: kiam_pb2.NodeEntry | None
    """None: nobody owns the IP (rule 1)."""
    owner: PodInfo | None = None
    key: CredentialKey | None = None
    """The credentials the entry carries, or will once they are cached."""
    denial: str | None = None
    """The policy's reason when it denies the owner its role (rule 3), for the Event."""
    revisit_at: float | None = None
    """Seconds since the epoch at which the answer may change by itself (rule 4)."""


def evaluate(
    ip: str,
    claimants: Sequence[PodInfo],
    *,
    permitted: Callable[[str], str | None],
    policy: Policy,
    cached: CachedCredentials,
    session_refresh: float,
    now: float,
) -> Evaluation:
    """The entry for ``ip`` claimed by ``claimants`` at ``now`` (seconds since the epoch)."""
    revisit = _grace_ends(claimants, now=now)
    try:
        owner = owner_of_ip(claimants, ip=ip, now=now)
    except AmbiguousPodIP as exc:
        ambiguous = refusal(status.AMBIGUOUS_POD, str(exc))
        entry = kiam_pb2.NodeEntry(ip=ip, role_refusal=ambiguous, credentials_refusal=ambiguous)
        return Evaluation(entry=entry, revisit_at=revisit)
    if owner is None:
        return Evaluation(entry=None, revisit_at=revisit)
    role = policy.role_name_of(owner)
    entry = kiam_pb2.NodeEntry(
        ip=ip, pod_namespace=owner.namespace, pod_name=owner.name, pod_uid=owner.uid, role=role
    )
    expression = permitted(owner.namespace)
    if expression is None:
        return Evaluation(entry=entry, owner=owner, revisit_at=revisit)
    decision = policy.decide(pod=owner, requested_role=role, permitted=expression)
    if not isinstance(decision, Allowed):
        entry.credentials_refusal.CopyFrom(refusal(status.ROLE_FORBIDDEN, decision.reason))
        return Evaluation(entry=entry, owner=owner, denial=decision.reason, revisit_at=revisit)
    credentials = cached(decision.key)
    if credentials is not None:
        stale_at = credentials.expiration.timestamp() - session_refresh
        if now < stale_at:
            entry.credentials.CopyFrom(credentials_message(credentials))
            revisit = stale_at if revisit is None else min(revisit, stale_at)
    return Evaluation(entry=entry, owner=owner, key=decision.key, revisit_at=revisit)


def _grace_ends(claimants: Sequence[PodInfo], *, now: float) -> float | None:
    """The next end of a grace period among several claimants (one alone always owns)."""
    if len(claimants) < 2:
        return None
    ends = [end for pod in claimants if (end := grace_deadline(pod)) is not None and end > now]
    return min(ends, default=None)
