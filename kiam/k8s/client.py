"""The one place kiam talks to the Kubernetes API.

:class:`KubeClient` uses ``kubernetes_asyncio`` for configuration (kubeconfig or
in-cluster service account, TLS, bearer tokens) and its HTTP session, but never its model
deserialisation: bodies stay bytes and are decoded with orjson, which is what makes
listing and watching 50,000 pods affordable. Every foreign error is translated into
:mod:`kiam.k8s.errors` here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson
import yaml  # type: ignore[import-untyped]  # kubernetes_asyncio's kubeconfig parser
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import OpenApiException
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

from kiam.k8s.errors import KubeConflict, KubeError, KubeGone, KubeNotFound, KubeUnavailable

log = logging.getLogger(__name__)

Params = Mapping[str, str | int | bool]

_AUTH = ["BearerToken"]
_CONNECT_TIMEOUT = 10.0
_REQUEST_TIMEOUT = 60.0
# a list of 50,000 pods takes a while to stream: bound the silence, not the total
_LIST_TIMEOUT = aiohttp.ClientTimeout(connect=_CONNECT_TIMEOUT, sock_read=_REQUEST_TIMEOUT)


def _query(params: Params | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return out


def _status_message(body: bytes) -> str:
    """The ``message`` of a metav1.Status body, else a short excerpt of the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return body[:200].decode("utf-8", "replace").strip()


def error_for_status(status: int, message: str) -> KubeError:
    """The exception for an HTTP status (or a watch ERROR event's ``code``)."""
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 410:
        return KubeGone(text, status=status)
    if status == 404:
        return KubeNotFound(text, status=status)
    if status == 409:
        return KubeConflict(text, status=status)
    if status == 429 or status >= 500:
        return KubeUnavailable(text, status=status)
    return KubeError(text, status=status)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's excerpt of the offending line: a
    kubeconfig holds tokens and keys, and this message ends up in the log."""
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "syntax error"
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"not valid YAML: {problem}"
    return f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"


def _translate(exc: BaseException, what: str) -> KubeError:
    if isinstance(exc, TimeoutError):  # also aiohttp's ServerTimeoutError
        return KubeUnavailable(f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")


class KubeClient:
    """Raw JSON access to the API server. Create with :meth:`create`; :meth:`close` after."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    @classmethod
    async def create(cls, kubeconfig: str) -> KubeClient:
        """From a kubeconfig file, or the in-cluster service account when ``kubeconfig`` is
        empty. Raises KubeError when the configuration cannot be loaded (missing or
        unreadable file, not YAML, incomplete, or no service account)."""
        config = Configuration()
        try:
            if kubeconfig:
                await load_kube_config(
                    config_file=kubeconfig, client_configuration=config, persist_config=False
                )
            else:
                load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except yaml.YAMLError as exc:
            raise KubeError(
                f"cannot load Kubernetes configuration from {kubeconfig}: {_yaml_problem(exc)}"
            ) from None
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            source = kubeconfig or "in-cluster service account"
            raise KubeError(f"cannot load Kubernetes configuration from {source}: {exc}") from exc
        api = ApiClient(configuration=config)
        api.user_agent = "kiam"
        return cls(api)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        content_type: str = "application/json",
        http_timeout: aiohttp.ClientTimeout | float = _REQUEST_TIMEOUT,
    ) -> aiohttp.ClientResponse:
        """Send a request; answer the open response when 2xx, else raise (released)."""
        what = f"{method} {path}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=_query(params),
                header_params=headers,
                body=body,
                auth_settings=_AUTH,
                _preload_content=False,
                _request_timeout=http_timeout,
            )
            if 200 <= response.status < 300:
                return response
            try:
                data = await response.read()
            finally:
                response.release()
        except (
            TimeoutError,
            OSError,
            aiohttp.ClientError,
            OpenApiException,
            ConfigException,
        ) as exc:
            raise _translate(exc, what) from exc
        raise error_for_status(response.status, f"{what}: {_status_message(data)}")

    async def _read(self, response: aiohttp.ClientResponse, what: str) -> bytes:
        try:
            return await response.read()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise _translate(exc, what) from exc
        finally:
            response.release()

    async def list_raw(self, path: str, params: Params | None = None) -> bytes:
        """GET a collection; the undecoded body (the caller decodes what it needs)."""
        response = await self._send("GET", path, params=params, http_timeout=_LIST_TIMEOUT)
        return await self._read(response, f"GET {path}")

    async def get_json(self, path: str, params: Params | None = None) -> Any:
        response = await self._send("GET", path, params=params)
        return _decode(await self._read(response, f"GET {path}"), f"GET {path}")

    async def post_json(self, path: str, body: Any) -> Any:
        response = await self._send("POST", path, body=body)
        return _decode(await self._read(response, f"POST {path}"), f"POST {path}")

    async def patch_json(
        self, path: str, body: Any, *, content_type: str = "application/merge-patch+json"
    ) -> Any:
        """PATCH (a JSON merge patch unless ``content_type`` says otherwise)."""
        response = await self._send("PATCH", path, body=body, content_type=content_type)
        return _decode(await self._read(response, f"PATCH {path}"), f"PATCH {path}")

    async def watch(
        self, path: str, params: Params | None = None, *, inactivity_timeout: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Watch a collection: yield each event (``{"type": ..., "object": {...}}``) decoded.

        Ends when the server ends the stream. Raises KubeUnavailable when nothing arrives
        for ``inactivity_timeout`` seconds (a half-dead connection) or the stream breaks.
        Close it with ``contextlib.aclosing`` when stopping early.
        """
        what = f"watch {path}"
        timeout = aiohttp.ClientTimeout(connect=_CONNECT_TIMEOUT, sock_read=inactivity_timeout)
        response = await self._send(
            "GET", path, params={**(params or {}), "watch": True}, http_timeout=timeout
        )
        finished = False
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                    raise _translate(exc, what) from exc
                except ValueError as exc:  # a line beyond aiohttp's buffer limit
                    raise KubeError(f"{what}: {exc}") from exc
                if not line:
                    finished = True
                    return
                line = line.strip()
                if line:
                    event = _decode(line, what)
                    if not isinstance(event, dict):
                        raise KubeError(f"{what}: event is not an object")
                    yield event
        finally:
            # an unfinished stream must not go back to the pool
            if finished:
                response.release()
            else:
                response.close()


def _decode(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise KubeError(f"{what}: invalid JSON: {exc}") from exc


__all__ = ["KubeClient", "Params", "error_for_status"]
