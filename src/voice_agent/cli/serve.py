"""`voice-agent serve`: the FastAPI app under uvicorn."""

from __future__ import annotations

import logging

from ..core.config import V3Config


def run_serve(config: V3Config, *, host: str | None, port: int | None, verbose: bool) -> int:
    import uvicorn

    from ..server.app import create_app

    server = config.server.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    config = config.model_copy(update={"server": server})
    logging.getLogger().setLevel(logging.DEBUG if verbose else config.log_level)
    print(f"voice-agent: open http://{server.host}:{server.port}/ (Ctrl+C to stop)", flush=True)
    uvicorn.run(create_app(config), host=server.host, port=server.port,
                log_level="debug" if verbose else "info",
                # Let oversized messages reach the app, which answers message_too_large.
                ws_max_size=max(4 * 1024 * 1024, 4 * config.server.max_message_bytes))
    return 0
