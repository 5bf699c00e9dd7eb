"""`voice-agent serve`: the FastAPI app under uvicorn, with a graceful shutdown."""

from __future__ import annotations

import logging

from ..core.config import V3Config


def run_serve(config: V3Config, *, host: str | None, port: int | None, verbose: bool) -> int:
    from ..server.runner import serve

    server = config.server.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    config = config.model_copy(update={"server": server})
    logging.getLogger().setLevel(logging.DEBUG if verbose else config.log_level)
    print(f"voice-agent: open http://{server.host}:{server.port}/ (Ctrl+C to stop)", flush=True)
    return serve(config, log_level="debug" if verbose else "info")
