"""The base of every configuration section (core/config.py puts them together)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr


def blank_secret_is_none(v: SecretStr | None) -> SecretStr | None:
    """A key or token left empty (or blank) in a file or the environment means none."""
    return v if v is not None and v.get_secret_value().strip() else None


def service_url(v: str, example: str) -> str:
    """A cloud service's root URL: ws(s):// or http(s):// and a host, without a trailing /."""
    parts = urlsplit(v.strip())
    if parts.scheme.lower() not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ValueError(f"expected ws://, wss://, http:// or https:// and a host, e.g. {example}")
    return v.strip().rstrip("/")


class _Section(BaseModel):
    # Nested sections refuse unknown keys too, so a typo like ``[stt] modle`` is an error.
    model_config = ConfigDict(extra="forbid")
