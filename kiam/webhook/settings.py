"""Settings of ``kiam webhook``: one field per flag (docs/token-credentials.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiam.common.flags import (
    SettingsError,
    duration,
    existing_file,
    flag,
    nested,
    port_number,
    required_flag,
)
from kiam.common.settings import LogSettings
from kiam.webhook.mutation import DEFAULT_URI

MIN_TOKEN_EXPIRATION = 600.0
"""The API server refuses projected tokens shorter-lived than ten minutes."""


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    port: int = flag(8443, "HTTPS port the API server calls (0 picks a free port)",
                     parse=port_number)
    listen_address: str = flag("", "address to bind on; empty binds every address")
    cert: str = required_flag("PEM serving certificate (its SANs: the webhook Service's "
                              "DNS names)", check=existing_file)
    key: str = required_flag("PEM private key of --cert", check=existing_file)
    token_audience: str = flag("kiam", "audience of the projected service-account token "
                               "pods present to the agent")
    token_expiration: float = flag(3600.0, "lifetime of the projected token (at least 10m)",
                                   parse=duration)
    credentials_uri: str = flag(DEFAULT_URI, "AWS_CONTAINER_CREDENTIALS_FULL_URI given to "
                                "pods: the agent's container credentials endpoint")
    log: LogSettings = field(default_factory=LogSettings, metadata=nested())

    def __post_init__(self) -> None:
        if self.token_expiration < MIN_TOKEN_EXPIRATION:
            raise SettingsError("--token-expiration must be at least 10m (the API server's "
                                "floor for projected tokens)")
        if not self.token_audience.strip():
            raise SettingsError("--token-audience must not be empty")
        if not self.credentials_uri.startswith(("http://", "https://")):
            raise SettingsError("--credentials-uri must be an http:// or https:// URL")


__all__ = ["WebhookSettings"]
