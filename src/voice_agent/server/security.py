"""Keeping secrets out of logs, and other web pages out of the WebSockets.

- uvicorn logs every request and WebSocket with its query string, so a ``?token=`` would land
  in the log: :class:`RedactSecrets` masks it (and the configured secret values themselves).
  The server reads the parameter's name decoded (Starlette does), so ``?%74oken=`` is a token
  too: every name that decodes to ``token``, in any case, is masked, and so are the secrets'
  percent-encoded forms.
- Browsers let any page open a WebSocket to 127.0.0.1 (CORS does not apply to WebSockets):
  :func:`origin_allowed` refuses browser pages from other sites unless they are allowed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

QUERY_PARAM = re.compile(r"([?&])([^=&\s\"'#]+)=([^&\s\"'#]*)")
"""A ``name=value`` pair of a query string inside a log line."""
MASK = "***"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error")
"""Loggers that print request paths with their query strings."""


class RedactSecrets(logging.Filter):
    """Masks ``token=`` query values and the given secret strings in log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        forms = {form for s in secrets if s for form in (s, quote(s, safe=""), quote_plus(s))}
        self._secrets = sorted(forms, key=len, reverse=True)  # longest first: no half-masks

    def redact(self, text: str) -> str:
        text = QUERY_PARAM.sub(_mask_token, text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Args are redacted one by one, not merged into msg: uvicorn's access formatter
        # unpacks them.
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self.redact(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
        return True


@contextmanager
def redacted_logs(secrets: Iterable[str]) -> Iterator[RedactSecrets]:
    """Install the filter on uvicorn's loggers for the server's lifetime."""
    flt = RedactSecrets(secrets)
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for logger in loggers:
        logger.addFilter(flt)
    try:
        yield flt
    finally:
        for logger in loggers:
            logger.removeFilter(flt)


def _mask_token(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).strip().lower() != "token":
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}={MASK}"


def _hostname(value: str) -> str:
    try:
        return (urlsplit(value if "//" in value else f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """May a WebSocket with this ``Origin`` header connect?

    Yes without an Origin (not a browser), for an origin in ``server.cors_origins`` (or with
    ``*`` there), for a page of this host (any port), and for pages served from loopback
    (e.g. the Vite dev server). No for every other web site.
    """
    if not origin:
        return True
    allowed = list(allowed)
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    name = _hostname(origin)
    if not name or origin == "null":
        return False
    return name == _hostname(host or "") or name in LOOPBACK_HOSTS
