"""Logging set-up: text by default, one JSON object per line with ``--json-log``.

Structured fields travel in ``extra={"fields": {...}}`` so both formats show them:

    log.info("issued credentials", extra={"fields": {"pod.namespace": ns, "access.key.id": key}})

Never put a secret access key or a session token in fields or messages.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

LEVELS = ("debug", "info", "warn", "error")
_LEVEL_MAP = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, logger, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower().replace("warning", "warn"),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        level = record.levelname.lower().replace("warning", "warn")
        line = f"{stamp}Z {level:5} {record.name}: {record.getMessage()}"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if extra:
            line = f"{line} {extra}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure(*, json_log: bool, level: str) -> None:
    """Route the root logger to stderr in the chosen format; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_log else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVEL_MAP[level])
    for noisy in ("aiohttp.access", "botocore", "aiobotocore", "kubernetes_asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, _LEVEL_MAP[level]))
