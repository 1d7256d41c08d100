"""HTTP answers as bytes, made once: the one rendering of the RPC path and the replica.

A :class:`Prepared` is an answer's status, body and ``Content-Type``; the node replica
(:mod:`kiam.agent.replica`) makes one when an entry arrives and turns it into a
response per request without rendering anything again, and the RPC path makes the
same one from what a server answered, so both paths send the same bytes for the same
answer (tests/agent/test_replica_agent.py compares them on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from kiam.agent.errors import AgentError, MethodNotAllowed, NoRole, Throttled
from kiam.wire.credentials import CredentialsDocument, render_document

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A response's status, body and ``Content-Type`` header, rendered."""

    status: int
    body: bytes
    content_type: str

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": self.content_type}
        )


def error_answer(exc: AgentError) -> Prepared:
    """The one-line reason as text, with the status of the exception's class."""
    return Prepared(exc.status, (exc.message + "\n").encode(), TEXT)


def error_response(exc: AgentError) -> web.Response:
    """:func:`error_answer` as a response, with the header a 405 or a 429 needs."""
    answer = error_answer(exc)
    headers = {"Content-Type": answer.content_type}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allow)
    elif isinstance(exc, Throttled):
        headers["Retry-After"] = str(exc.retry_after)
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def no_role(ip: str) -> NoRole:
    return NoRole(f"the pod with IP {ip} has no iam.amazonaws.com/role annotation")


def role_answer(role: str) -> Prepared:
    """The role list: the one role's name."""
    return Prepared(200, role.encode(), TEXT)


def credentials_answer(document: CredentialsDocument) -> Prepared:
    return Prepared(200, render_document(document), JSON)
