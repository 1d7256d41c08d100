"""``kiam webhook``: AdmissionReview v1 over HTTPS, for the pods the API server sends.

``POST /mutate`` takes an AdmissionReview and answers one with the same ``uid``, always
``allowed: true`` (the webhook never stands in the way of a pod: its
MutatingWebhookConfiguration says ``failurePolicy: Ignore`` too), and a JSONPatch when
:func:`kiam.webhook.mutation.mutate` has operations. Every pod left alone for a reason
other than "not asked for" is logged in one line, so an operator can tell why a pod got
no token. ``GET /healthz`` answers the kubelet's probes. docs/token-credentials.md.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from typing import Any

import orjson
from aiohttp import web

from kiam.common import logs
from kiam.common.net import join_host_port
from kiam.common.supervisor import TASKS, Supervisor
from kiam.webhook.mutation import ROLE_ANNOTATION, Declined, TokenSettings, mutate
from kiam.webhook.settings import WebhookSettings

log = logging.getLogger("kiam.webhook")

MAX_REVIEW_BYTES = 3 * 1024 * 1024
"""The API server caps an object at 1.5 MiB; an AdmissionReview carries it (and may carry
the old one) - anything larger is not from the API server."""
SHUTDOWN_ORDER = ("stop https", TASKS)


class StartupError(Exception):
    """The webhook cannot start; the message is the one line the operator sees."""


def review(body: Any, settings: TokenSettings) -> dict[str, Any]:
    """The AdmissionReview answering ``body`` (decoded JSON). Raises ValueError when the
    body is not an AdmissionReview at all (no request uid to answer)."""
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise ValueError("not an AdmissionReview: no request")
    request = body["request"]
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ValueError("not an AdmissionReview: no request.uid")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    pod = request.get("object")
    where = f"{request.get('namespace', '')}/{_pod_name(pod, request)}"
    result = mutate(pod if isinstance(pod, dict) else {}, settings)
    if isinstance(result, Declined):
        if _has_role(pod):
            fields = {"pod": where, "reason": result.reason}
            log.info("token credentials declined: %s", result.reason, extra={"fields": fields})
    elif result.operations:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(result.operations)).decode()
        log.info("token credentials added", extra={"fields": {"pod": where}})
    return {
        "apiVersion": body.get("apiVersion") or "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }


def _has_role(pod: Any) -> bool:
    if not isinstance(pod, dict):
        return False
    annotations = (pod.get("metadata") or {}).get("annotations") if isinstance(
        pod.get("metadata"), dict) else None
    return isinstance(annotations, dict) and bool(annotations.get(ROLE_ANNOTATION))


def _pod_name(pod: Any, request: dict[str, Any]) -> str:
    # a pod made from a template (generateName) has no name yet at admission
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if isinstance(metadata, dict):
        name = metadata.get("name") or metadata.get("generateName")
        if isinstance(name, str) and name:
            return name
    return str(request.get("name") or "(unnamed)")


def build_app(settings: TokenSettings) -> web.Application:
    async def mutate_handler(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="send application/json\n")
        try:
            answer = review(orjson.loads(await request.read()), settings)
        except web.HTTPRequestEntityTooLarge:
            raise
        except (orjson.JSONDecodeError, ValueError) as exc:
            log.warning("refused a malformed AdmissionReview: %s", exc)
            return web.Response(status=400, text=f"{exc}\n")
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post("/mutate", mutate_handler)
    app.router.add_get("/healthz", healthz)
    return app


def _ssl_context(settings: WebhookSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"--cert/--key: {exc}") from None
    return context


def token_settings(settings: WebhookSettings) -> TokenSettings:
    return TokenSettings(
        audience=settings.token_audience,
        expiration_seconds=int(settings.token_expiration),
        credentials_uri=settings.credentials_uri,
    )


async def serve(settings: WebhookSettings) -> int:
    async with Supervisor("kiam webhook", shutdown_order=SHUTDOWN_ORDER) as daemon:
        runner = web.AppRunner(build_app(token_settings(settings)), access_log=None)
        await runner.setup()
        daemon.on_stop("stop https", runner.cleanup)
        host = settings.listen_address or None
        site = web.TCPSite(runner, host=host, port=settings.port,
                           ssl_context=_ssl_context(settings))
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on port {settings.port}: {exc}") from None
        shown = ", ".join(
            join_host_port(str(a[0]), int(a[1])) for a in runner.addresses if isinstance(a, tuple)
        )
        log.info("listening on %s", shown)
        return await daemon.run()
    raise AssertionError("unreachable")  # pragma: no cover


def run_webhook(settings: WebhookSettings) -> int:
    """Entry point of ``kiam webhook`` (from :mod:`kiam.cli`); returns the exit code."""
    logs.configure(json_log=settings.log.json_log, level=settings.log.level)
    try:
        return asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("kiam webhook cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
