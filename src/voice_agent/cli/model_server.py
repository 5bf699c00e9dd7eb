"""`voice-agent model-server`: the packaged LLM over the OpenAI-compatible API, for many workers.

Why: every `voice-agent serve` with the in-process provider holds its own copy of the model
(1.9 GB for Qwen 1.5B) and its own cores. A model tier loads it once and batches every worker's
replies together (llama.cpp's continuous batching over ``--parallel`` slots); the workers only
carry media, VAD, STT and TTS, and talk to it with ``ai.provider = "openai"``
(``services/llm_openai.py``). On a GPU, vLLM serves the same API (docs/model-tier.md).

How: this is llama.cpp's own HTTP server (cpp-httplib, in xllamacpp), not a proxy of ours.
``xllamacpp.Server`` binds ``CommonParams.hostnames`` / ``port`` (its defaults, 127.0.0.1 and
port 0 = a random one, are what the in-process provider relies on), so setting them is all it
takes: it serves ``/v1/chat/completions`` (streamed), ``/v1/completions``, ``/v1/models`` and
``/health`` (``{"status":"ok"}`` once the model is loaded; public even with a key), from its
own threads. This process only loads, warms, prints one line and waits for SIGINT/SIGTERM.

xllamacpp reports any bind failure as a bare ``RuntimeError("Failed to init server")``, and
only after the model has loaded: the address is tried here first, so a port in use or an
address not on this machine is named at once.

Serving Whisper and Piper from here too was decided against (docs/model-tier.md, *STT and
TTS*): on CPUs neither batches requests, so a central copy saves a worker ~0.4 GB but no
compute, and costs a hop per interim and per spoken piece.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..core.config import V3Config
from ..core.errors import ModelNotReadyError

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)

WARMUP_USER = "Hi"


class ModelServerError(Exception):
    """A start-up failure told to the user in one line (no traceback)."""


def check_bind(host: str, port: int) -> None:
    """Raise :class:`ModelServerError` if ``host:port`` cannot be listened on now.

    SO_REUSEADDR as cpp-httplib sets it, so a socket in TIME_WAIT does not count as taken.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ModelServerError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ModelServerError(
                    f"port {port} on {host} is already in use (another model server?); "
                    "choose another with --port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ModelServerError(
                    f"{host} is not an address of this machine (--host)") from None
            if exc.errno == errno.EACCES:
                raise ModelServerError(
                    f"not allowed to listen on port {port} (ports below 1024 need root)") from None
            raise ModelServerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def server_params(config: V3Config, *, path: str, host: str, port: int, slots: int,
                  threads: int) -> xllamacpp.CommonParams:
    """llama.cpp's settings, as the in-process provider sets them (services/llm_llamacpp.py,
    ``LlamaCppLLM.load``) plus the listening address and the model's name."""
    import xllamacpp

    ai = config.ai
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.model_alias = {ai.model}  # what /v1/models shows; a request's "model" is not checked
    params.hostnames = [host]
    params.port = port
    # One slot per conversation being answered; n_ctx is split evenly, each keeps context_size.
    params.n_parallel = slots
    params.n_ctx = ai.context_size * slots
    params.kv_unified = False
    params.cont_batching = True
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True  # the GGUF's own chat template
    params.cache_prompt = True
    params.cache_ram_mib = ai.prompt_cache_mib
    params.verbosity = 0
    if ai.api_key is not None:  # the workers send the same ai.api_key as their Bearer key
        params.api_keys = [ai.api_key.get_secret_value()]
    return params


def warm_slots(server: xllamacpp.Server, config: V3Config, slots: int) -> None:
    """Read the system prompt into every slot (a cold slot re-reads it on its first request;
    llama.cpp hands a request the slot whose cached prompt matches it best)."""
    messages = [{"role": "system", "content": config.ai.system_prompt},
                {"role": "user", "content": WARMUP_USER}]
    for slot in range(slots):
        request = {"messages": messages, "max_tokens": 1, "stream": True,
                   "cache_prompt": True, "id_slot": slot}
        server.handle_chat_completions(request, lambda _chunk: False)


@contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.debug("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_model_server(config: V3Config, *, host: str, port: int, model: str | None,
                     parallel: int | None, threads: int | None, warmup: bool = True) -> int:
    """Serve until SIGINT/SIGTERM (0), or fail at start with one line on stderr (1, 2)."""
    ai = config.ai.model_copy(update={"provider": "llamacpp", "model": model or config.ai.model})
    config = config.model_copy(update={"ai": ai})
    slots = ai.parallel_slots if parallel is None else parallel
    threads = ai.threads if threads is None else threads
    stop = threading.Event()
    with _stop_signals(stop):  # also during the load: Ctrl+C then exits once it is done
        try:
            server = _start(config, host=host, port=port, slots=slots, threads=threads,
                            warmup=warmup)
        except ModelNotReadyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ModelServerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        url = server.listening_address.rstrip("/")
        key = "; key: ai.api_key" if ai.api_key is not None else ""
        plural = "s" if slots != 1 else ""
        print(f"voice-agent model-server: ready at {url}/v1 (model {ai.model}, "
              f"{slots} slot{plural}, health {url}/health{key}); workers: "
              f"VOICE_AGENT_AI__PROVIDER=openai "
              f"VOICE_AGENT_AI__BASE_URL={url}/v1 VOICE_AGENT_AI__REMOTE_MODEL={ai.model}",
              flush=True)
        while not stop.wait(0.5):
            pass
        del server  # the last reference: llama.cpp stops its HTTP threads and frees the model
    print("voice-agent model-server: stopped", flush=True)
    return 0


def _start(config: V3Config, *, host: str, port: int, slots: int, threads: int,
           warmup: bool) -> xllamacpp.Server:
    from ..services.models import model_path
    from ..services.openmp import set_spin_count

    if not 1 <= port <= 65535:
        raise ModelServerError(f"--port must be 1-65535, not {port}")
    if not 1 <= slots <= 64 or not 1 <= threads <= 64:
        raise ModelServerError("--parallel and --threads must be 1-64")
    check_bind(host, port)  # before the load: a taken port is told in a second, not after it
    try:  # split weights are joined into cache_dir the first time (as voice-agent models does)
        path = model_path(config, "llm", prepare_missing=True)
    except OSError as exc:  # a read-only or full cache folder
        raise ModelServerError(f"cannot prepare {config.ai.model}: {exc}") from None

    set_spin_count(config.server.openmp_spin_count)  # before llama.cpp's libgomp loads
    import xllamacpp

    params = server_params(config, path=str(path), host=host, port=port, slots=slots,
                           threads=threads)
    t0 = time.perf_counter()
    try:
        server: Any = xllamacpp.Server(params)
    except Exception as exc:  # xllamacpp says only "Failed to init server": add what we know
        raise ModelServerError(
            f"llama.cpp could not start {config.ai.model} ({path}) on {host}:{port}: {exc} "
            "(the port may have been taken meanwhile, or the model not fit in memory)") from None
    log.info("model loaded in %.1f s", time.perf_counter() - t0)
    if warmup:
        warm_slots(server, config, slots)
    return server
